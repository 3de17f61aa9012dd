package hub

import (
	"errors"
	"fmt"
)

// MaxChannelName is the longest channel name, in bytes.
const MaxChannelName = 256

// ErrChannelName: a channel name that ValidChannel refuses. The error
// ValidChannel returns is a *ChannelNameError that matches it.
var ErrChannelName = errors.New("hub: invalid channel name")

// ChannelNameError says what is wrong with a channel name.
type ChannelNameError struct{ Why string }

func (e *ChannelNameError) Error() string        { return ErrChannelName.Error() + ": " + e.Why }
func (e *ChannelNameError) Is(target error) bool { return target == ErrChannelName }

// ValidChannel checks a channel name a client or a publisher gave: 1 to
// MaxChannelName bytes of [A-Za-z0-9_.:@/=,;-] (every Pusher channel name
// is one, with room for an app's prefix). (The default channel, "",
// is never named: it is where a client that names none is.) The error
// says what is wrong, for the client.
func ValidChannel(name string) error {
	switch {
	case name == "":
		return &ChannelNameError{"empty"}
	case len(name) > MaxChannelName:
		return &ChannelNameError{fmt.Sprintf("%d bytes, over %d", len(name), MaxChannelName)}
	}
	for i := 0; i < len(name); i++ {
		if !channelByte[name[i]] {
			return &ChannelNameError{fmt.Sprintf("byte %q at %d (allowed: A-Z a-z 0-9 _ . : @ / = , ; -)", name[i], i)}
		}
	}
	return nil
}

var channelByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_.:@/=,;-" {
		t[c] = true
	}
	return t
}()
