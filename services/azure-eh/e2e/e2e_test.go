// Integration tests through the real binary: Mosquitto -> azure-eh -> the
// fake Event Hubs (or the hub EH_TEST_CONNECTION_STRING names), read back
// with the SDK's consumer.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/services/azure-eh/internal/ehtest"
	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

type env struct {
	hub    *ehtest.Hub
	broker *harness.Mosquitto
	block  *harness.Block
	device string
	reader *ehtest.Reader
}

// newEnv starts a hub, Mosquitto and (not yet running) the block. Each test
// has its own device id, so events left on an external hub do not count.
func newEnv(t testing.TB, opts ehfake.Options, vars map[string]string) *env {
	t.Helper()
	bin := harness.Build(t, "services/azure-eh")
	e := &env{hub: ehtest.Start(t, opts), broker: harness.StartMosquitto(t, harness.MosquittoOptions{})}
	e.device = fmt.Sprintf("e2e-%s-%x", regexp.MustCompile(`\W`).ReplaceAllString(t.Name(), ""), time.Now().UnixNano())
	all := map[string]string{"AZURE_EH_CONNECTIONSTRING": e.hub.ConnectionString, "BALENA_DEVICE_UUID": e.device}
	for k, v := range vars {
		all[k] = v
	}
	e.block = harness.NewBlock(t, bin, e.broker, all)
	e.reader = ehtest.NewReader(t, e.hub)
	t.Cleanup(func() { e.hub.CheckNoKey(t, "the block's log", e.block.Logs()) })
	return e
}

var maxRE = regexp.MustCompile(`"msg":"connected to the event hub".*"max_message_bytes":(\d+)`)

