package blocktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"google.golang.org/api/iterator"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/testenv/filesink"
	"github.com/cloud-block/cloud-block/testenv/harness"
)

// clockSeamTag builds a block whose wall clock a test shifts
// (common/clock/seam.go: CLOCK_SEAM_FILE holds the offset).
const clockSeamTag = "clockseam"

func init() {
	scenarios = append(scenarios,
		scenario{name: "clock-1970", kind: "clock", run: clock1970},
		scenario{name: "clock-restart", kind: "clock", run: clockRestart},
		scenario{name: "clock-jump", kind: "clock", run: clockJump})
}

// setClock makes the seam's wall clock read at now+offset.
func setClock(t testing.TB, file string, offset time.Duration) {
	t.Helper()
	tmp := file + ".new"
	if err := os.WriteFile(tmp, []byte(offset.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// clock-1970: the block starts with its clock in 1970, as a Raspberry Pi
// without a real-time clock boots before NTP sets it. It receives and
// spools every message but sends nothing (it does not even connect: that
// signs too), /ready says "clock not synchronised" and the metrics count
// it. Then the clock is set right (a step of 56 years): after the clock has
// settled the block delivers everything, nothing lost; no object key names
// 1970 (the keys of messages received before use the time of sending), and
// each of those messages is marked "clock":"unsynchronised" in its line or
// metadata, with a receive time in 1970, while those received after carry
// their true time unmarked.
func clock1970(t *testing.T, tg *target, sc Scale) {
	file := filepath.Join(t.TempDir(), "clock-offset")
	setClock(t, file, time.Unix(300, 0).Sub(time.Now()))
	r := newRig(t, tg, rigOpts{tags: clockSeamTag, env: map[string]string{"CLOCK_SEAM_FILE": file}})
	r.start()
	body := r.waitReady(503, 30*time.Second, "clock not synchronised", "before this build's date")
	if v := r.metric("cloudblock_clock_synchronised"); v != 0 {
		t.Errorf("cloudblock_clock_synchronised = %v in 1970", v)
	}
	if v := r.metric("cloudblock_clock_unsynchronised_total"); v < 1 {
		t.Errorf("cloudblock_clock_unsynchronised_total = %v in 1970", v)
	}

	const n, later, size = 300, 50, 200
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, n, 0)
	// All received and spooled (PUBACKed: the publisher returned), none sent.
	r.waitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n })
	r.waitMetric("cloudblock_received_unsynchronised_total", 10*time.Second, func(v float64) bool { return v == n })
	for name, want := range map[string]float64{"cloudblock_delivered_total": 0, "cloudblock_sink_errors_total": 0, "cloudblock_destination_connected": 0} {
		if v := r.metric(name); v != want {
			t.Errorf("%s = %v in 1970, want %v: the block must not sign anything", name, v, want)
		}
	}
	if got := numbered(r.be.read(t)); len(got) > 0 {
		t.Errorf("%d messages reached the destination in 1970", len(got))
	}
	if !r.logContains("not sending: the clock cannot be trusted", 5*time.Second) {
		t.Error("no log line saying the block does not send")
	}
	r.checkLive() // not ready, but live: a restart would not help

	// NTP sets the clock: it is trusted once it has settled.
	setClock(t, file, 0)
	setAt := time.Now()
	tl, _ := r.waitRange(0, n, size, 2*time.Minute, true)
	first := time.Since(setAt)
	r.waitReady(200, time.Minute)
	if v := r.metric("cloudblock_clock_jumps_total"); v < 1 {
		t.Errorf("cloudblock_clock_jumps_total = %v after the clock was set", v)
	}
	pub.Publish(n, n+later, 0)
	tl2, _ := r.waitRange(n, n+later, size, time.Minute, true)
	tl.Published += tl2.Published
	tl.Distinct += tl2.Distinct
	tl.Copies += tl2.Copies
	tl.Lost += tl2.Lost

	keys, marks := checkClockMarks(t, r, n+later, func(i int) bool { return i < n })
	var ready struct{ Reasons []string }
	if err := json.Unmarshal([]byte(body), &ready); err != nil || len(ready.Reasons) == 0 {
		t.Errorf("/ready in 1970: %v: %s", err, body)
		ready.Reasons = []string{body}
	}
	note := fmt.Sprintf("%d spooled in 1970, none sent; delivered within %s of the clock being set (10 s to settle); %s; /ready said %.90s",
		n, first.Round(100*time.Millisecond), marks, ready.Reasons[0])
	t.Logf("%s clock-1970: %s; %s; keys e.g. %v", tg.name, tl, note, keys)
	r.report("clock-1970", tl, 0, note)
}

