package gcssink

// End-to-end tests through the real binary: Mosquitto -> gcp-storage ->
// fake-gcs-server, read back by listing and decoding the objects.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// e2eMaxMessage is the block's payload limit in these tests.
const e2eMaxMessage = 1 << 20

type e2e struct {
	broker *harness.Mosquitto
	gcs    *emulators.GCS
	block  *harness.Block
}

func newE2E(t *testing.T, env map[string]string) *e2e {
	t.Helper()
	e := &e2e{gcs: startGCS(t)}
	bin := harness.Build(t, "services/gcp-storage")
	e.broker = harness.StartMosquitto(t, harness.MosquittoOptions{})
	e.gcs.CreateBucket(t, "e2e")
	all := map[string]string{
		"GCP_STORAGE_BUCKET":            "e2e",
		"STORAGE_EMULATOR_HOST":         e.gcs.Host,
		"GCP_STORAGE_MAX_MESSAGE_BYTES": fmt.Sprint(e2eMaxMessage),
		// Objects every half second rather than every minute, to keep the
		// tests short; a backlog is still written in full objects.
		"BATCH_MAX_WAIT": "500ms",
	}
	for k, v := range env {
		all[k] = v
	}
	e.block = harness.NewBlock(t, bin, e.broker, all)
	return e
}

// lines decodes every object of the bucket, in no particular order.
func (e *e2e) lines(t *testing.T) []objstore.Line {
	t.Helper()
	var out []objstore.Line
	for _, o := range listObjects(t, e.gcs, "e2e") {
		ls, err := objstore.Decode(o.body, o.contentEncoding)
		if err != nil {
			t.Fatalf("object %s: %v", o.key, err)
		}
		out = append(out, ls...)
	}
	return out
}

// waitAll waits until messages 0..n-1 of the publisher's numbering arrived
// and returns the tally and every line read.
func (e *e2e) waitAll(t *testing.T, n, size int, timeout time.Duration) (harness.Tally, []objstore.Line) {
	t.Helper()
	var tally harness.Tally
	var lines []objstore.Line
	err := procs.WaitFor(context.Background(), timeout, func() error {
		lines = e.lines(t)
		payloads := make([][]byte, len(lines))
		for i, l := range lines {
			payloads[i] = l.Payload
		}
		tally = harness.Count(n, size, payloads)
		if tally.Lost > 0 {
			return fmt.Errorf("%s; missing e.g. %v", tally, tally.Missing)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("not everything delivered: %v", err)
	}
	return tally, lines
}

// duplicateIDs counts lines whose id was seen before.
func duplicateIDs(lines []objstore.Line) int {
	seen := map[string]bool{}
	dups := 0
	for _, l := range lines {
		if seen[l.ID] {
			dups++
		}
		seen[l.ID] = true
	}
	return dups
}

// Every payload arrives byte for byte: text, binary, empty and the largest
// allowed; one byte more is dead-lettered, counted and kept on disk.
func TestE2EByteExact(t *testing.T) {
	const n, size = 1000, 200
	e := newE2E(t, nil)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, n/2, 0)

	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	largest := make([]byte, e2eMaxMessage)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range largest {
		largest[i] = byte(rng.UintN(256))
	}
	special := map[string][]byte{"binary": all, "empty": {}, "largest": largest, "text": []byte("plain ünïcödé\r\n"), "json": []byte(`{"t": 21.5}`)}
	for _, name := range []string{"binary", "empty", "largest", "text", "json"} {
		pub.PublishRaw("cloud-input", special[name], false)
	}
	tooBig := append(bytes.Clone(largest), 'x')
	pub.PublishRaw("cloud-input", tooBig, false)
	pub.Publish(n/2, n, 0)

	tally, lines := e.waitAll(t, n, size, time.Minute)
	t.Logf("%s; %d objects", tally, len(listObjects(t, e.gcs, "e2e")))
	if tally.Duplicates != 0 || tally.Corrupt != len(special) || duplicateIDs(lines) != 0 {
		t.Errorf("want no duplicates and the %d special payloads: %s, %d duplicate ids", len(special), tally, duplicateIDs(lines))
	}
	for name, want := range special {
		found := 0
		for _, l := range lines {
			if bytes.Equal(l.Payload, want) && l.Topic == "cloud-input" && l.Device == "test-device" {
				found++
			}
		}
		if found != 1 {
			t.Errorf("%s payload (%d bytes) arrived %d times", name, len(want), found)
		}
	}
	e.block.WaitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == 1 })
	if dead := e.block.DeadLetters(t); len(dead) != 1 || !bytes.Equal(dead[0].Payload, tooBig) || !strings.Contains(dead[0].Reason, "exceeds the destination's limit") {
		t.Errorf("dead-letter store holds %v, want the %d-byte payload with reason \"exceeds the destination's limit\"", dead, len(tooBig))
	}
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready = %d %s", code, body)
	}
}

