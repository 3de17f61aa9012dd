package bench

import (
	"bytes"
	"errors"
	"fmt"
)

// sseParser reads a text/event-stream body (the HTML standard's
// "Server-Sent Events" rules) out of a buffer that fills a little at a
// time, as frame.Parser reads frames: the caller appends what the socket
// had, calls parse, and keeps the unconsumed tail, which starts at the
// event in progress. Its state is where that event's lines are, as
// offsets from the event's first byte, so nothing is copied: an event's
// data, when it is one line (fanout's always are), is handed over where
// it lies in the buffer. An idle parser holds no buffer.
//
// Lines end in LF, CRLF or CR; a line starting with ':' is a comment (a
// ping); a blank line dispatches the event, if it has data. Only events of
// the default type ("message", what EventSource's onmessage gets) are
// handed over; id and retry are read past (a bench stream never
// reconnects).
type sseParser struct {
	// max bounds an event's bytes; zero means maxServerFrame.
	max int

	started bool     // the stream's first bytes were seen (a leading BOM skipped)
	scan    int      // offset of the event's first line not read yet
	lines   int      // data lines so far
	first   [2]int   // the first data line's value, as offsets
	more    [][2]int // the others', when there are (never, from fanout)
	typed   bool     // an event: field named another type than "message"
}

// errSSEEvent: an event longer than the parser's bound.
var errSSEEvent = errors.New("bench: sse event too long")

var bom = []byte("\xef\xbb\xbf")

// parse consumes the complete events at the start of b, handing each
// event's data to h (it aliases b, valid until h returns), and returns how
// many bytes it consumed: up to the event in progress. It stops at h's
// first error, and returns it.
func (p *sseParser) parse(b []byte, h func(data []byte) error) (n int, err error) {
	if !p.started {
		if len(b) < len(bom) && bytes.HasPrefix(bom, b) {
			return 0, nil // the BOM's first bytes, or nothing yet
		}
		p.started = true
		if bytes.HasPrefix(b, bom) {
			n = len(bom)
		}
	}
	limit := p.max
	if limit <= 0 {
		limit = maxServerFrame
	}
	for {
		ev := b[n:]
		i := p.scan
		// The line ends at its first CR or LF: two IndexByte (vector
		// instructions) rather than IndexAny (a byte at a time).
		j := bytes.IndexByte(ev[i:], '\n')
		line := ev[i:]
		if j >= 0 {
			line = line[:j]
		}
		if k := bytes.IndexByte(line, '\r'); k >= 0 {
			j = k
		}
		if j < 0 {
			if len(ev) > limit {
				return n, fmt.Errorf("%w: over %d bytes", errSSEEvent, limit)
			}
			return n, nil
		}
		eol := i + j
		next := eol + 1
		if ev[eol] == '\r' {
			if next == len(ev) { // a CR at the end: an LF may follow
				if len(ev) > limit {
					return n, fmt.Errorf("%w: over %d bytes", errSSEEvent, limit)
				}
				return n, nil
			}
			if ev[next] == '\n' {
				next++
			}
		}
		if next > limit {
			return n, fmt.Errorf("%w: over %d bytes", errSSEEvent, limit)
		}
		p.scan = next
		if eol == i { // a blank line: the event is complete
			data, ok := p.data(ev)
			p.reset()
			n += next
			if ok {
				if err := h(data); err != nil {
					return n, err
				}
			}
			continue
		}
		p.field(ev, i, eol)
	}
}

// field takes in the line ev[i:eol] (not blank).
func (p *sseParser) field(ev []byte, i, eol int) {
	line := ev[i:eol]
	if line[0] == ':' {
		return // a comment
	}
	name, value := line, eol // no colon: the whole line names a field with no value
	if k := bytes.IndexByte(line, ':'); k >= 0 {
		name, value = line[:k], i+k+1
		if value < eol && ev[value] == ' ' {
			value++
		}
	}
	switch string(name) {
	case "data":
		if p.lines == 0 {
			p.first = [2]int{value, eol}
		} else {
			p.more = append(p.more, [2]int{value, eol})
		}
		p.lines++
	case "event":
		t := ev[value:eol]
		p.typed = len(t) > 0 && string(t) != "message"
	}
}

// data is the complete event ev's data, and whether it is to be handed
// over: it has data lines, and the default type. Several lines are joined
// with LF, in a buffer of their own.
func (p *sseParser) data(ev []byte) ([]byte, bool) {
	if p.lines == 0 || p.typed {
		return nil, false
	}
	if p.lines == 1 {
		return ev[p.first[0]:p.first[1]], true
	}
	joined := append([]byte(nil), ev[p.first[0]:p.first[1]]...)
	for _, l := range p.more {
		joined = append(append(joined, '\n'), ev[l[0]:l[1]]...)
	}
	return joined, true
}

// reset forgets the event just dispatched (or dropped).
func (p *sseParser) reset() {
	p.scan, p.lines, p.first, p.more, p.typed = 0, 0, [2]int{}, nil, false
}