// checkClockMarks checks what the destination holds of messages 0..to-1:
// those untrusted says were received before the clock was set, the others
// with the clock right.
func checkClockMarks(t *testing.T, r *rig, to int, untrusted func(int) bool) (keys []string, summary string) {
	early := 0
	for i := range to {
		if untrusted(i) {
			early++
		}
	}
	t.Helper()
	switch be := r.be.(type) {
	case *fileBackend:
		// The test destination writes each message's receive time as it is.
		lines := fileLines(t, be)
		bad := 0
		for _, l := range lines {
			i := harness.Index(l.payload)
			if i < 0 {
				continue
			}
			if untrusted(i) != (l.received.Year() == 1970) {
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%d receive times wrong: want 1970 for the messages received before the clock was set, the true time after", bad)
		}
		return nil, fmt.Sprintf("receive times 1970 before the clock was set, true after (%d checked)", len(lines))
	case objectLister:
		objs := be.objects(t)
		marked, unmarked, wrong := 0, 0, 0
		today := time.Now().UTC().Format("2006/01/02")
		for _, o := range objs {
			keys = append(keys, o.key)
			if strings.Contains(o.key, "1970") {
				t.Errorf("object %s is named by 1970", o.key)
			}
			if !strings.Contains(o.key, "/"+today[:4]+"/") {
				t.Errorf("object %s is not dated by the time of sending (%s)", o.key, today)
			}
			for _, l := range o.lines {
				i := harness.Index(l.Payload)
				if i < 0 {
					continue
				}
				in1970 := l.Received.Year() == 1970
				switch {
				case untrusted(i) && l.ClockUnsynchronised && in1970:
					marked++
				case !untrusted(i) && !l.ClockUnsynchronised && !in1970:
					unmarked++
				default:
					wrong++
					if wrong <= 3 {
						t.Errorf("message %d in %s: received %s, clock mark %v", i, o.key, l.Received, l.ClockUnsynchronised)
					}
				}
			}
		}
		if marked < early || unmarked < to-early || wrong > 0 {
			t.Errorf("%d messages marked \"clock\":%q with a 1970 receive time (want %d), %d unmarked with their true time (want %d), %d wrong",
				marked, objstore.ClockUnsynchronised, early, unmarked, to-early, wrong)
		}
		if len(keys) > 3 {
			keys = keys[:3]
		}
		return keys, fmt.Sprintf("%d objects, none named 1970; %d marked clock=unsynchronised, %d unmarked", len(objs), marked, unmarked)
	default:
		return nil, "delivered with 1970 receive times (no mark of its own at this destination)"
	}
}

// clock-restart: messages spooled in 1970 by a block that is then
// stopped; it starts again with the clock right (NTP set it meanwhile) and
// delivers them from its spool, marked, keyed by the time of sending.
func clockRestart(t *testing.T, tg *target, sc Scale) {
	file := filepath.Join(t.TempDir(), "clock-offset")
	setClock(t, file, time.Unix(300, 0).Sub(time.Now()))
	r := newRig(t, tg, rigOpts{tags: clockSeamTag, env: map[string]string{"CLOCK_SEAM_FILE": file}})
	r.start()
	const n, later, size = 200, 20, 200
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, n, 0)
	r.waitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n })
	r.block.Stop()
	setClock(t, file, 0)
	r.start()
	tl, _ := r.waitRange(0, n, size, 2*time.Minute, true)
	r.waitReady(200, time.Minute)
	pub.Publish(n, n+later, 0)
	tl2, _ := r.waitRange(n, n+later, size, time.Minute, true)
	tl.Published += tl2.Published
	tl.Distinct += tl2.Distinct
	tl.Copies += tl2.Copies
	tl.Lost += tl2.Lost
	keys, marks := checkClockMarks(t, r, n+later, func(i int) bool { return i < n })
	note := fmt.Sprintf("%d spooled in 1970, the block stopped and started with the clock right: all delivered from the spool; %s", n, marks)
	t.Logf("%s clock-restart: %s; %s; keys e.g. %v", tg.name, tl, note, keys)
	r.report("clock-restart", tl, 0, note)
}

