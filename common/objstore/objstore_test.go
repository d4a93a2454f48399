package objstore

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/sink"
)

var t0 = time.Date(2024, 3, 5, 7, 8, 9, 123456789, time.UTC)

func msg(seq int, topic string, payload []byte) sink.Message {
	return sink.Message{
		ID:       fmt.Sprintf("65e6c5a1beef-%012d", seq),
		Topic:    topic,
		Received: t0.Add(time.Duration(seq) * time.Millisecond),
		Payload:  payload,
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

// bigJSON is about n bytes of one-line JSON.
func bigJSON(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"samples":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"i":%d,"v":"%x"}`, i, i*7919)
	}
	b.WriteString("]}")
	return b.Bytes()
}

var payloads = []struct {
	name  string
	data  []byte
	field string // which payload field the line must use
}{
	{"json object", []byte(`{"t":21.5,"ok":true}`), "json"},
	{"json with spaces around", []byte(" \t {\"a\" : [1, 2 ,3]} \t"), "json"},
	{"json number", []byte(`42`), "json"},
	{"json null", []byte(`null`), "json"},
	{"json string with U+2028", []byte("\"a\u2028b\""), "json"},
	{"json with newlines", []byte("{\n  \"a\": 1\n}\n"), "text"},
	{"json with CR", []byte("{\"a\":1}\r"), "text"},
	{"text", []byte("hello, world"), "text"},
	{"text with escapes", []byte("q\"b\\s/\x00\x01\x1f\x7f\t\u2028\u2029é€😀"), "text"},
	{"invalid utf-8", []byte("caf\xe9 \xff\xfe"), "base64"},
	{"binary", randomBytes(4096, 1), "base64"},
	{"empty", []byte{}, "text"},
	{"nil", nil, "text"},
	{"large json", bigJSON(1 << 20), "json"},
	{"large text", bytes.Repeat([]byte("line of text\n"), (1<<20)/13), "text"},
	{"large binary", randomBytes(1<<20, 2), "base64"},
}

func TestRoundTrip(t *testing.T) {
	for _, gz := range []bool{false, true} {
		for _, p := range payloads {
			t.Run(fmt.Sprintf("%s/gzip=%v", p.name, gz), func(t *testing.T) {
				batch := []sink.Message{
					msg(1, "sensors/a", []byte(`{"first":1}`)),
					msg(2, "sensors/b", p.data),
					msg(3, "sensors/a", []byte("last")),
				}
				o := Options{Gzip: gz, Device: "dev-1"}
				objs, err := o.Build(batch)
				if err != nil {
					t.Fatal(err)
				}
				if len(objs) != 1 {
					t.Fatalf("got %d objects, want 1", len(objs))
				}
				obj := objs[0]
				wantEnc := ""
				if gz {
					wantEnc = "gzip"
				}
				if obj.ContentType != "application/x-ndjson" || obj.ContentEncoding != wantEnc {
					t.Errorf("content type %q encoding %q", obj.ContentType, obj.ContentEncoding)
				}
				if fmt.Sprint(obj.Indexes) != "[0 1 2]" {
					t.Errorf("indexes %v", obj.Indexes)
				}
				plain := obj.Body
				if gz {
					plain = gunzip(t, obj.Body)
				}
				checkNDJSON(t, plain, 3)
				if line := bytes.Split(plain, []byte("\n"))[1]; !bytes.Contains(line, []byte(`,"`+p.field+`":`)) {
					t.Errorf("line does not use %q: %.200s", p.field, line)
				}
				lines, err := Decode(obj.Body, obj.ContentEncoding)
				if err != nil {
					t.Fatal(err)
				}
				checkLines(t, lines, batch, "dev-1")
			})
		}
	}
}

// checkNDJSON checks what any consumer relies on: n lines, each valid UTF-8
// JSON, no stray line breaks.
func checkNDJSON(t *testing.T, body []byte, n int) {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("\n")) || bytes.Count(body, []byte("\n")) != n {
		t.Fatalf("want %d newline-terminated lines", n)
	}
	if bytes.IndexByte(body, '\r') >= 0 {
		t.Error("body holds a carriage return")
	}
	for i, line := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
		if !utf8.Valid(line) || !json.Valid(line) {
			t.Errorf("line %d is not valid UTF-8 JSON: %.200q", i+1, line)
		}
	}
}

func checkLines(t *testing.T, got []Line, want []sink.Message, device string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("decoded %d lines, want %d", len(got), len(want))
	}
	for i, l := range got {
		w := want[i]
		if l.ID != w.ID || l.Topic != w.Topic || l.Device != device || !l.Received.Equal(w.Received) || l.Received.Location() != time.UTC {
			t.Errorf("line %d: got %q %q %q %v, want %q %q %q %v", i, l.ID, l.Topic, l.Device, l.Received, w.ID, w.Topic, device, w.Received)
		}
		if !bytes.Equal(l.Payload, w.Payload) {
			t.Errorf("line %d: payload differs: got %d bytes %.80q, want %d bytes %.80q", i, len(l.Payload), l.Payload, len(w.Payload), w.Payload)
		}
	}
}

func TestLineFormat(t *testing.T) {
	batch := []sink.Message{
		msg(1, "s/t", []byte(` {"v":1} `)),
		msg(2, "s/t", []byte("hi\n")),
		msg(3, "s/\xff", []byte{0, 0xff}),
	}
	batch[0].Received = time.Date(2024, 3, 5, 8, 8, 9, 500000000, time.FixedZone("CET", 3600))
	objs, err := Options{Device: "d"}.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"65e6c5a1beef-000000000001","topic":"s/t","received":"2024-03-05T07:08:09.5Z","device":"d","json": {"v":1} }
{"id":"65e6c5a1beef-000000000002","topic":"s/t","received":"2024-03-05T07:08:09.125456789Z","device":"d","text":"hi\n"}
{"id":"65e6c5a1beef-000000000003","topic_base64":"cy//","received":"2024-03-05T07:08:09.126456789Z","device":"d","base64":"AP8="}
`
	if got := string(objs[0].Body); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

func TestGzipIsDeterministicAndPlainWhenDecoded(t *testing.T) {
	batch := []sink.Message{msg(1, "a", bigJSON(10000)), msg(2, "a", []byte("x"))}
	o := Options{Gzip: true, Device: "d"}
	a, err := o.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := o.Build(batch)
	if a[0].Key != b[0].Key || !bytes.Equal(a[0].Body, b[0].Body) {
		t.Error("the same batch gave different objects")
	}
	plain, _ := Options{Device: "d"}.Build(batch)
	// An HTTP client may have undone the Content-Encoding already.
	lines, err := Decode(plain[0].Body, "gzip")
	if err != nil {
		t.Fatal(err)
	}
	checkLines(t, lines, batch, "d")
}

func TestKeys(t *testing.T) {
	batch := []sink.Message{msg(1, "a", nil), msg(2, "b", nil), msg(3, "a", nil)}
	cet := time.FixedZone("EST", -5*3600)
	late := []sink.Message{{ID: "e-1", Topic: "t", Received: time.Date(2024, 12, 31, 23, 30, 0, 0, cet)}}
	const ids = "65e6c5a1beef-000000000001-65e6c5a1beef-000000000003"
	tests := []struct {
		name  string
		o     Options
		batch []sink.Message
		want  []string
	}{
		{"defaults", Options{Device: "dev-1"}, batch, []string{"dev-1/2024/03/05/07/" + ids + ".ndjson"}},
		{"gzip", Options{Device: "dev-1", Gzip: true}, batch, []string{"dev-1/2024/03/05/07/" + ids + ".ndjson.gz"}},
		{"prefix gets a slash", Options{Device: "dev-1", Prefix: "data"}, batch, []string{"data/dev-1/2024/03/05/07/" + ids + ".ndjson"}},
		{"prefix with slash", Options{Device: "dev-1", Prefix: "data/"}, batch, []string{"data/dev-1/2024/03/05/07/" + ids + ".ndjson"}},
		{"no device", Options{}, batch, []string{"unknown-device/2024/03/05/07/" + ids + ".ndjson"}},
		{"device escaped", Options{Device: "a/b c"}, batch, []string{"a%2Fb%20c/2024/03/05/07/" + ids + ".ndjson"}},
		{"UTC of the first message", Options{Device: "d"}, late, []string{"d/2025/01/01/04/e-1-e-1.ndjson"}},
		{"custom batch", Options{Device: "d", Template: "{yyyy}{mm}{dd}T{hh}/{device}_{first}"}, batch,
			[]string{"20240305T07/d_65e6c5a1beef-000000000001.ndjson"}},
		{"message mode", Options{Mode: PerMessage, Device: "dev-1", Prefix: "p"}, batch, []string{
			"p/dev-1/2024/03/05/07/65e6c5a1beef-000000000001",
			"p/dev-1/2024/03/05/07/65e6c5a1beef-000000000002",
			"p/dev-1/2024/03/05/07/65e6c5a1beef-000000000003",
		}},
		{"message mode with topic", Options{Mode: PerMessage, Device: "d", Template: "{topic}/{first}"}, batch, []string{
			"a/65e6c5a1beef-000000000001", "b/65e6c5a1beef-000000000002", "a/65e6c5a1beef-000000000003",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := tt.o.Build(tt.batch)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.Key)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestTopicGroups(t *testing.T) {
	batch := []sink.Message{
		msg(1, "sensors/temp", []byte("1")),
		msg(2, "sensors/hum id", []byte("2")),
		msg(3, "sensors/temp", []byte("3")),
		msg(4, "../up/./x", []byte("4")),
		msg(5, "sensors/hum id", []byte("5")),
	}
	objs, err := Options{Device: "d", Template: "{topic}/{first}-{last}"}.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		key     string
		indexes string
	}{
		{"sensors/temp/65e6c5a1beef-000000000001-65e6c5a1beef-000000000003.ndjson", "[0 2]"},
		{"sensors/hum%20id/65e6c5a1beef-000000000002-65e6c5a1beef-000000000005.ndjson", "[1 4]"},
		{"%2E%2E/up/%2E/x/65e6c5a1beef-000000000004-65e6c5a1beef-000000000004.ndjson", "[3]"},
	}
	if len(objs) != len(want) {
		t.Fatalf("got %d objects, want %d", len(objs), len(want))
	}
	for i, w := range want {
		if objs[i].Key != w.key || fmt.Sprint(objs[i].Indexes) != w.indexes {
			t.Errorf("object %d: got %s %v, want %s %s", i, objs[i].Key, objs[i].Indexes, w.key, w.indexes)
		}
		lines, err := Decode(objs[i].Body, "")
		if err != nil {
			t.Fatal(err)
		}
		var sub []sink.Message
		for _, j := range objs[i].Indexes {
			sub = append(sub, batch[j])
		}
		checkLines(t, lines, sub, "d")
	}
}

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, topic, value string }{
		{"sensors/temp-1_a.b", "sensors/temp-1_a.b", "sensors%2Ftemp-1_a.b"},
		{"a b", "a%20b", "a%20b"},
		{"é", "%C3%A9", "%C3%A9"},
		{"100%", "100%25", "100%25"},
		{"+/#", "%2B/%23", "%2B%2F%23"},
		{"a//b", "a//b", "a%2F%2Fb"},
		{"/lead", "/lead", "%2Flead"},
		{"trail/", "trail/", "trail%2F"},
		{".", "%2E", "%2E"},
		{"..", "%2E%2E", "%2E%2E"},
		{"a/./b/../c", "a/%2E/b/%2E%2E/c", "a%2F.%2Fb%2F..%2Fc"},
		{"...", "...", "..."},
		{".hidden/x.", ".hidden/x.", ".hidden%2Fx."},
		{"\x00\xff~", "%00%FF%7E", "%00%FF%7E"},
	} {
		if got := string(appendEscaped(nil, tt.in, true)); got != tt.topic {
			t.Errorf("topic %q: got %q, want %q", tt.in, got, tt.topic)
		}
		if got := string(appendEscaped(nil, tt.in, false)); got != tt.value {
			t.Errorf("value %q: got %q, want %q", tt.in, got, tt.value)
		}
	}
}

func TestLongTopicIsShortened(t *testing.T) {
	long := strings.Repeat("level/", 200) + "end" // 1203 bytes
	escaped := strings.Repeat("é", 400)           // 2400 bytes escaped
	batch := []sink.Message{msg(1, long, []byte("a")), msg(2, long+"2", []byte("b")), msg(3, escaped, []byte("c"))}
	o := Options{Device: "d", Template: "{topic}/{first}"}
	objs, err := o.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 3 {
		t.Fatalf("got %d objects", len(objs))
	}
	seen := map[string]bool{}
	for i, obj := range objs {
		// Up to two bytes short when the cut falls inside a %XX.
		if len(obj.Key) > MaxKeyBytes || len(obj.Key) < MaxKeyBytes-2 {
			t.Errorf("key %d has %d bytes, want %d or just under", i, len(obj.Key), MaxKeyBytes)
		}
		suffix := fmt.Sprintf("/65e6c5a1beef-%012d.ndjson", i+1)
		if !strings.HasSuffix(obj.Key, suffix) {
			t.Errorf("key %d lost its id: %s", i, obj.Key[len(obj.Key)-60:])
		}
		topic := strings.TrimSuffix(obj.Key, suffix)
		if k := strings.LastIndexByte(topic, '~'); k < 0 || len(topic)-k != hashLen {
			t.Errorf("key %d has no hash: %s", i, topic[len(topic)-30:])
		}
		seen[topic] = true
	}
	if len(seen) != 3 {
		t.Error("shortened topics collide")
	}
	// The escaped topic is cut at an escape boundary, so what is left still
	// percent-decodes.
	if k := strings.LastIndexByte(objs[2].Key, '~'); !strings.HasSuffix(objs[2].Key[:k], "%C3%A9") && !strings.HasSuffix(objs[2].Key[:k], "%C3") {
		t.Errorf("cut inside an escape: %s", objs[2].Key[k-10:k])
	}
	again, _ := o.Build(batch)
	for i := range objs {
		if again[i].Key != objs[i].Key {
			t.Error("shortened keys are not deterministic")
		}
	}

	_, err = Options{Prefix: strings.Repeat("p", 1100)}.Build(batch)
	if err == nil || !strings.Contains(err.Error(), "more than the 1024 the object stores accept") {
		t.Errorf("overlong prefix: got %v", err)
	}
}

func TestMessageMode(t *testing.T) {
	batch := []sink.Message{
		msg(1, "t", []byte(`{"a":1}`)),
		msg(2, "t", []byte("{\n  \"a\": 1\n}\n")),
		msg(3, "t", []byte("plain text")),
		msg(4, "t", []byte{}),
		msg(5, "t", []byte{0xff, 0x00}),
		msg(6, "t", []byte("\"s\xff\"")), // valid JSON syntax, not UTF-8
	}
	objs, err := Options{Mode: PerMessage, Device: "d"}.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"application/json", "application/json", "text/plain; charset=utf-8", "text/plain; charset=utf-8",
		"application/octet-stream", "application/octet-stream"}
	for i, obj := range objs {
		if obj.ContentType != want[i] || obj.ContentEncoding != "" {
			t.Errorf("message %d: got %q %q, want %q", i, obj.ContentType, obj.ContentEncoding, want[i])
		}
		if !bytes.Equal(obj.Body, batch[i].Payload) || fmt.Sprint(obj.Indexes) != fmt.Sprint([]int{i}) {
			t.Errorf("message %d: body or indexes differ", i)
		}
	}
	if _, err := (Options{Mode: PerMessage, Gzip: true}).Build(batch); err == nil {
		t.Error("gzip in message mode was accepted")
	}
}

func TestBuildEdges(t *testing.T) {
	objs, err := Options{}.Build(nil)
	if err != nil || objs != nil {
		t.Errorf("empty batch: got %v %v", objs, err)
	}
	_, err = Options{Mode: "stream"}.Build([]sink.Message{msg(1, "t", nil)})
	if err == nil || err.Error() != `objstore: mode "stream" is invalid: want batch or message` {
		t.Errorf("bad mode: got %v", err)
	}
	_, err = Options{Template: "{device}/{id}"}.Build([]sink.Message{msg(1, "t", nil)})
	want := `objstore: key template "{device}/{id}" is invalid: want a key template without {id} in batch mode, where an object holds many messages: use {first} and {last}`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	const head = `{"id":"1","topic":"t","received":"2024-03-05T07:08:09Z","device":"d"`
	for _, tt := range []struct{ body, want string }{
		{"not json\n", "objstore: line 1: invalid character 'o' in literal null (expecting 'u')"},
		{head + "}\n", `objstore: line 1: want exactly one of "json", "text" and "base64"`},
		{head + `,"text":"a","base64":""}`, `objstore: line 1: want exactly one of "json", "text" and "base64"`},
		{head + `,"json":1,"text":"a"}`, `objstore: line 1: "json" must be the last field`},
		{head + `,"base64":"!"}`, "objstore: line 1: base64: illegal base64 data at input byte 0"},
		{`{"id":"1","received":"2024-03-05T07:08:09Z","device":"d","text":""}`, `objstore: line 1: want exactly one of "topic" and "topic_base64"`},
		{`{"id":"1","topic":"t","received":"yesterday","device":"d","text":""}`, `objstore: line 1: received: parsing time "yesterday" as "2006-01-02T15:04:05.999999999Z07:00": cannot parse "yesterday" as "2006"`},
		{head + ",\"text\":\"\"}\n\n", `objstore: line 2: unexpected end of JSON input`},
	} {
		_, err := Decode([]byte(tt.body), "")
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q:\ngot  %v\nwant %s", tt.body, err, tt.want)
		}
	}
	if _, err := Decode([]byte{0x1f, 0x8b, 0, 0}, "gzip"); err == nil || !strings.HasPrefix(err.Error(), "objstore: gunzip: ") {
		t.Errorf("corrupt gzip: got %v", err)
	}
	lines, err := Decode([]byte(head+",\"json\":[1]}\r\n"+head+`,"text":"x"}`), "")
	if err != nil || len(lines) != 2 || string(lines[0].Payload) != "[1]" || string(lines[1].Payload) != "x" {
		t.Errorf("CRLF and missing final newline: got %v %v", lines, err)
	}
}

