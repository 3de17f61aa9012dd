package outbound

// CloseReason says why a connection ended. Every connection ends with
// exactly one, and its server counts them.
type CloseReason uint8

// Close reasons.
const (
	ReasonNone           CloseReason = iota
	ReasonClientClose                // the client sent a close frame
	ReasonClientGone                 // EOF or reset without a close frame
	ReasonProtocolError              // malformed frame: closed with 1002
	ReasonInvalidData                // invalid UTF-8: closed with 1007
	ReasonTooBig                     // message over MaxMessage: closed with 1009
	ReasonPolicy                     // data from a receive-only client: closed with 1008
	ReasonSlowConsumer               // outbound queue over QueueBytes: closed with 1008
	ReasonIdleTimeout                // nothing read for IdleTimeout: closed with 1001
	ReasonShutdown                   // server shutting down: closed with 1001
	ReasonReadError                  // read failed (not EOF)
	ReasonWriteError                 // write failed (not because the peer left)
	ReasonRateLimit                  // over the client message rate: closed with 1008
	ReasonTokenExpired               // the token it connected with expired: closed with 1008
	ReasonInternalError              // a handler panicked: torn down, logged with its stack
	ReasonMessageTimeout             // a frame or message left incomplete too long: closed with 1008
	ReasonPartialLimit               // partial reads server-wide over their cap: closed with 1008
	ReasonReplayPart                 // a resume's replay came in parts: closed after this one, to resume again
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonNone:           "none",
	ReasonClientClose:    "client_close",
	ReasonClientGone:     "client_gone",
	ReasonProtocolError:  "protocol_error",
	ReasonInvalidData:    "invalid_data",
	ReasonTooBig:         "too_big",
	ReasonPolicy:         "policy",
	ReasonSlowConsumer:   "slow_consumer",
	ReasonIdleTimeout:    "idle_timeout",
	ReasonShutdown:       "shutdown",
	ReasonReadError:      "read_error",
	ReasonWriteError:     "write_error",
	ReasonRateLimit:      "rate_limit",
	ReasonTokenExpired:   "token_expired",
	ReasonInternalError:  "internal_error",
	ReasonMessageTimeout: "message_timeout",
	ReasonPartialLimit:   "partial_limit",
	ReasonReplayPart:     "replay_part",
}

func (r CloseReason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every close reason but ReasonNone, for exporters.
func Reasons() []CloseReason {
	out := make([]CloseReason, 0, NumReasons-1)
	for r := ReasonNone + 1; r < NumReasons; r++ {
		out = append(out, r)
	}
	return out
}