// clock-jump: a right clock stepped back an hour (CLOCK_MAX_JUMP is 1m):
// /ready says so and nothing is sent until the clock has run 10 s without
// another step; messages received meanwhile are marked, those before and
// after are not, and all are delivered.
func clockJump(t *testing.T, tg *target, sc Scale) {
	file := filepath.Join(t.TempDir(), "clock-offset")
	setClock(t, file, 0)
	r := newRig(t, tg, rigOpts{tags: clockSeamTag, env: map[string]string{"CLOCK_SEAM_FILE": file}})
	r.start()
	const a, b, c, size = 50, 100, 150, 200
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, a, 0)
	tl, _ := r.waitRange(0, a, size, time.Minute, true)
	setClock(t, file, -time.Hour)
	// Published once the block has seen the step (the seam reads its file
	// every 50 ms, the block samples every second): well within the 10 s
	// the clock needs to settle.
	body := r.waitReady(503, 30*time.Second, "clock not synchronised", "stepped by -1h")
	pub.Publish(a, b, 0)
	if held := countRange(a, b, size, numbered(r.be.read(t))); held.Distinct > 0 {
		t.Errorf("%d messages sent while the clock settled after the step", held.Distinct)
	}
	if v := r.metric("cloudblock_clock_jumps_total"); v < 1 {
		t.Errorf("cloudblock_clock_jumps_total = %v after the step", v)
	}
	tl2, _ := r.waitRange(a, b, size, time.Minute, true)
	r.waitReady(200, time.Minute)
	pub.Publish(b, c, 0)
	tl3, _ := r.waitRange(b, c, size, time.Minute, true)
	for _, x := range []tally{tl2, tl3} {
		tl.Published += x.Published
		tl.Distinct += x.Distinct
		tl.Copies += x.Copies
		tl.Lost += x.Lost
	}
	keys, marks := checkClockMarks(t, r, c, func(i int) bool { return i >= a && i < b })
	var ready struct{ Reasons []string }
	if json.Unmarshal([]byte(body), &ready) != nil || len(ready.Reasons) == 0 {
		ready.Reasons = []string{body}
	}
	note := fmt.Sprintf("clock stepped back 1 h: %d received while it settled; %s; /ready said %.110s", b-a, marks, ready.Reasons[0])
	t.Logf("%s clock-jump: %s; %s; keys e.g. %v", tg.name, tl, note, keys)
	r.report("clock-jump", tl, 0, note)
}

type fileLine struct {
	payload  []byte
	received time.Time
}

func fileLines(t *testing.T, be *fileBackend) []fileLine {
	t.Helper()
	var out []fileLine
	b, err := os.ReadFile(be.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var l filesink.Line
		if json.Unmarshal([]byte(line), &l) == nil {
			out = append(out, fileLine{payload: l.Bytes(), received: l.Received})
		}
	}
	return out
}

// storedObject is one object as a consumer reads it: its key and its
// messages' lines (a message-mode object's from its metadata and body).
type storedObject struct {
	key   string
	lines []objstore.Line
}

// objectLister lists a bucket's objects with their lines.
type objectLister interface {
	objects(t testing.TB) []storedObject
}

func decodeObject(t testing.TB, key string, body []byte, encoding string, md map[string]string) storedObject {
	if strings.HasSuffix(key, ".ndjson") || strings.HasSuffix(key, ".ndjson.gz") {
		lines, err := objstore.Decode(body, encoding)
		if err != nil {
			t.Fatalf("object %q: %v", key, err)
		}
		return storedObject{key: key, lines: lines}
	}
	l, err := objstore.DecodeMetadata(md)
	if err != nil {
		t.Fatalf("object %q: %v", key, err)
	}
	l.Payload = body
	return storedObject{key: key, lines: []objstore.Line{l}}
}

func (b *gcsBackend) objects(t testing.TB) []storedObject {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []storedObject
	it := b.c.Bucket(b.bucket).Objects(ctx, nil)
	for {
		o, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatalf("listing %s: %v", b.bucket, err)
		}
		rd, err := b.c.Bucket(b.bucket).Object(o.Name).ReadCompressed(true).NewReader(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", o.Name, err)
		}
		body, err := readAllBody(rd)
		if err != nil {
			t.Fatalf("read %s: %v", o.Name, err)
		}
		out = append(out, decodeObject(t, o.Name, body, o.ContentEncoding, o.Metadata))
	}
}

func (b *s3Backend) objects(t testing.TB) []storedObject {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := b.conn.Client()
	var out []storedObject
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("listing %s: %v", b.bucket, err)
		}
		for _, o := range page.Contents {
			got, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: o.Key})
			if err != nil {
				t.Fatalf("get %s: %v", aws.ToString(o.Key), err)
			}
			body, err := readAllBody(got.Body)
			if err != nil {
				t.Fatalf("get %s: %v", aws.ToString(o.Key), err)
			}
			out = append(out, decodeObject(t, aws.ToString(o.Key), body, aws.ToString(got.ContentEncoding), got.Metadata))
		}
	}
	return out
}

func (b *blobBackend) objects(t testing.TB) []storedObject {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []storedObject
	pager := b.c.NewListBlobsFlatPager(b.ctr, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("listing %s: %v", b.ctr, err)
		}
		for _, it := range page.Segment.BlobItems {
			resp, err := b.c.DownloadStream(ctx, b.ctr, *it.Name, nil)
			if err != nil {
				t.Fatalf("download %s: %v", *it.Name, err)
			}
			body, err := readAllBody(resp.Body)
			if err != nil {
				t.Fatalf("download %s: %v", *it.Name, err)
			}
			enc := ""
			if resp.ContentEncoding != nil {
				enc = *resp.ContentEncoding
			}
			md := map[string]string{}
			for k, v := range resp.Metadata {
				md[k] = *v
			}
			out = append(out, decodeObject(t, *it.Name, body, enc, md))
		}
	}
	return out
}
