package objstore

import (
	"encoding/json"
	"maps"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

// headerSafe: what an S3 or Blob metadata header value may hold (printable
// ASCII, no space at either end); nameSafe: a Blob metadata name (a C#
// identifier), which S3 and GCS take too.
var (
	headerSafe = regexp.MustCompile(`^[\x21-\x7e]*$`)
	nameSafe   = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
)

func TestMessageModeMetadata(t *testing.T) {
	batch := []sink.Message{
		msg(1, "sensors/temp", []byte(`{"t":1}`)),
		msg(2, "café/\x01/100%", []byte("x")),
		msg(3, " a  b ~+", nil),
		msg(4, "bad\xff/utf-8", []byte{0xff}),
		msg(5, "", []byte("empty topic")),
	}
	batch[0].Received = time.Date(2024, 3, 5, 8, 8, 9, 500000000, time.FixedZone("CET", 3600))
	want := []map[string]string{
		{"id": "65e6c5a1beef-000000000001", "topic": "sensors/temp", "received": "2024-03-05T07:08:09.5Z", "device": "dev%C3%A9%201"},
		{"id": "65e6c5a1beef-000000000002", "topic": "caf%C3%A9/%01/100%25", "received": "2024-03-05T07:08:09.125456789Z", "device": "dev%C3%A9%201"},
		{"id": "65e6c5a1beef-000000000003", "topic": "%20a%20%20b%20%7E+", "received": "2024-03-05T07:08:09.126456789Z", "device": "dev%C3%A9%201"},
		{"id": "65e6c5a1beef-000000000004", "topic": "bad%FF/utf-8", "received": "2024-03-05T07:08:09.127456789Z", "device": "dev%C3%A9%201"},
		{"id": "65e6c5a1beef-000000000005", "topic": "", "received": "2024-03-05T07:08:09.128456789Z", "device": "dev%C3%A9%201"},
	}
	const device = "devé 1"
	objs, err := Options{Mode: PerMessage, Device: device}.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	// The line of each message, to hold the metadata to the same names and
	// time format.
	lineObjs, err := Options{Device: device}.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(lineObjs[0].Body), "\n"), "\n")
	for i, o := range objs {
		if !maps.Equal(o.Metadata, want[i]) {
			t.Errorf("message %d: metadata %q\nwant %q", i, o.Metadata, want[i])
		}
		var line map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &line); err != nil {
			t.Fatal(err)
		}
		for name, v := range o.Metadata {
			if !nameSafe.MatchString(name) || !headerSafe.MatchString(v) {
				t.Errorf("message %d: metadata %s=%q is not header-safe", i, name, v)
			}
			if _, ok := line[name]; !ok && !(name == MetaTopic && line["topic_base64"] != nil) {
				t.Errorf("message %d: metadata %s is not a field of the line %s", i, name, lines[i])
			}
		}
		if o.Metadata[MetaReceived] != line["received"] {
			t.Errorf("message %d: received %q, the line has %q", i, o.Metadata[MetaReceived], line["received"])
		}
		l, err := DecodeMetadata(o.Metadata)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m := batch[i]
		if l.ID != m.ID || l.Topic != m.Topic || l.Device != device || !l.Received.Equal(m.Received) || l.Received.Location() != time.UTC || l.Payload != nil {
			t.Errorf("message %d: decoded %+v, want %q %q %q %v", i, l, m.ID, m.Topic, device, m.Received)
		}
	}
	if got := objs[0].Metadata[MetaTopic]; got != batch[0].Topic {
		t.Errorf("a plain topic was changed: %q", got)
	}

	// Batch objects carry their metadata in the lines.
	for _, o := range lineObjs {
		if o.Metadata != nil {
			t.Errorf("batch object %s has metadata %v", o.Key, o.Metadata)
		}
	}
	// No device: the same stand-in as in keys and lines.
	objs, err = Options{Mode: PerMessage}.Build(batch[:1])
	if err != nil || objs[0].Metadata[MetaDevice] != UnknownDevice {
		t.Errorf("no device: %v %v", objs, err)
	}
}

// A topic too long for S3's 2 KiB of metadata is cut like one too long for
// a key: at an escape boundary, ending in ~ and its hash, distinct per topic.
func TestLongTopicMetadataIsShortened(t *testing.T) {
	long := strings.Repeat("é", 1500) // 3,000 bytes escaped 6 to a letter
	batch := []sink.Message{msg(1, long+"/a", nil), msg(2, long+"/b", nil), msg(3, strings.Repeat("t", 1900), nil)}
	objs, err := Options{Mode: PerMessage, Device: "d"}.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	hashed := regexp.MustCompile(`^(%[0-9A-F]{2})+~[0-9a-f]{16}$`)
	for i, o := range objs {
		n := 0
		for k, v := range o.Metadata {
			n += len(k) + len(v)
		}
		if n > MaxMetadataBytes {
			t.Errorf("message %d: metadata of %d bytes", i, n)
		}
		if i < 2 && (!hashed.MatchString(o.Metadata[MetaTopic]) || n < MaxMetadataBytes-5) {
			t.Errorf("message %d: topic ...%q (metadata %d bytes)", i, o.Metadata[MetaTopic][len(o.Metadata[MetaTopic])-40:], n)
		}
	}
	if objs[0].Metadata[MetaTopic] == objs[1].Metadata[MetaTopic] {
		t.Error("two long topics were shortened alike")
	}
	if objs[2].Metadata[MetaTopic] != batch[2].Topic {
		t.Errorf("a topic that fits was changed")
	}
	again, _ := Options{Mode: PerMessage, Device: "d"}.Build(batch)
	if !maps.Equal(again[0].Metadata, objs[0].Metadata) {
		t.Error("shortening is not deterministic")
	}
	// An id or device that leaves no room even for the hash fails, as a key
	// that cannot fit does.
	_, err = Options{Mode: PerMessage, Device: strings.Repeat("d", 2000), Template: "{id}"}.Build(batch[:1])
	if err == nil || !strings.Contains(err.Error(), "the id or device is too long") {
		t.Errorf("an absurd device: %v", err)
	}
}

func TestDecodeMetadata(t *testing.T) {
	// Names as S3 gives them (lower case) and as HTTP canonicalises them.
	l, err := DecodeMetadata(map[string]string{"Id": "1", "TOPIC": "a%2Fb+c", "Received": "2024-03-05T07:08:09.5Z", "device": "d"})
	if err != nil || l.ID != "1" || l.Topic != "a/b+c" || l.Device != "d" || !l.Received.Equal(time.Date(2024, 3, 5, 7, 8, 9, 5e8, time.UTC)) {
		t.Errorf("got %+v %v", l, err)
	}
	for _, tt := range []struct {
		md   map[string]string
		want string
	}{
		{nil, "objstore: metadata id is missing\nmetadata topic is missing\nmetadata device is missing\nmetadata received is missing"},
		{map[string]string{"id": "1", "topic": "a%zz", "device": "d", "received": "yesterday"},
			"objstore: metadata topic: invalid URL escape \"%zz\"\nmetadata received: parsing time \"yesterday\" as \"2006-01-02T15:04:05.999999999Z07:00\": cannot parse \"yesterday\" as \"2006\""},
	} {
		if _, err := DecodeMetadata(tt.md); err == nil || err.Error() != tt.want {
			t.Errorf("DecodeMetadata(%v):\ngot  %v\nwant %s", tt.md, err, tt.want)
		}
	}
}