func TestConcurrentBuild(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			batch := []sink.Message{msg(g, "t", bigJSON(5000+g)), msg(g+1, "u", randomBytes(100, uint64(g)))}
			for range 20 {
				objs, err := Options{Gzip: g%2 == 0, Device: "d", Template: "{topic}/{first}"}.Build(batch)
				if err != nil {
					t.Error(err)
					return
				}
				for _, o := range objs {
					lines, err := Decode(o.Body, o.ContentEncoding)
					if err != nil || len(lines) != 1 || !bytes.Equal(lines[0].Payload, batch[o.Indexes[0]].Payload) {
						t.Errorf("goroutine %d: round trip failed: %v", g, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func TestVars(t *testing.T) {
	var got []string
	for _, v := range Vars("AWS_S3") {
		got = append(got, v.Name+"="+v.Default)
		if v.Doc == "" || v.Required || v.Secret {
			t.Errorf("%s: want a doc, not required, not secret", v.Name)
		}
	}
	want := "AWS_S3_OBJECT_MODE=batch AWS_S3_GZIP=false AWS_S3_PREFIX= AWS_S3_KEY_TEMPLATE="
	if strings.Join(got, " ") != want {
		t.Errorf("got %s\nwant %s", strings.Join(got, " "), want)
	}
}

func load(env map[string]string) (Options, error) {
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	l := config.NewLoader(lookup, Vars("AWS_S3"))
	o := Load(l, "AWS_S3", "dev-1")
	return o, l.Err()
}

func TestLoad(t *testing.T) {
	o, err := load(nil)
	if err != nil || o != (Options{Mode: Batch, Device: "dev-1"}) {
		t.Errorf("defaults: got %+v %v", o, err)
	}
	o, err = load(map[string]string{
		"AWS_S3_OBJECT_MODE": "Message", "AWS_S3_PREFIX": " raw/ ", "AWS_S3_KEY_TEMPLATE": "{topic}/{id}",
	})
	if err != nil || o != (Options{Mode: PerMessage, Prefix: "raw/", Template: "{topic}/{id}", Device: "dev-1"}) {
		t.Errorf("message mode: got %+v %v", o, err)
	}
	o, err = load(map[string]string{"AWS_S3_GZIP": "yes"})
	if err != nil || !o.Gzip {
		t.Errorf("gzip: got %+v %v", o, err)
	}
}

func TestLoadErrors(t *testing.T) {
	const batchList = "{device} {topic} {yyyy} {mm} {dd} {hh} {first} {last}"
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AWS_S3_OBJECT_MODE": "stream"},
			`AWS_S3_OBJECT_MODE="stream" is invalid: want one of batch, message`},
		{map[string]string{"AWS_S3_GZIP": "maybe"},
			`AWS_S3_GZIP="maybe" is invalid: want true or false`},
		{map[string]string{"AWS_S3_KEY_TEMPLATE": "{device}/{date}/{first}"},
			`AWS_S3_KEY_TEMPLATE="{device}/{date}/{first}" is invalid: want a key template using only the placeholders ` + batchList + ` ({date} is unknown)`},
		{map[string]string{"AWS_S3_OBJECT_MODE": "message", "AWS_S3_KEY_TEMPLATE": "{Device}/{id}"},
			`AWS_S3_KEY_TEMPLATE="{Device}/{id}" is invalid: want a key template using only the placeholders ` + batchList + ` {id} ({Device} is unknown)`},
		{map[string]string{"AWS_S3_KEY_TEMPLATE": "{device}/{first"},
			`AWS_S3_KEY_TEMPLATE="{device}/{first" is invalid: want a key template using only the placeholders ` + batchList + ` ("{first" is not closed)`},
		{map[string]string{"AWS_S3_KEY_TEMPLATE": "{device}/{id}"},
			`AWS_S3_KEY_TEMPLATE="{device}/{id}" is invalid: want a key template without {id} in batch mode, where an object holds many messages: use {first} and {last}`},
		{map[string]string{"AWS_S3_KEY_TEMPLATE": "{device}/{yyyy}/{last}"},
			`AWS_S3_KEY_TEMPLATE="{device}/{yyyy}/{last}" is invalid: want a key template containing {first}, or each batch would overwrite the last one's object`},
		{map[string]string{"AWS_S3_OBJECT_MODE": "message", "AWS_S3_KEY_TEMPLATE": "{device}/{topic}"},
			`AWS_S3_KEY_TEMPLATE="{device}/{topic}" is invalid: want a key template containing {id}, or each message would overwrite the last one's object`},
		{map[string]string{"AWS_S3_OBJECT_MODE": "message", "AWS_S3_GZIP": "true"},
			`AWS_S3_GZIP="true" is invalid: want false when AWS_S3_OBJECT_MODE is message, which stores each payload unchanged`},
		{map[string]string{"AWS_S3_GZIP": "maybe", "AWS_S3_KEY_TEMPLATE": "x"},
			`AWS_S3_GZIP="maybe" is invalid: want true or false` + "\n" +
				`AWS_S3_KEY_TEMPLATE="x" is invalid: want a key template containing {first}, or each batch would overwrite the last one's object`},
	} {
		_, err := load(tt.env)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%v:\ngot  %v\nwant %s", tt.env, err, tt.want)
		}
	}
}

func TestLoadRejectsAPrefixWithoutRoomForKeys(t *testing.T) {
	for _, n := range []int{MaxPrefix, MaxPrefix + 1} {
		env := map[string]string{"X_PREFIX": strings.Repeat("p", n)}
		l := config.NewLoader(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Vars("X"))
		Load(l, "X", "dev")
		if failed := l.Err() != nil && strings.Contains(l.Err().Error(), "X_PREFIX"); failed != (n > MaxPrefix) {
			t.Errorf("prefix of %d bytes: %v", n, l.Err())
		}
	}
}

func TestLoadRejectsATemplateWhoseFixedTextCannotFit(t *testing.T) {
	for _, c := range []struct {
		prefix, tmpl string
		ok           bool
	}{
		{"", strings.Repeat("k", 900) + "/{first}-{last}", true},
		{"", strings.Repeat("k", 1020) + "/{first}-{last}", false},
		{strings.Repeat("p", 500), strings.Repeat("k", 490) + "/{first}-{last}", true},
		{strings.Repeat("p", 500), strings.Repeat("k", 520) + "/{first}-{last}", false},
	} {
		env := map[string]string{"X_PREFIX": c.prefix, "X_KEY_TEMPLATE": c.tmpl}
		l := config.NewLoader(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, Vars("X"))
		Load(l, "X", "dev")
		if failed := l.Err() != nil && strings.Contains(l.Err().Error(), "X_KEY_TEMPLATE"); failed == c.ok {
			t.Errorf("prefix %d B, template %d B: %v", len(c.prefix), len(c.tmpl), l.Err())
		}
	}
}
