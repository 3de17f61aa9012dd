// Package pusher is fanout's Pusher-compatible front door: the Pusher
// Channels protocol 7 that pusher-js, Laravel Echo and the other Pusher
// clients speak over WebSocket at /app/{key}, the HTTP API the Pusher
// server SDKs call (/apps/{id}/events...), and webhooks.
//
// A Pusher channel is a fanout channel (with the app's prefix, if it has
// one): a message published through either front door reaches the
// subscribers of both, each in its own protocol's encoding, each encoding
// built once per message (hub.EncodingPusher).
package pusher

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/fanout/fanout/broadcast/hub"
)

// App is one Pusher application: its credentials and where its channels
// live among fanout's.
type App struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	Secret string `json:"secret"`
	// Prefix puts the app's channels apart from the others': Pusher
	// channel "x" is fanout channel Prefix+"x". It ends with ':' (which
	// no Pusher name holds); empty (one app at most) shares fanout's own
	// channel names.
	Prefix string `json:"channel_prefix,omitempty"`
	// MaxConnections bounds the app's connections on this node (4004
	// beyond); zero: no bound but the server's.
	MaxConnections int `json:"max_connections,omitempty"`
	// WebhookURL receives the app's webhooks; empty: none.
	WebhookURL string `json:"webhook_url,omitempty"`
	// ClientEvents allows client-* events on private and presence
	// channels (nil: allowed).
	ClientEvents *bool `json:"client_events,omitempty"`
}

func (a *App) clientEvents() bool { return a.ClientEvents == nil || *a.ClientEvents }

// Apps is the front door's applications, by key and by id.
type Apps struct {
	list  []*App
	byKey map[string]*App
	byID  map[string]*App
}

// NewApps checks apps: each with an id, a key and a secret, none shared,
// prefixes distinct and well formed.
func NewApps(apps []App) (*Apps, error) {
	as := &Apps{byKey: make(map[string]*App), byID: make(map[string]*App)}
	empty := 0
	prefixes := make(map[string]string)
	for i := range apps {
		a := apps[i]
		switch {
		case a.ID == "" || a.Key == "" || a.Secret == "":
			return nil, fmt.Errorf("app %d: id, key and secret are all required", i+1)
		case strings.ContainsAny(a.Key, "/?#") || strings.ContainsAny(a.ID, "/?#"):
			return nil, fmt.Errorf("app %q: id and key may not hold '/', '?' or '#'", a.ID)
		case as.byKey[a.Key] != nil:
			return nil, fmt.Errorf("app %q: key %q is another app's too", a.ID, a.Key)
		case as.byID[a.ID] != nil:
			return nil, fmt.Errorf("app id %q given twice", a.ID)
		case a.MaxConnections < 0:
			return nil, fmt.Errorf("app %q: max_connections must not be negative", a.ID)
		}
		if a.Prefix == "" {
			if empty++; empty > 1 {
				return nil, errors.New("more than one app without a channel_prefix: their channels would be the same")
			}
		} else {
			if !strings.HasSuffix(a.Prefix, ":") || strings.Count(a.Prefix, ":") != 1 || hub.ValidChannel(a.Prefix) != nil || len(a.Prefix) > MaxPrefix {
				return nil, fmt.Errorf("app %q: channel_prefix %.80q: want up to %d letters, digits or _.@/=- ending in one ':' (e.g. \"app2:\")", a.ID, a.Prefix, MaxPrefix)
			}
			if other, ok := prefixes[a.Prefix]; ok {
				return nil, fmt.Errorf("apps %q and %q have the same channel_prefix %q", other, a.ID, a.Prefix)
			}
			prefixes[a.Prefix] = a.ID
		}
		as.list = append(as.list, &a)
		as.byKey[a.Key], as.byID[a.ID] = &a, &a
	}
	if len(as.list) == 0 {
		return nil, errors.New("no apps")
	}
	return as, nil
}

// LoadFile reads apps from a JSON file: an array of objects with id, key,
// secret and optionally channel_prefix, max_connections, webhook_url,
// client_events.
func LoadFile(path string) ([]App, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var apps []App
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&apps); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return apps, nil
}

// ByKey is the app with key; nil for none.
func (as *Apps) ByKey(key string) *App { return as.byKey[key] }

// ByID is the app with id; nil for none.
func (as *Apps) ByID(id string) *App { return as.byID[id] }

// List is every app.
func (as *Apps) List() []*App { return as.list }

// PusherName is a fanout channel's name as Pusher clients know it: its
// app's prefix taken off (hub.Config.PusherChannel).
func (as *Apps) PusherName(channel string) string {
	if i := strings.IndexByte(channel, ':'); i >= 0 {
		return channel[i+1:]
	}
	return channel
}

// owns reports whether a fanout channel is one of app's, and its Pusher
// name.
func (a *App) owns(channel string) (string, bool) {
	if a.Prefix == "" {
		return channel, !strings.Contains(channel, ":")
	}
	name, ok := strings.CutPrefix(channel, a.Prefix)
	return name, ok
}

// MaxChannelName is the longest Pusher channel name (what the Pusher
// server SDKs allow).
const MaxChannelName = 200

// MaxPrefix is the longest channel_prefix: with a Pusher name of
// MaxChannelName, a fanout channel name.
const MaxPrefix = hub.MaxChannelName - MaxChannelName

// MaxEventName is the longest event name.
const MaxEventName = 200

// validChannel checks a Pusher channel name: 1 to MaxChannelName bytes of
// [A-Za-z0-9_\-=@,.;]. The error is for the client.
func validChannel(name string) error {
	switch {
	case name == "":
		return errors.New("empty channel name")
	case len(name) > MaxChannelName:
		return fmt.Errorf("channel name is %d bytes, over %d", len(name), MaxChannelName)
	case name[0] == '#':
		return fmt.Errorf("channel %.80q: server-to-user channels (user sign-in) are not supported", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-=@,.;", c) >= 0) {
			return fmt.Errorf("channel %.80q: byte %q at %d (allowed: A-Z a-z 0-9 _ - = @ , . ;)", name, c, i)
		}
	}
	return nil
}

// Channel kinds, by prefix.
func isPresence(name string) bool { return strings.HasPrefix(name, "presence-") }
func isPrivate(name string) bool  { return strings.HasPrefix(name, "private-") }
func isEncrypted(name string) bool {
	return strings.HasPrefix(name, "private-encrypted-")
}

// validName checks an event name or a presence user_id: 1 to max bytes of
// UTF-8, no control characters, nothing blank at either end (in a tier
// they travel as NATS headers, which would trim and rewrite those). The
// error is for the client.
func validName(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s: empty", what)
	case len(s) > max:
		return fmt.Errorf("%s: %d bytes, over %d", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s: not UTF-8", what)
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("%s %.60q: blank at an end", what, s)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %.60q: a control character", what, s)
		}
	}
	return nil
}
