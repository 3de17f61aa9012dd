package wsconn

import (
	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/outbound"
)

// Close frames the server sends on its own initiative, compiled once.
var (
	goodbyeShutdown = frame.Close(ws.StatusGoingAway, "server shutting down")
	goodbyeIdle     = frame.Close(ws.StatusGoingAway, "idle timeout")
	goodbyeSlow     = frame.Close(ws.StatusPolicyViolation, "slow consumer")
	goodbyeTimeout  = frame.Close(ws.StatusPolicyViolation, "message timeout")
	goodbyeExpired  = frame.Close(ws.StatusPolicyViolation, "token expired")
	goodbyeEarly    = frame.Close(ws.StatusProtocolError, "data sent before the handshake completed")
	goodbyeBusy     = frame.Close(ws.StatusPolicyViolation, "server busy: too many partial messages")
	goodbyeReplay   = frame.Close(CloseReplayMore, "more to replay: reconnect with since= to resume")
)

// Closes a connection raises itself while reading (the parser raises the
// protocol ones), each with its frame and the reason it is counted as.
var (
	errReceiveOnly = &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: "clients may not publish"}
	errRateLimit   = &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: "message rate limit exceeded"}

	ownCloses = map[*frame.CloseError]struct {
		frame  []byte
		reason outbound.CloseReason
	}{
		errReceiveOnly: {frame.Close(errReceiveOnly.Code, errReceiveOnly.Reason), outbound.ReasonPolicy},
		errRateLimit:   {frame.Close(errRateLimit.Code, errRateLimit.Reason), outbound.ReasonRateLimit},
	}
)

// closeFor returns the close frame and the counted reason for a close the
// server starts because of ce.
func closeFor(ce *frame.CloseError) ([]byte, outbound.CloseReason) {
	if own, ok := ownCloses[ce]; ok {
		return own.frame, own.reason
	}
	return frame.Close(ce.Code, ce.Reason), reasonFor(ce.Code)
}

// reasonFor maps a close code the server sends to the reason it counts.
func reasonFor(code ws.StatusCode) outbound.CloseReason {
	switch code {
	case ws.StatusInvalidFramePayloadData:
		return outbound.ReasonInvalidData
	case ws.StatusMessageTooBig:
		return outbound.ReasonTooBig
	case ws.StatusPolicyViolation:
		return outbound.ReasonPolicy
	}
	return outbound.ReasonProtocolError
}