// start runs the block, waits until it is subscribed and connected (what is
// published before its first subscription is not queued for it) and returns
// the payload limit it learned from the hub.
func (e *env) start(t testing.TB) int {
	t.Helper()
	e.block.Start()
	var n int
	err := procs.WaitFor(context.Background(), time.Minute, func() error {
		if code, body := e.block.Ready(); code != 200 {
			return fmt.Errorf("/ready %d %s", code, body)
		}
		m := maxRE.FindStringSubmatch(e.block.Logs())
		if m == nil {
			return fmt.Errorf("no limit logged")
		}
		n, _ = strconv.Atoi(m[1])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// delivered returns the bodies this test's block put in the hub.
func (e *env) delivered() [][]byte {
	e.reader.Poll(300 * time.Millisecond)
	return e.reader.Bodies(e.device)
}

// numbered keeps the payloads made by harness.Payload.
func numbered(bodies [][]byte) [][]byte {
	var out [][]byte
	for _, b := range bodies {
		if harness.Index(b) >= 0 {
			out = append(out, b)
		}
	}
	return out
}

// waitAll waits until messages 0..n-1 are all in the hub.
func (e *env) waitAll(t testing.TB, n, size int, timeout time.Duration) harness.Tally {
	t.Helper()
	var tally harness.Tally
	err := procs.WaitFor(context.Background(), timeout, func() error {
		tally = harness.Count(n, size, numbered(e.delivered()))
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

func TestByteExactWithDeadLetter(t *testing.T) {
	e := newEnv(t, ehfake.Options{MaxMessageSize: 64 << 10}, nil)
	e.hub.NeedFake(t, "sets a 64 KiB size limit")
	max := e.start(t)
	t.Logf("the block learned a limit of %d payload bytes from the 64 KiB hub", max)

	pub := harness.NewPublisher(t, e.broker, "cloud-input", 200)
	pub.Publish(0, 500, 0)
	all := make([]byte, 1024)
	for i := range all {
		all[i] = byte(i)
	}
	atMax := make([]byte, max)
	for i := range atMax {
		atMax[i] = byte(rand.N(256))
	}
	over := bytes.Repeat([]byte{0xee}, max+1)
	special := map[string][]byte{"binary": all, "empty": {}, "max-size": atMax}
	pub.PublishRaw("cloud-input", all, false)
	pub.PublishRaw("cloud-input", []byte{}, false)
	pub.PublishRaw("cloud-input", atMax, false)
	pub.PublishRaw("cloud-input", over, false)
	pub.Publish(500, 1000, 0)

	tally := e.waitAll(t, 1000, 200, time.Minute)
	if tally.Duplicates != 0 {
		t.Errorf("duplicates without any fault: %s", tally)
	}
	e.block.WaitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == 1 })
	bodies := e.delivered()
	for name, want := range special {
		n := 0
		for _, b := range bodies {
			if bytes.Equal(b, want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s payload (%d bytes) delivered %d times", name, len(want), n)
		}
	}
	for _, b := range bodies {
		if len(b) > max {
			t.Errorf("a %d-byte payload over the limit reached the hub", len(b))
		}
	}
	if n := len(bodies); n != 1000+len(special) {
		t.Errorf("%d events in the hub, want %d", n, 1000+len(special))
	}

	dead := e.block.DeadLetters(t)
	if !slices.ContainsFunc(dead, func(d harness.DeadLetter) bool { return bytes.Equal(d.Payload, over) }) ||
		!slices.ContainsFunc(dead, func(d harness.DeadLetter) bool { return strings.Contains(d.Reason, "exceeds the destination's limit") }) {
		t.Errorf("the max+1 payload is not in the dead-letter store: %v", dead)
	}

	// The properties a consumer sees.
	for _, ev := range e.reader.Events() {
		if ev.Properties[ehsink.PropDevice] != e.device {
			continue
		}
		id, _ := ev.Properties[ehsink.PropID].(string)
		recv, _ := ev.Properties[ehsink.PropReceived].(time.Time)
		if ev.Properties[ehsink.PropTopic] != "cloud-input" || id == "" || *ev.MessageID != id || time.Since(recv) > 10*time.Minute {
			t.Fatalf("event properties %v, message id %v", ev.Properties, *ev.MessageID)
		}
	}
}

// SIGKILL five times during a 20,000-message stream: nothing lost.
func TestKill9MidStream(t *testing.T) {
	const n, size, kills = 20000, 200, 5
	e := newEnv(t, ehfake.Options{}, map[string]string{"BATCH_MAX_MESSAGES": "200", "BATCH_CONCURRENCY": "4"})
	e.start(t)
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, 4000)
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for range kills {
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		e.block.Kill()
		e.block.Start()
	}
	<-done
	start := time.Now()
	tally := e.waitAll(t, n, size, 3*time.Minute)
	// At most the batches in flight at each kill are sent again.
	limit := kills*5*200 + int(pub.Republish.Load())
	t.Logf("kill -9 x%d: %s (publisher republished %d); drained %s after the last publish; duplicate limit %d",
		kills, tally, pub.Republish.Load(), time.Since(start).Round(time.Millisecond), limit)
	if tally.Duplicates > limit {
		t.Errorf("too many duplicates: %d > %d", tally.Duplicates, limit)
	}
}

// The hub is down for 30 s: the backlog stays spooled, /ready says why,
// then everything arrives.
func TestHubOutage(t *testing.T) {
	const n, size = 3000, 200
	e := newEnv(t, ehfake.Options{Partitions: 2}, map[string]string{"READY_MAX_UNSENT_AGE": "5s"})
	e.hub.NeedFake(t, "stops and restarts the hub")
	e.start(t)
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, 500, 0)
	e.waitAll(t, 500, size, time.Minute)

	e.hub.Fake.Stop()
	down := time.Now()
	pub.Publish(500, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n-500 })
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = e.block.Ready()
		if code == 503 && strings.Contains(body, "oldest undelivered message") && strings.Contains(body, "event hubs: ") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/ready during the outage: %s", body)
	e.hub.CheckNoKey(t, "/ready", body)

	time.Sleep(time.Until(down.Add(30 * time.Second)))
	e.hub.Fake.Restart()
	up := time.Now()
	tally := e.waitAll(t, n, size, 2*time.Minute)
	t.Logf("after a 30 s outage: %s; drained in %s", tally, time.Since(up).Round(time.Millisecond))
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready after the outage = %d %s", code, body)
	}
}
