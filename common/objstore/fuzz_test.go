package objstore

import (
	"bytes"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloud-block/cloud-block/common/sink"
)

// FuzzEnvelope checks that Decode(Build(x)) == x for any payload and topic
// bytes, with and without gzip, that every line stays one valid JSON line,
// that the {topic} part of a key is plain ASCII that percent-decodes back
// to the topic, and that message mode's metadata is too.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []struct {
		payload, topic string
	}{
		{`{"t":21.5}`, "sensors/temp"},
		{" \t[1, 2]\t ", "a b/c"},
		{"{\n\"a\":1\n}", "x"},
		{"\"\u2028\"", "../up/./x"},
		{"caf\xe9", "caf\xe9/t"},
		{"", "/"},
		{"\x00\x01\"\\", "a//b%"},
		{"null", "."},
	} {
		f.Add([]byte(s.payload), []byte(s.topic), false)
		f.Add([]byte(s.payload), []byte(s.topic), true)
	}
	f.Fuzz(func(t *testing.T, payload, topic []byte, gz bool) {
		at := time.Date(2024, 3, 5, 7, 8, 9, 1, time.UTC)
		// A second message whose payload is the first reversed: two lines,
		// and arbitrary bytes in both.
		rev := bytes.Clone(payload)
		slices.Reverse(rev)
		batch := []sink.Message{
			{ID: "e-000000000001", Topic: string(topic), Received: at, Payload: payload},
			{ID: "e-000000000002", Topic: string(topic), Received: at, Payload: rev},
		}
		objs, err := Options{Gzip: gz, Device: "d", Template: "{topic}/{first}"}.Build(batch)
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) != 1 {
			t.Fatalf("got %d objects", len(objs))
		}
		obj := objs[0]
		if !gz {
			checkNDJSON(t, obj.Body, 2)
		}
		lines, err := Decode(obj.Body, obj.ContentEncoding)
		if err != nil {
			t.Fatal(err)
		}
		checkLines(t, lines, batch, "d")

		suffix := "/e-000000000001.ndjson"
		if gz {
			suffix += ".gz"
		}
		key := strings.TrimSuffix(obj.Key, suffix)
		if len(key) == len(obj.Key) || len(obj.Key) > MaxKeyBytes {
			t.Fatalf("key %q", obj.Key)
		}
		for i := 0; i < len(key); i++ {
			if c := key[i]; c < 0x21 || c > 0x7e {
				t.Fatalf("key holds byte %#x: %q", c, key)
			}
		}
		if strings.Contains(key, "~") {
			return // shortened
		}
		for seg := range strings.SplitSeq(key, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("key has a dot segment: %q", key)
			}
		}
		if back, err := url.PathUnescape(key); err != nil || back != string(topic) {
			t.Fatalf("key %q decodes to %q (%v), want %q", key, back, err, topic)
		}

		per, err := Options{Mode: PerMessage, Device: "d"}.Build(batch[:1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(per[0].Body, payload) || (per[0].ContentType != ContentTypeBinary) == !utf8.Valid(payload) {
			t.Fatalf("message mode: body or content type %q wrong", per[0].ContentType)
		}
		for name, v := range per[0].Metadata {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < 0x21 || c > 0x7e {
					t.Fatalf("metadata %s holds byte %#x: %q", name, c, v)
				}
			}
		}
		l, err := DecodeMetadata(per[0].Metadata)
		shortened := strings.Contains(per[0].Metadata[MetaTopic], "~")
		if err != nil || l.ID != batch[0].ID || !l.Received.Equal(at) || l.Device != "d" || (l.Topic != string(topic)) != shortened {
			t.Fatalf("metadata %q decodes to %+v (%v)", per[0].Metadata, l, err)
		}
	})
}
