package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fanout/fanout/broadcast/hub"
)

// envelopeOf is fanout's own envelope of a message of kind published with
// payload on channel, as the server writes it (hub.AppendEnvelope).
func envelopeOf(channel string, kind hub.Kind, payload []byte, seq uint64) []byte {
	m := hub.NewMessage(channel, kind, payload)
	m.Seq = seq
	return hub.AppendEnvelope(nil, &m)
}

// Every kind of message comes back out of fanout's envelope as it was
// published: text from the string, JSON as the value, binary decoded.
func TestEnvelopeRecoversThePayload(t *testing.T) {
	jsonMsg := jsonFiller(1024)
	putJSONPayload(jsonMsg, 3, 1<<40, 1234567890)
	for _, tc := range []struct {
		name    string
		kind    hub.Kind
		payload []byte
	}{
		{"binary", hub.KindBinary, []byte("FB\x00\x01\xff\xfe binary \x00 bytes")},
		{"text", hub.KindText, []byte("\"FT text with \\ \" quotes, \t\n controls \x01, é, 😀 and </script>")},
		{"a JSON object as text", hub.KindText, jsonMsg},
		{"a JSON object as JSON", hub.KindJSON, jsonMsg},
		{"JSON", hub.KindJSON, []byte(`[1,"two",{"three":3.0e1},null,true]`)},
		{"empty text", hub.KindText, []byte{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := envelopeOf("news/a=b", tc.kind, tc.payload, 17)
			typ, seq, got, _, err := decodeEnvelope(env, nil)
			if err != nil || typ != envMessage || seq != 17 || !bytes.Equal(got, tc.payload) {
				t.Fatalf("%s: type %d, seq %d, %q, %v; want a message, 17, %q", env, typ, seq, got, err, tc.payload)
			}
		})
	}
	welcome := hub.AppendWelcome(nil, "e", []string{"a", "b"}, hub.Joined{Seq: 4}, true)
	if typ, _, got, _, err := decodeEnvelope(welcome, nil); err != nil || typ != envWelcome || got != nil {
		t.Fatalf("%s: type %d, %q, %v; want a welcome", welcome, typ, got, err)
	}
}

func TestEnvelopeRefuses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{``, errJSON},
		{`{`, errJSON},
		{`{"type":"message","data":"x"`, errJSON},
		{`{"type":"message","data":"x"} {}`, errJSON},
		{`{"type":"message","data":"\x"}`, errJSON},
		{`{"type":"message","data":"\u12"}`, errJSON},
		{"{\"type\":\"message\",\"data\":\"a\nb\"}", errJSON},
		{`{"type":"message","data":01}`, errJSON},
		{`{"type":"message","data":[1,]}`, errJSON},
		{`{"type":"message","data":tru}`, errJSON},
		{`{"type":"message","data":"a",}`, errJSON},
		{`{"type":"message" "data":"a"}`, errJSON},
		{`[{"type":"message","data":"a"}]`, errEnvelope},
		{`"message"`, errEnvelope},
		{`{"type":1,"data":"a"}`, errEnvelope},
		{`{"type":"message","data":"a","data":"b"}`, errEnvelope},
		{`{"type":"message","data":"a","data_base64":"YQ=="}`, errEnvelope},
		{`{"type":"message","data_base64":"not base64!"}`, errEnvelope},
		{`{"type":"message","data_base64":7}`, errEnvelope},
		{`{"type":"message","type":"message","data":"a"}`, errEnvelope},
	} {
		if _, _, _, _, err := decodeEnvelope([]byte(tc.in), nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.in, err, tc.want)
		}
	}
	// Other types are read, not counted; a message without data has none.
	for _, in := range []string{`{"type":"error","data":"a"}`, `{"data":"a"}`, `{}`, ` { "type" : "message" } `} {
		typ, _, got, _, err := decodeEnvelope([]byte(in), nil)
		if err != nil || got != nil || (typ == envMessage) != strings.Contains(in, "message") {
			t.Errorf("%s: type %d, %q, %v", in, typ, got, err)
		}
	}
}

// The nesting limit is encoding/json's: 10,000 levels pass, 10,001 do not.
func TestEnvelopeDepth(t *testing.T) {
	for _, depth := range []int{maxJSONDepth - 1, maxJSONDepth} {
		in := []byte(`{"x":` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `}`)
		_, _, _, _, err := decodeEnvelope(in, nil)
		if valid := json.Valid(in); valid != (err == nil) {
			t.Errorf("an object holding %d nested arrays: json.Valid %v, decodeEnvelope %v", depth, valid, err)
		}
	}
}

