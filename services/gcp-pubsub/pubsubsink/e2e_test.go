package pubsubsink

// End-to-end tests through the real binary: Mosquitto -> gcp-pubsub ->
// pstest-server, read back with synchronous pulls.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/filesink"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

type e2e struct {
	broker *harness.Mosquitto
	ps     *emulators.PubSub
	block  *harness.Block
	sub    *puller
}

func newE2E(t *testing.T, env map[string]string) *e2e {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := harness.Build(t, "services/gcp-pubsub")
	e := &e2e{ps: emulators.StartPubSub(t), broker: harness.StartMosquitto(t, harness.MosquittoOptions{})}
	e.ps.CreateTopicSubscription(t, "e2e", "e2e-sub")
	e.sub = newPuller(e.ps, "e2e-sub")
	all := emulatorEnv(e.ps, "e2e")
	for k, v := range env {
		all[k] = v
	}
	e.block = harness.NewBlock(t, bin, e.broker, all)
	return e
}

// delivered pulls what arrived and returns every payload read so far.
func (e *e2e) delivered(t *testing.T) [][]byte {
	t.Helper()
	e.sub.pull(t)
	var out [][]byte
	for _, m := range e.sub.messages() {
		out = append(out, m.GetData())
	}
	return out
}

// waitAll waits until messages 0..n-1 of the publisher's numbering arrived.
func (e *e2e) waitAll(t *testing.T, n, size int, timeout time.Duration) harness.Tally {
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
	return tally
}

// Every payload arrives byte for byte: text, binary, empty and the largest
// allowed; one byte more is dead-lettered, counted and kept on disk.
func TestE2EByteExact(t *testing.T) {
	const n, size = 1000, 200
	// pstest takes 4 MiB a request; one batch in flight keeps the client
	// from putting the largest message and another batch in one request.
	e := newE2E(t, map[string]string{"BATCH_CONCURRENCY": "1"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, n/2, 0)

	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	largest := make([]byte, pstestMaxMessage)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range largest {
		largest[i] = byte(rng.UintN(256))
	}
	special := map[string][]byte{"binary": all, "empty": {}, "largest": largest, "text": []byte("plain ünïcödé\r\n")}
	for _, name := range []string{"binary", "empty", "largest", "text"} {
		pub.PublishRaw("cloud-input", special[name], false)
	}
	tooBig := append(bytes.Clone(largest), 'x')
	pub.PublishRaw("cloud-input", tooBig, false)
	pub.Publish(n/2, n, 0)

	tally := e.waitAll(t, n, size, time.Minute)
	t.Logf("%s", tally)
	if tally.Duplicates != 0 || tally.Corrupt != 4 { // the four special payloads are not numbered
		t.Errorf("want no duplicates and the 4 special payloads: %s", tally)
	}
	for name, want := range special {
		found := 0
		for _, m := range e.sub.messages() {
			if bytes.Equal(m.GetData(), want) && m.GetAttributes()["topic"] == "cloud-input" {
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

// SIGKILL five times during a 20,000-message stream: nothing is lost.
// Pub/Sub is at-least-once, so a batch in flight at a kill may arrive twice.
func TestE2EKill9(t *testing.T) {
	const n, size, kills = 20000, 200, 5
	e := newE2E(t, map[string]string{"BATCH_MAX_MESSAGES": "200"})
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
	t.Logf("kill -9 x%d: %s (publisher republished %d)", kills, tally, pub.Republish.Load())
	if tally.Corrupt != 0 {
		t.Errorf("corrupt: %s", tally)
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
	// The emulator keeps messages in memory only: read them before it stops.
	e.waitAll(t, before, size, time.Minute)
	e.ps.Stop()
	down := time.Now()
	pub.Publish(before, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n-before })
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = e.block.Ready()
		if code == 503 && strings.Contains(body, "oldest undelivered message") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/ready during the outage: %s", body)
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	e.ps.Start()
	up := time.Now()
	tally := e.waitAll(t, n, size, 2*time.Minute)
	t.Logf("after a 30 s outage: %s; drained in %s", tally, time.Since(up).Round(time.Millisecond))
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready after the outage = %d %s", code, body)
	}
}

// The block's own CPU per message delivered (MQTT in, spool, Pub/Sub out),
// from the process's rusage, beside the same for the file test destination
// in the same run, so what Pub/Sub costs can be told from what the machine
// is doing meanwhile. Logged, not asserted: benchmarks are `make bench`.
func TestE2ECPUPerMessage(t *testing.T) {
	const n, size = 20000, 200
	e := newE2E(t, nil)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	start := time.Now()
	pub.Publish(0, n, 0)
	e.waitAll(t, n, size, 2*time.Minute)
	ps := cpuOf(t, e.block, n, time.Since(start))

	out := filepath.Join(t.TempDir(), "delivered.ndjson")
	file := harness.NewBlock(t, harness.Build(t, "testenv/cmd/filedest"), e.broker, map[string]string{"FILE_SINK_PATH": out, "LOCAL_MQTT_CLIENT_ID": "file-baseline"})
	file.Start()
	fpub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	start = time.Now()
	fpub.Publish(0, n, 0)
	err := procs.WaitFor(context.Background(), 2*time.Minute, func() error {
		lines, err := filesink.Read(out)
		if err == nil && len(lines) < n {
			err = fmt.Errorf("%d of %d delivered", len(lines), n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	fs := cpuOf(t, file, n, time.Since(start))
	t.Logf("block CPU a message: gcp-pubsub %.1f µs, file destination %.1f µs (the common pipeline with a JSON file, fsync'd per batch, as destination)", ps, fs)
}

// cpuOf stops the block and returns its CPU time per message in µs.
func cpuOf(t *testing.T, b *harness.Block, n int, took time.Duration) float64 {
	p := b.Proc()
	b.Stop()
	st := p.Cmd.ProcessState
	cpu := st.UserTime() + st.SystemTime()
	t.Logf("%s: %d messages in %s, CPU %s (user %s, system %s)", filepath.Base(b.Bin), n, took.Round(time.Millisecond),
		cpu.Round(time.Millisecond), st.UserTime().Round(time.Millisecond), st.SystemTime().Round(time.Millisecond))
	return float64(cpu.Microseconds()) / float64(n)
}
