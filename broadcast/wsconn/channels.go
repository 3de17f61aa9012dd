package wsconn

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/gobwas/ws"

	"github.com/fanout/fanout/broadcast/frame"
	"github.com/fanout/fanout/broadcast/hub"
)

// Format is how a connection receives messages.
type Format uint8

const (
	// FormatRaw: every message is one frame holding the payload as
	// published, text or binary (the seed's behaviour). One channel at
	// most.
	FormatRaw Format = iota
	// FormatJSON: every frame is a text frame holding one JSON object: a
	// welcome first, then one per message (hub.EncodingJSON).
	FormatJSON
	// FormatPusher: the Pusher protocol (Options.Protocol speaks it):
	// JSON text frames both ways, every message as a Pusher event
	// (hub.EncodingPusher). Never compressed.
	FormatPusher
)

// Protocol is a protocol spoken over a connection's text messages, beside
// fanout's own (FormatPusher). Its methods run on the connection's read
// worker (Message) or with its lock held (Welcome, Closed): they must not
// block, and Closed must not take the lock of this or any other
// connection.
type Protocol interface {
	// Welcome is the connection's first message, sent right after its
	// 101, as one frame.
	Welcome(c *Conn) []byte
	// Message handles a complete message from the client. A
	// *frame.CloseError closes the connection with its code.
	Message(c *Conn, op ws.OpCode, payload []byte) error
	// Closed: the connection ended. Its lock is held.
	Closed(c *Conn)
}

// CloseSlowJSON is the close code of a json-format client the server
// would otherwise have to drop a message for: it is closed instead, and
// resumes with since= from the last seq it saw.
const CloseSlowJSON ws.StatusCode = 4000

var goodbyeSlowJSON = frame.Close(CloseSlowJSON, "slow consumer: reconnect with since= to resume")

// CloseReplayMore is the close code of a json-format client whose resume
// replay was over what one connection may queue: it got the first part,
// and resumes with since= from its last seq for the next.
const CloseReplayMore ws.StatusCode = 4001

// subscription is what a connection that names channels, or asks for the
// json format, keeps: a connection on the default channel in raw format
// (the seed's client) has none.
type subscription struct {
	format Format
	resume bool // it asked to resume: its welcome says whether it did
	// Which channels it is on, the hub's table says (hub.Hub.On): a
	// connection keeps no list of its own, 16 bytes and more a channel.
}

// pusherSub is every FormatPusher connection's subscription: shared,
// never written (its channels are the hub's, its state Conn.pstate).
var pusherSub = &subscription{format: FormatPusher}

// welcome is the first frame of a json-format connection
// (hub.AppendWelcome).
func welcome(epoch string, channels []string, j hub.Joined, resume bool) []byte {
	return frame.Compile(ws.OpText, hub.AppendWelcome(make([]byte, 0, 96+len(epoch)+len(channels)*16), epoch, channels, j, resume))
}

// clientMessage is what a json-format client sends to publish.
type clientMessage struct {
	Channel    string          `json:"channel"`
	Data       json.RawMessage `json:"data"`
	DataBase64 *string         `json:"data_base64"`
}

// parseClientMessage reads a json-format client's message: to one of its
// channels, data (any JSON value) or data_base64. The error is the close
// reason the client gets (1008).
func (s *subscription) parseClientMessage(on func(channel string) bool, op ws.OpCode, payload []byte) (channel string, kind hub.Kind, data []byte, err error) {
	var m clientMessage
	switch {
	case op != ws.OpText:
		return "", 0, nil, errJSONFormat
	case json.Unmarshal(payload, &m) != nil:
		return "", 0, nil, errJSONFormat
	case !on(m.Channel):
		return "", 0, nil, &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: fmt.Sprintf("not subscribed to channel %.80q", m.Channel)}
	case m.DataBase64 != nil && m.Data != nil:
		return "", 0, nil, errJSONBoth
	case m.DataBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*m.DataBase64)
		if err != nil {
			return "", 0, nil, errJSONBase64
		}
		return m.Channel, hub.KindBinary, b, nil
	case m.Data == nil:
		return "", 0, nil, errJSONFormat
	}
	kind, data, err = hub.FromJSON(m.Data)
	if err != nil { // cannot happen: Unmarshal checked it
		return "", 0, nil, errJSONFormat
	}
	return m.Channel, kind, data, nil
}

var (
	errJSONFormat = &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: `json format: send {"channel":"NAME","data":VALUE} as a text frame`}
	errJSONBoth   = &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: "json format: data and data_base64 both given"}
	errJSONBase64 = &frame.CloseError{Code: ws.StatusPolicyViolation, Reason: "json format: data_base64 is not valid base64"}
)
