// End-to-end tests of the common pipeline through the real binary (with the
// file destination) and a real Mosquitto: the delivery promise before any
// cloud SDK is involved.
package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/filesink"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

type fileEnv struct {
	broker *harness.Mosquitto
	block  *harness.Block
	out    string
	fail   string
}

func newFileEnv(t *testing.T, brokerOpts harness.MosquittoOptions, env map[string]string) *fileEnv {
	t.Helper()
	bin := harness.Build(t, "testenv/cmd/filedest")
	e := &fileEnv{broker: harness.StartMosquitto(t, brokerOpts)}
	dir := t.TempDir()
	e.out = filepath.Join(dir, "delivered.ndjson")
	e.fail = filepath.Join(dir, "down")
	all := map[string]string{"FILE_SINK_PATH": e.out, "FILE_SINK_FAIL_FILE": e.fail}
	for k, v := range env {
		all[k] = v
	}
	e.block = harness.NewBlock(t, bin, e.broker, all)
	return e
}

func (e *fileEnv) delivered(t *testing.T) [][]byte {
	t.Helper()
	lines, err := filesink.Read(e.out)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = l.Bytes()
	}
	return out
}

// waitAll waits until every message 0..n-1 was delivered and returns the tally.
func (e *fileEnv) waitAll(t *testing.T, n, size int, timeout time.Duration) harness.Tally {
	t.Helper()
	var tally harness.Tally
	err := procs.WaitFor(context.Background(), timeout, func() error {
		tally = harness.Count(n, size, e.delivered(t))
		if tally.Lost > 0 {
			return fmt.Errorf("%s; missing e.g. %v", tally, tally.Missing)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("not everything delivered: %v", err)
	}
	if tally.Corrupt > 0 {
		t.Fatalf("corrupt deliveries: %s", tally)
	}
	return tally
}

func (e *fileEnv) setDown(t *testing.T, down bool) {
	t.Helper()
	if down {
		if err := os.WriteFile(e.fail, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Remove(e.fail); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

func TestDeliversEverythingByteExact(t *testing.T) {
	e := newFileEnv(t, harness.MosquittoOptions{}, nil)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", 200)
	pub.Publish(0, 2000, 0)
	tally := e.waitAll(t, 2000, 200, time.Minute)
	t.Logf("%s", tally)
	if tally.Duplicates != 0 {
		t.Errorf("duplicates without any fault: %s", tally)
	}
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready = %d %s", code, body)
	}
}

// Acceptance 1: SIGKILL five times during a 20,000-message stream.
func TestKill9DuringStream(t *testing.T) {
	const n, size, kills = 20000, 200, 5
	e := newFileEnv(t, harness.MosquittoOptions{}, map[string]string{"BATCH_MAX_MESSAGES": "200", "BATCH_CONCURRENCY": "4"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, 4000)
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		e.block.Kill()
		e.block.Start()
	}
	<-done
	tally := e.waitAll(t, n, size, 2*time.Minute)
	// Duplicates come two ways: a batch sent again after a crash (same id),
	// or a message the broker redelivered because the crash beat its PUBACK
	// (a new id: MQTT gives no way to recognise it).
	lines, _ := filesink.Read(e.out)
	byID := map[string]int{}
	for _, l := range lines {
		byID[l.ID]++
	}
	resent := 0
	for _, c := range byID {
		resent += c - 1
	}
	t.Logf("duplicates: %d resent batches (same id), %d broker redeliveries (new id)", resent, tally.Duplicates-resent)
	// At most the batches in flight per kill may be sent again:
	// BATCH_CONCURRENCY (4) x BATCH_MAX_MESSAGES (200), plus the batch whose
	// delivered mark was not yet persisted.
	// Plus what the broker redelivers: spooled, PUBACK not yet out, at most
	// its in-flight window (100) per kill.
	limit := kills * (5*200 + 100)
	t.Logf("kill -9 x%d: %s (publisher republished %d); duplicate limit %d", kills, tally, pub.Republish.Load(), limit)
	if tally.Duplicates > limit+int(pub.Republish.Load()) {
		t.Errorf("too many duplicates: %d > %d", tally.Duplicates, limit)
	}
}

// Acceptance 2: the destination fails for 30 s; the backlog stays, /ready
// says why, then it drains.
func TestDestinationOutage(t *testing.T) {
	const n, size = 3000, 200
	e := newFileEnv(t, harness.MosquittoOptions{}, map[string]string{"READY_MAX_UNSENT_AGE": "5s"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, 500, 0)
	e.waitAll(t, 500, size, time.Minute)
	e.setDown(t, true)
	down := time.Now()
	pub.Publish(500, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n-500 })
	// /ready turns 503 with the reason once the oldest message is too old.
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = e.block.Ready()
		if code == 503 && strings.Contains(body, "oldest undelivered message") && strings.Contains(body, "simulated outage") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/ready during the outage: %s", body)
	if got := len(e.delivered(t)); got != 500 {
		t.Fatalf("%d delivered during the outage", got)
	}
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	e.setDown(t, false)
	up := time.Now()
	tally := e.waitAll(t, n, size, time.Minute)
	t.Logf("after a 30 s outage: %s; drained in %s", tally, time.Since(up).Round(time.Millisecond))
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready after the outage = %d %s", code, body)
	}
}

// Acceptance 3: Mosquitto restarted mid-stream.
func TestBrokerRestart(t *testing.T) {
	const n, size = 6000, 200
	e := newFileEnv(t, harness.MosquittoOptions{Persistence: true}, nil)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, 3000)
	}()
	time.Sleep(700 * time.Millisecond)
	e.broker.Stop()
	time.Sleep(500 * time.Millisecond)
	e.broker.Start()
	<-done
	tally := e.waitAll(t, n, size, 2*time.Minute)
	t.Logf("broker restart: %s (publisher republished %d, block reconnects %v)", tally, pub.Republish.Load(), e.block.Metric("cloudblock_mqtt_reconnects_total"))
}

// Acceptance 4a: spool full with the block policy: nothing acknowledged
// beyond the budget, the broker holds the rest, nothing lost.
func TestSpoolFullBlock(t *testing.T) {
	const n, size = 4000, 1000
	e := newFileEnv(t, harness.MosquittoOptions{}, map[string]string{"BUFFER_MAX_BYTES": "1MiB", "BUFFER_FULL_POLICY": "block"})
	e.setDown(t, true)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	go pub.Publish(0, n, 0)
	e.block.WaitMetric("cloudblock_spool_full", 30*time.Second, func(v float64) bool { return v == 1 })
	if code, body := e.block.Ready(); code != 503 || !strings.Contains(body, "spool is full") {
		t.Errorf("/ready while full = %d %s", code, body)
	}
	if !e.block.Running() {
		t.Fatal("block exited while full")
	}
	if b := e.block.Metric("cloudblock_spool_bytes"); b > 1<<20 {
		t.Errorf("spool uses %v bytes, over its 1MiB budget", b)
	}
	e.setDown(t, false)
	tally := e.waitAll(t, n, size, 2*time.Minute)
	t.Logf("spool full (block): %s; full events %v", tally, e.block.Metric("cloudblock_spool_full_total"))
}

// Acceptance 4b: spool full with drop_oldest: the drops are counted, the
// process stays up, everything not dropped arrives.
func TestSpoolFullDropOldest(t *testing.T) {
	const n, size = 4000, 1000
	e := newFileEnv(t, harness.MosquittoOptions{}, map[string]string{"BUFFER_MAX_BYTES": "1MiB", "BUFFER_FULL_POLICY": "drop_oldest"})
	e.setDown(t, true)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, n, 0)
	e.block.WaitMetric("cloudblock_acknowledged_total", 30*time.Second, func(v float64) bool { return v >= n })
	dropped := e.block.Metric("cloudblock_dropped_total")
	if dropped <= 0 {
		t.Fatalf("nothing dropped")
	}
	if !strings.Contains(e.block.Logs(), "drop_oldest") {
		t.Error("drop not logged")
	}
	e.setDown(t, false)
	e.block.WaitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	tally := harness.Count(n, size, e.delivered(t))
	t.Logf("spool full (drop_oldest): %s, dropped %v", tally, dropped)
	if tally.Lost != int(dropped) || tally.Corrupt != 0 {
		t.Errorf("lost %d but dropped %v", tally.Lost, dropped)
	}
	// The newest messages are the ones kept.
	if harness.Count(n, size, e.delivered(t)).Missing[0] != 0 {
		t.Error("oldest message was not the first dropped")
	}
}

