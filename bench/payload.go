package bench

import (
	"encoding/binary"
	"errors"
)

// A bench message's payload starts with a fixed header; the rest is
// padding up to the configured size:
//
//	"FB" | publisher uint16 | sequence uint64 | send time uint64 (unix ns)
const payloadHeader = 20

var payloadMagic = [2]byte{'F', 'B'}

var errNotBench = errors.New("bench: not a bench message")

// warmPub marks warm-up messages: sent before the measured phase until
// every reading receiver has seen one (so every receiver is known to be
// registered with the server), and never counted.
const warmPub = 0xffff

// putPayload fills p (len ≥ payloadHeader) with a message header.
func putPayload(p []byte, pub uint16, seq uint64, sent int64) {
	p[0], p[1] = payloadMagic[0], payloadMagic[1]
	binary.BigEndian.PutUint16(p[2:], pub)
	binary.BigEndian.PutUint64(p[4:], seq)
	binary.BigEndian.PutUint64(p[12:], uint64(sent))
}

// parsePayload reads a message header back.
func parsePayload(p []byte) (pub uint16, seq uint64, sent int64, err error) {
	if len(p) < payloadHeader || p[0] != payloadMagic[0] || p[1] != payloadMagic[1] {
		return 0, 0, 0, errNotBench
	}
	return binary.BigEndian.Uint16(p[2:]), binary.BigEndian.Uint64(p[4:]), int64(binary.BigEndian.Uint64(p[12:])), nil
}

// window is how far back a receiver remembers which sequence numbers it
// has seen, per publisher, to tell a duplicate from a late arrival.
const window = 1024

// seqTrack accounts for one publisher's messages at one receiver.
type seqTrack struct {
	next    uint64 // highest sequence seen + 1
	unique  uint64 // distinct sequences received
	dups    uint64 // sequences received again
	reorder uint64 // sequences received after a higher one
	seen    [window / 64]uint64
}

func (s *seqTrack) bit(q uint64) (word int, mask uint64) {
	i := q % window
	return int(i / 64), 1 << (i % 64)
}

// see records sequence q.
func (s *seqTrack) see(q uint64) {
	switch {
	case q >= s.next:
		// Everything between next and q is missing for now.
		if q-s.next >= window {
			s.seen = [window / 64]uint64{}
		} else {
			for m := s.next; m < q; m++ {
				w, b := s.bit(m)
				s.seen[w] &^= b
			}
		}
		w, b := s.bit(q)
		s.seen[w] |= b
		s.next = q + 1
		s.unique++
	case s.next-q > window:
		// Too old to remember: count it as late, not as a duplicate.
		s.unique++
		s.reorder++
	default:
		w, b := s.bit(q)
		if s.seen[w]&b != 0 {
			s.dups++
			return
		}
		s.seen[w] |= b
		s.unique++
		s.reorder++
	}
}
