package frame

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/gobwas/ws"
)

// permessage-deflate (RFC 7692), always without context takeover on both
// sides: every message is compressed, and inflated, on its own, so one
// compressed frame serves every connection that negotiated it and no
// connection keeps a compressor or a decompressor between messages.
// Compressors and decompressors are pooled, per message.

// rsv1 marks a compressed message's first frame.
const rsv1 = 0x40

// tail is what a sync flush ends a deflate stream with; a compressed
// message is sent without it (RFC 7692 7.2.1) and inflated with it.
var tail = []byte{0x00, 0x00, 0xff, 0xff}

// inflateTail follows a message's bytes into the decompressor: the sync
// flush tail, then an empty final stored block, so the reader ends with
// io.EOF instead of waiting for more.
var inflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

var (
	writers = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.DefaultCompression) // the level is valid
		return w
	}}
	readers = sync.Pool{New: func() any { return flate.NewReader(bytes.NewReader(nil)) }}
	bufs    = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// CompileDeflate returns a complete unmasked server frame holding payload
// compressed, RSV1 set, ready to be written to any number of peers that
// negotiated permessage-deflate; ok is false when compressing does not
// make it smaller (send the plain frame then). One allocation: the frame.
func CompileDeflate(op ws.OpCode, payload []byte) (f []byte, ok bool) {
	buf := bufs.Get().(*bytes.Buffer)
	defer bufs.Put(buf)
	buf.Reset()
	w := writers.Get().(*flate.Writer)
	defer writers.Put(w)
	w.Reset(buf)
	if _, err := w.Write(payload); err != nil {
		return nil, false
	}
	if err := w.Flush(); err != nil {
		return nil, false
	}
	z := bytes.TrimSuffix(buf.Bytes(), tail)
	if len(z) >= len(payload) {
		return nil, false
	}
	f = make([]byte, 0, HeaderSize(len(z))+len(z))
	f = AppendHeader(f, op, len(z))
	f[0] |= rsv1
	return append(f, z...), true
}

// errInflate: a compressed message that is not a valid deflate stream.
var errInflate = errors.New("invalid deflate data")

// inflate decompresses a message's payload into a pooled buffer, at most
// limit bytes: a message that would inflate past it fails with a 1009
// CloseError before it costs more than limit bytes (a zip bomb costs
// nothing else). done gives the buffer back; the bytes are valid until
// then.
func inflate(z []byte, limit int) (msg []byte, done func(), err error) {
	// The input as one bytes.Reader (an io.ByteReader: the decompressor
	// reads it as it is, without a bufio.Reader of its own per message).
	in := bufs.Get().(*bytes.Buffer)
	defer bufs.Put(in)
	in.Reset()
	in.Write(z)
	in.Write(inflateTail)
	src := bytes.NewReader(in.Bytes())
	r := readers.Get().(io.ReadCloser)
	defer readers.Put(r)
	if err := r.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, nil, err
	}
	buf := bufs.Get().(*bytes.Buffer)
	buf.Reset()
	put := func() {
		if buf.Cap() <= 1<<20 { // a huge one is left to the collector
			bufs.Put(buf)
		}
	}
	n, err := buf.ReadFrom(io.LimitReader(r, int64(limit)+1))
	switch {
	case err != nil:
		put()
		return nil, nil, &CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: fmt.Sprintf("%v: %v", errInflate, err)}
	case n > int64(limit):
		put()
		return nil, nil, &CloseError{Code: ws.StatusMessageTooBig, Reason: fmt.Sprintf("message over %d bytes once inflated", limit)}
	}
	return buf.Bytes(), put, nil
}