// Acceptance 5: a spool truncated mid-record and one with a flipped byte.
func TestDamagedSpoolRecovered(t *testing.T) {
	const n, size = 3000, 500
	e := newFileEnv(t, harness.MosquittoOptions{}, map[string]string{"BUFFER_MAX_BYTES": "4MiB"}) // 256KiB segments
	e.setDown(t, true)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n })
	e.block.Stop()
	segs, _ := filepath.Glob(filepath.Join(e.block.BufDir, "spool", "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %v", segs)
	}
	// Flip a byte in the middle of the first segment; cut the last mid-record.
	first, _ := os.ReadFile(segs[0])
	first[len(first)/2] ^= 0xff
	os.WriteFile(segs[0], first, 0o600)
	last := segs[len(segs)-1]
	if fi, _ := os.Stat(last); fi.Size() > 0 {
		os.Truncate(last, fi.Size()-100)
	} else {
		prev := segs[len(segs)-2]
		fi, _ := os.Stat(prev)
		os.Truncate(prev, fi.Size()-100)
	}
	e.setDown(t, false)
	e.block.Start()
	e.block.WaitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	tally := harness.Count(n, size, e.delivered(t))
	t.Logf("damaged spool: %s; damaged messages %v, bytes %v", tally, e.block.Metric("cloudblock_spool_damaged_messages"), e.block.Metric("cloudblock_spool_damaged_bytes"))
	if tally.Corrupt != 0 || tally.Duplicates != 0 {
		t.Errorf("corrupt or duplicated deliveries: %s", tally)
	}
	// Lost: exactly the flipped record and the cut one.
	if tally.Lost != 2 {
		t.Errorf("lost %d messages, want 2 (the damaged records): missing %v", tally.Lost, tally.Missing)
	}
	logs := e.block.Logs()
	if !strings.Contains(logs, "spool damage repaired") {
		t.Error("damage not logged")
	}
	aside, _ := filepath.Glob(filepath.Join(e.block.BufDir, "corrupt", "*"))
	if len(aside) == 0 {
		t.Error("damaged bytes not set aside")
	}
}

// A payload the destination refuses goes to the dead-letter store, counted,
// without blocking the rest.
func TestDeadLetter(t *testing.T) {
	e := newFileEnv(t, harness.MosquittoOptions{}, map[string]string{"FILE_SINK_REJECT_PREFIX": "BAD", "FILE_SINK_MAX_MESSAGE_BYTES": "10000"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", 100)
	pub.Publish(0, 100, 0)
	pub.PublishRaw("cloud-input", []byte("BAD payload"), false)
	pub.PublishRaw("cloud-input", make([]byte, 10001), false)
	pub.Publish(100, 200, 0)
	e.waitAll(t, 200, 100, time.Minute)
	e.block.WaitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == 2 })
	dead := e.block.DeadLetters(t)
	hasReason := func(s string) bool {
		return slices.ContainsFunc(dead, func(d harness.DeadLetter) bool { return strings.Contains(d.Reason, s) })
	}
	if !hasReason("payload refused") || !hasReason("exceeds the destination's limit") {
		t.Errorf("dead-letter store: %v", dead)
	}
}
