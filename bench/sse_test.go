package bench

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// events parses in whole with a fresh parser and returns the data of every
// event, the bytes consumed and the error.
func events(in []byte, max int) (got []string, n int, err error) {
	p := sseParser{max: max}
	n, err = p.parse(in, func(d []byte) error {
		got = append(got, string(d))
		return nil
	})
	return got, n, err
}

func TestSSEParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
		rest     int // bytes left unconsumed: the event in progress
	}{
		{"fanout's", "id: e:0\ndata: {\"type\":\"welcome\"}\n\n: ping\n\nid: e:1\ndata: {\"a\":1}\n\n", []string{`{"type":"welcome"}`, `{"a":1}`}, 0},
		{"no space after the colon", "data:x\n\n", []string{"x"}, 0},
		{"only one space is taken", "data:  x\n\n", []string{" x"}, 0},
		{"several data lines", "data: a\ndata: b\ndata\n\n", []string{"a\nb\n"}, 0},
		{"an empty data line is an event", "data\n\n", []string{""}, 0},
		{"no data, no event", "id: 1\nretry: 10\n: c\n\n", nil, 0},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}, 0},
		{"CR", "data: a\r\rdata: b\r\r:\n", []string{"a", "b"}, len(":\n")},
		{"a CR at the end waits for an LF", "data: a\r\n\r", []string{}, len("data: a\r\n\r")},
		{"BOM", "\xef\xbb\xbfdata: a\n\n", []string{"a"}, 0},
		{"a BOM only at the start", "data: a\n\n\xef\xbb\xbfdata: b\n\n", []string{"a"}, 0}, // "\xef\xbb\xbfdata" is another field
		{"other event types are not messages", "event: ping\ndata: a\n\nevent: message\ndata: b\n\nevent\ndata: c\n\n", []string{"b", "c"}, 0},
		{"an event in progress stays", "data: a\n\ndata: b\n", []string{"a"}, len("data: b\n")},
		{"a line in progress stays", "data: a\n\ndata: b", []string{"a"}, len("data: b")},
		{"comment without a blank line", ": ping\n", nil, len(": ping\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, n, err := events([]byte(tc.in), 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(tc.want) == 0 {
				got, tc.want = nil, nil
			}
			if !slices.Equal(got, tc.want) || len(tc.in)-n != tc.rest {
				t.Fatalf("got %q leaving %d bytes, want %q leaving %d", got, len(tc.in)-n, tc.want, tc.rest)
			}
		})
	}
}

// An event longer than the bound is an error, whether its lines end or not.
func TestSSEEventBound(t *testing.T) {
	for _, in := range []string{"data: " + strings.Repeat("x", 100), "data: " + strings.Repeat("x", 100) + "\n", "data: a\n" + strings.Repeat("data: b\n", 20)} {
		if _, _, err := events([]byte(in), 64); !errors.Is(err, errSSEEvent) {
			t.Errorf("%d bytes with a bound of 64: %v, want errSSEEvent", len(in), err)
		}
	}
	if got, _, err := events([]byte("data: "+strings.Repeat("x", 50)+"\n\n"), 64); err != nil || len(got) != 1 {
		t.Errorf("58 bytes with a bound of 64: %q, %v", got, err)
	}
}

// The handler's error stops the parse after its event.
func TestSSEHandlerError(t *testing.T) {
	stop := errors.New("stop")
	var p sseParser
	calls := 0
	n, err := p.parse([]byte("data: a\n\ndata: b\n\n"), func([]byte) error { calls++; return stop })
	if err != stop || calls != 1 || n != len("data: a\n\n") {
		t.Fatalf("n %d, err %v, %d calls; want 9, stop, 1", n, err, calls)
	}
}

// splitParse feeds in to one parser as a socket would: the first split
// bytes, then the rest, keeping the unconsumed tail between the two. It
// returns the events and the bytes left over.
func splitParse(in []byte, split, max int) (got []string, rest int, err error) {
	p := sseParser{max: max}
	h := func(d []byte) error { got = append(got, string(d)); return nil }
	buf := append([]byte(nil), in[:split]...)
	n, err := p.parse(buf, h)
	if err != nil {
		return got, 0, err
	}
	buf = append(buf[:copy(buf, buf[n:])], in[split:]...)
	n, err = p.parse(buf, h)
	return got, len(buf) - n, err
}

// FuzzSSEParse checks, for any input, that the parser never panics, never
// consumes more than it was given, and finds the same events whether the
// bytes arrive at once or split at any point (a receiver parses whatever
// its socket had), so its state between reads is right.
func FuzzSSEParse(f *testing.F) {
	for _, s := range []string{
		"id: e:0\ndata: {\"type\":\"welcome\"}\n\n: ping\n\nid: e:1\ndata: {\"a\":1}\n\n",
		"data: a\r\n\r\ndata: b\r\rdata\n\n",
		"\xef\xbb\xbfdata: a\ndata: b\n\nevent: x\ndata: c\n\n",
		"data: " + strings.Repeat("y", 80) + "\n\n",
		"retry: 5000\n: too many connections\n\n",
	} {
		f.Add([]byte(s), uint16(len(s)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint16) {
		const max = 64
		whole, n, werr := events(in, max)
		if n < 0 || n > len(in) {
			t.Fatalf("consumed %d of %d bytes", n, len(in))
		}
		s := int(split) % (len(in) + 1)
		parts, rest, perr := splitParse(in, s, max)
		if (werr == nil) != (perr == nil) {
			t.Fatalf("whole: %v, split at %d: %v", werr, s, perr)
		}
		if werr != nil {
			return // the events before the error may differ: a part stops sooner
		}
		if !slices.Equal(whole, parts) || rest != len(in)-n {
			t.Fatalf("split at %d: %q leaving %d, whole: %q leaving %d", s, parts, rest, whole, len(in)-n)
		}
	})
}
