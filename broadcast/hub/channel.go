package hub

import (
	"errors"
	"fmt"
)

// MaxChannelName is the longest channel name, in bytes.
const MaxChannelName = 128

// ErrChannelName: a channel name that ValidChannel refuses.
var ErrChannelName = errors.New("hub: invalid channel name")

// ValidChannel checks a channel name a client or a publisher gave: 1 to
// MaxChannelName bytes of [A-Za-z0-9_.:@/=-]. (The default channel, "",
// is never named: it is where a client that names none is.) The error
// says what is wrong, for the client.
func ValidChannel(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrChannelName)
	case len(name) > MaxChannelName:
		return fmt.Errorf("%w: %d bytes, over %d", ErrChannelName, len(name), MaxChannelName)
	}
	for i := 0; i < len(name); i++ {
		if !channelByte[name[i]] {
			return fmt.Errorf("%w: byte %q at %d (allowed: A-Z a-z 0-9 _ . : @ / = -)", ErrChannelName, name[i], i)
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
	for _, c := range "_.:@/=-" {
		t[c] = true
	}
	return t
}()
