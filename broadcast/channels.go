package broadcast

import (
	"slices"
	"strings"
)

// ChannelInfo is one channel as GET /channels shows it.
type ChannelInfo struct {
	Name        string `json:"name"`        // "" is the default channel
	Subscribers int    `json:"subscribers"` // connections on it now, on this node
	Seq         uint64 `json:"seq"`         // the latest seq in its history; 0 if none is kept
}

// Channels lists the channels that have subscribers or history, by name.
func (s *Server) Channels() []ChannelInfo {
	subs := s.hub.Channels()
	var tops map[string]uint64
	if s.hist != nil {
		tops = s.hist.Tops()
	}
	out := make([]ChannelInfo, 0, max(len(subs), len(tops)))
	for name, n := range subs {
		out = append(out, ChannelInfo{Name: name, Subscribers: n, Seq: tops[name]})
	}
	for name, top := range tops {
		if _, ok := subs[name]; !ok {
			out = append(out, ChannelInfo{Name: name, Seq: top})
		}
	}
	slices.SortFunc(out, func(a, b ChannelInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Epoch names the server's run of seqs: a client's cursor is EPOCH:SEQ.
func (s *Server) Epoch() string { return s.hub.Epoch() }