// SIGKILL five times during a 20,000-message stream: nothing is lost and no
// line is written twice, as a batch resent after a crash lands on its
// object, already written or not.
//
// The same payload may still arrive under two ids: a kill between the
// spool's fsync and the PUBACK makes the broker deliver the message again,
// and the block takes it as a new one. That happens before any destination
// and is counted apart.
func TestE2EKill9(t *testing.T) {
	const n, size, kills = 20000, 200, 5
	e := newE2E(t, nil)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, 4000)
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(500+rng.IntN(700)) * time.Millisecond)
		e.block.Kill()
		e.block.Start()
	}
	<-done
	tally, lines := e.waitAll(t, n, size, 2*time.Minute)
	t.Logf("kill -9 x%d: %d lines in %d objects, %d duplicate lines (same id); payloads: %s, the duplicates re-delivered by the broker (publisher republished %d)",
		kills, len(lines), len(listObjects(t, e.gcs, "e2e")), duplicateIDs(lines), tally, pub.Republish.Load())
	if tally.Corrupt != 0 || duplicateIDs(lines) != 0 {
		t.Errorf("want zero duplicate lines: %d duplicate ids, %s", duplicateIDs(lines), tally)
	}
}

// The emulator is down for 30 s: the backlog stays in the spool, /ready
// says so, and it drains once the emulator is back.
func TestE2EEmulatorOutage(t *testing.T) {
	const n, size, before = 3000, 200, 500
	e := newE2E(t, map[string]string{"READY_MAX_UNSENT_AGE": "5s"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, before, 0)
	// The emulator keeps objects in memory only: read them before it stops.
	_, first := e.waitAll(t, before, size, time.Minute)
	e.gcs.Stop()
	down := time.Now()
	pub.Publish(before, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n-before })
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = e.block.Ready()
		if code == 503 && strings.Contains(body, "oldest undelivered message") && strings.Contains(body, "connection refused") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/ready during the outage: %s", body)
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	e.gcs.Start()
	up := time.Now()
	var tally harness.Tally
	var after []objstore.Line
	err = procs.WaitFor(context.Background(), 2*time.Minute, func() error {
		after = e.lines(t)
		payloads := make([][]byte, 0, len(first)+len(after))
		for _, l := range append(append([]objstore.Line(nil), first...), after...) {
			payloads = append(payloads, l.Payload)
		}
		tally = harness.Count(n, size, payloads)
		if tally.Lost > 0 {
			return fmt.Errorf("%s; missing e.g. %v", tally, tally.Missing)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("not everything delivered: %v", err)
	}
	t.Logf("after a 30 s outage: %s; drained in %s", tally, time.Since(up).Round(time.Millisecond))
	if tally.Duplicates != 0 {
		t.Errorf("duplicates: %s", tally)
	}
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready after the outage = %d %s", code, body)
	}
}