// FuzzEnvelope holds decodeEnvelope to encoding/json: it calls invalid
// exactly what encoding/json does (errJSON), and where it finds an
// envelope, encoding/json finds the same type and data in it.
func FuzzEnvelope(f *testing.F) {
	for _, s := range [][]byte{
		envelopeOf("a", hub.KindText, []byte(`"FT some "quoted" \ text`+"\t\x01é"), 1),
		envelopeOf("", hub.KindBinary, []byte("\x00\x01binary"), 2),
		envelopeOf("b", hub.KindJSON, []byte(`{"x":[1,2.5e-3,true,null,"\u00e9\ud83d\ude00"]}`), 3),
		hub.AppendWelcome(nil, "epoch", []string{"a"}, hub.Joined{Seq: 9}, false),
		[]byte(`{"type":"message","data":"\ud800 lone \udc00 halves \ud800\u0041"}`),
		[]byte(`{"ty\u0070e":"mess\u0061ge","data":"x"}`),
		[]byte(`{"type":"message","data":"a","data":"b"}`),
		[]byte(` [1, {"a": -0.5E+2}] `),
		[]byte(`{"type":"message","seq":18446744073709551615,"s\u0065q":3,"data":"x"}`),
		[]byte(`{"type":"message","seq":1e3,"data":"x"}`),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, seq, got, _, err := decodeEnvelope(in, nil)
		if valid := json.Valid(in); valid == errors.Is(err, errJSON) {
			t.Fatalf("%q: json.Valid %v, decodeEnvelope %v", in, valid, err)
		}
		if err != nil || !utf8.Valid(in) { // encoding/json turns invalid UTF-8 into U+FFFD; the bench keeps the bytes
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(in, &m) != nil {
			t.Fatalf("%q: an envelope that encoding/json does not take as an object", in)
		}
		var want struct {
			Type       string          `json:"type"`
			Data       json.RawMessage `json:"data"`
			DataBase64 []byte          `json:"data_base64"`
		}
		if raw, ok := m["type"]; ok && json.Unmarshal(raw, &want.Type) != nil {
			t.Fatalf("%q: type %s is not a string", in, raw)
		}
		want.Data = m["data"]
		if raw, ok := m["data_base64"]; ok && json.Unmarshal(raw, &want.DataBase64) != nil {
			t.Fatalf("%q: data_base64 %s does not decode", in, raw)
		}
		wantTyp := map[string]envType{"welcome": envWelcome, "message": envMessage}[want.Type]
		var wantData []byte
		switch {
		case wantTyp != envMessage:
		case len(want.Data) > 0 && want.Data[0] == '"':
			var s string
			_ = json.Unmarshal(want.Data, &s)
			wantData = []byte(s)
		case len(want.Data) > 0:
			wantData = want.Data
		case want.DataBase64 != nil:
			wantData = want.DataBase64
		}
		if typ != wantTyp || !bytes.Equal(got, wantData) || (got == nil) != (wantData == nil) {
			t.Fatalf("%q: type %d data %q; encoding/json: %q (%d) data %q", in, typ, got, want.Type, wantTyp, wantData)
		}
		var wantSeq uint64 // a message's seq when it is a whole number in digits, as fanout writes it
		if wantTyp == envMessage {
			wantSeq, _ = strconv.ParseUint(string(m["seq"]), 10, 64)
		}
		if seq != wantSeq {
			t.Fatalf("%q: seq %d; encoding/json: %s (%d)", in, seq, m["seq"], wantSeq)
		}
	})
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	jsonMsg := jsonFiller(1024)
	bin := newPayload(Config{Size: 1024})
	for _, tc := range []struct {
		name string
		env  []byte
	}{
		{"text-json-1024", envelopeOf("news", hub.KindText, jsonMsg, 1)},
		{"json-1024", envelopeOf("news", hub.KindJSON, jsonMsg, 1)},
		{"binary-1024", envelopeOf("news", hub.KindBinary, bin, 1)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.env)))
			var dst []byte
			for b.Loop() {
				var err error
				if _, _, _, dst, err = decodeEnvelope(tc.env, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
