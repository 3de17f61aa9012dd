package broadcast

import (
	"github.com/fanout/fanout/broadcast/admit"
	"github.com/fanout/fanout/broadcast/outbound"
)

// CloseReason says why a connection ended. Every connection ends with
// exactly one, and the server counts them (Stats.Closes).
type CloseReason = outbound.CloseReason

// Close reasons (see package outbound).
const (
	ReasonNone           = outbound.ReasonNone
	ReasonClientClose    = outbound.ReasonClientClose
	ReasonClientGone     = outbound.ReasonClientGone
	ReasonProtocolError  = outbound.ReasonProtocolError
	ReasonInvalidData    = outbound.ReasonInvalidData
	ReasonTooBig         = outbound.ReasonTooBig
	ReasonPolicy         = outbound.ReasonPolicy
	ReasonSlowConsumer   = outbound.ReasonSlowConsumer
	ReasonIdleTimeout    = outbound.ReasonIdleTimeout
	ReasonShutdown       = outbound.ReasonShutdown
	ReasonReadError      = outbound.ReasonReadError
	ReasonWriteError     = outbound.ReasonWriteError
	ReasonRateLimit      = outbound.ReasonRateLimit
	ReasonTokenExpired   = outbound.ReasonTokenExpired
	ReasonInternalError  = outbound.ReasonInternalError
	ReasonMessageTimeout = outbound.ReasonMessageTimeout
	ReasonPartialLimit   = outbound.ReasonPartialLimit
	ReasonReplayPart     = outbound.ReasonReplayPart
	numReasons           = outbound.NumReasons
)

// Reasons lists every close reason, for exporters.
func Reasons() []CloseReason { return outbound.Reasons() }

// SlowPolicy says what happens to a connection whose outbound queue would
// grow past Config.QueueBytes.
type SlowPolicy = outbound.SlowPolicy

// Slow policies (see package outbound).
const (
	SlowClose = outbound.SlowClose // close with 1008 "slow consumer" (the default)
	SlowDrop  = outbound.SlowDrop  // drop the frames that do not fit; counted
)

// ParseSlowPolicy parses "close" or "drop".
func ParseSlowPolicy(s string) (SlowPolicy, error) { return outbound.ParseSlowPolicy(s) }

// Grant is what a valid client token allows (admit.Grant): until when,
// and which channels.
type Grant = admit.Grant

// JWTAuthenticator returns a Config.Authenticate for HS256 JSON Web
// Tokens signed with secret, exp required, with the audience and issuer
// checks opts add (admit.JWTAudience, admit.JWTIssuer); see
// admit.JWTAuthenticator.
func JWTAuthenticator(secret []byte, opts ...admit.JWTOption) func(token string) (Grant, error) {
	return admit.JWTAuthenticator(secret, opts...)
}
