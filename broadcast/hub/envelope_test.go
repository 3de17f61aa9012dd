package hub_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/fanout/fanout/broadcast/hub"
)

// FuzzEnvelope: for any payload, the JSON envelope is one valid JSON
// object that gives back the channel, the seq and the payload (text as a
// string, binary as base64), in a text frame of the right length.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{"", "hi", "\"\\\n\r\t\x00\x1f\x7f", "é€😀", "\u2028", "{\"x\":1}"} {
		f.Add([]byte(s), uint64(1), false)
	}
	f.Add([]byte{0, 255, 128}, uint64(1<<63), true)
	f.Fuzz(func(t *testing.T, payload []byte, seq uint64, binary bool) {
		kind := hub.KindText
		if binary || !utf8.Valid(payload) {
			kind = hub.KindBinary
		}
		m := hub.NewMessage("room:1/a@b=c-d_e.f", kind, payload)
		m.Seq = seq
		fr := m.Bytes(hub.EncodingJSON)
		if fr[0] != 0x81 {
			t.Fatalf("first byte %#x, want a final text frame", fr[0])
		}
		body := fr[2:]
		switch fr[1] {
		case 126:
			body = fr[4:]
		case 127:
			body = fr[10:]
		}
		if int(fr[1]) < 126 && int(fr[1]) != len(body) {
			t.Fatalf("header says %d bytes, body has %d", fr[1], len(body))
		}
		var e struct {
			Type, Channel, Data string
			DataBase64          string `json:"data_base64"`
			Seq                 uint64
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("envelope %q is not JSON: %v", body, err)
		}
		if dec.More() {
			t.Fatalf("envelope %q has more than one value", body)
		}
		got := []byte(e.Data)
		if kind == hub.KindBinary {
			got, _ = base64.StdEncoding.DecodeString(e.DataBase64)
		}
		if e.Type != "message" || e.Channel != m.Channel || e.Seq != seq || !bytes.Equal(got, payload) {
			t.Fatalf("envelope %q decodes to %+v, want payload %q", body, e, payload)
		}
	})
}

// FromJSON: a string is text, its value; anything else JSON, compacted;
// garbage an error.
func TestFromJSON(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		kind    hub.Kind
		ok      bool
	}{
		{`"a\nb"`, "a\nb", hub.KindText, true},
		{` { "x" : [1, 2] } `, `{"x":[1,2]}`, hub.KindJSON, true},
		{`null`, `null`, hub.KindJSON, true},
		{`12.5e3`, `12.5e3`, hub.KindJSON, true},
		{`{"x":`, "", 0, false},
		{`1 2`, "", 0, false},
	} {
		kind, out, err := hub.FromJSON([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && (kind != tc.kind || string(out) != tc.out)) {
			t.Errorf("FromJSON(%q) = %d %q %v, want %d %q ok=%v", tc.in, kind, out, err, tc.kind, tc.out, tc.ok)
		}
	}
}
