package broadcast

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unique"

	"github.com/fanout/fanout/broadcast/hub"
	"github.com/fanout/fanout/broadcast/wsconn"
)

// What a connection asks for in its URL:
//
//	/ws?channel=a[&channel=b...][&format=raw|json][&since=EPOCH:SEQ][&token=JWT]
//
// subscription gathers it; resolve checks it once admission has said
// which channels the token grants.
type subscription struct {
	channels []string
	format   string // "", "raw" or "json"
	resume   bool
	since    hub.Cursor
}

// parseSubscription reads the channel, format and since parameters of a
// query. The error is for the client (a 400's body).
func parseSubscription(q url.Values, maxChannels int) (subscription, error) {
	var sub subscription
	if names := q["channel"]; len(names) > 0 {
		sub.channels = make([]string, 0, min(len(names), maxChannels+1)) // kept for the connection's life: no spare room
	}
	for _, name := range q["channel"] {
		if err := hub.ValidChannel(name); err != nil {
			return sub, fmt.Errorf("channel %.140q: %s", name, why(err))
		}
		if !slices.Contains(sub.channels, name) {
			// The canonical copy (package unique): connections on one
			// channel share its bytes, and a name no longer keeps the
			// whole query string (the token with it) alive.
			sub.channels = append(sub.channels, unique.Make(name).Value())
		}
		if len(sub.channels) > maxChannels {
			return sub, fmt.Errorf("more than %d channels (-max-channels-per-conn)", maxChannels)
		}
	}
	switch f := q.Get("format"); f {
	case "", "raw", "json":
		sub.format = f
	default:
		return sub, fmt.Errorf("format %.40q: want raw or json", f)
	}
	if v, ok := q["since"]; ok {
		c, err := ParseCursor(v[0])
		if err != nil {
			return sub, fmt.Errorf("since: %w", err)
		}
		sub.resume, sub.since = true, c
	}
	return sub, nil
}

// ParseCursor reads a client's cursor, EPOCH:SEQ (what a welcome's epoch
// and a message's seq make; SSE's Last-Event-ID has the same form).
func ParseCursor(s string) (hub.Cursor, error) {
	epoch, seq, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || epoch == "" || len(epoch) > 64 || err != nil {
		return hub.Cursor{}, fmt.Errorf("%.80q: want EPOCH:SEQ (the welcome's epoch and the last seq received)", s)
	}
	return hub.Cursor{Epoch: epoch, Seq: n}, nil
}

// resolve decides the connection's format once its channels are known
// (the token may have given them): raw by default with at most one
// channel, json by default and required with more, and with since (a raw
// frame could not say whether it was replayed: format=raw with since is
// refused).
func (sub *subscription) resolve(channels []string, maxChannels int) (wsconn.Format, error) {
	if !slices.Equal(channels, sub.channels) { // the token's: check them as the URL's were
		channels = hub.Distinct(channels) // a claim may repeat one: a channel is joined once
		if len(channels) > maxChannels {
			return 0, fmt.Errorf("the token grants %d channels, more than %d (-max-channels-per-conn): name some", len(channels), maxChannels)
		}
		for _, name := range channels {
			if err := hub.ValidChannel(name); err != nil {
				return 0, fmt.Errorf("token channel %.140q: %s", name, why(err))
			}
		}
	}
	sub.channels = channels
	switch {
	case sub.format == "json", sub.format == "" && (len(channels) > 1 || sub.resume):
		return wsconn.FormatJSON, nil
	case len(channels) > 1:
		return 0, errors.New("format=raw takes one channel: use format=json for several")
	case sub.resume:
		return 0, errors.New("since needs format=json")
	}
	return wsconn.FormatRaw, nil
}

// why is what is wrong with a channel name, without the package prefix.
func why(err error) string {
	if ce, ok := errors.AsType[*hub.ChannelNameError](err); ok {
		return ce.Why
	}
	return err.Error()
}

// hubSubscription is what the connection asks of the hub.
func (sub *subscription) hubSubscription() hub.Subscription {
	return hub.Subscription{Channels: sub.channels, Resume: sub.resume, Since: sub.since}
}
