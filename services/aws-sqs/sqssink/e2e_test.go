package sqssink

// Integration tests through the real binary: Mosquitto -> cloud-block-aws-sqs
// -> sqsfake (or the emulator SQS_TEST_ENDPOINT names), read back with
// ReceiveMessage + DeleteMessageBatch and decoded as the README says.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// testDeviceE2E is the BALENA_DEVICE_UUID harness.NewBlock sets.
const testDeviceE2E = "test-device"

type blockEnv struct {
	b      *backend
	queue  string
	broker *harness.Mosquitto
	block  *harness.Block
	r      *reader
}

func newBlockEnv(t testing.TB, fifo bool, env map[string]string) *blockEnv {
	t.Helper()
	bin := harness.Build(t, "services/aws-sqs")
	b := newBackend(t)
	e := &blockEnv{b: b, queue: b.createQueue(t, fifo, nil)}
	e.r = b.reader(t, e.queue)
	e.broker = harness.StartMosquitto(t, harness.MosquittoOptions{})
	all := b.env(e.queue)
	// Never let the SDK's default chain probe the EC2 metadata address.
	all["AWS_EC2_METADATA_DISABLED"] = "true"
	for k, v := range env {
		all[k] = v
	}
	e.block = harness.NewBlock(t, bin, e.broker, all)
	return e
}

// start runs the block and waits until it has subscribed: the broker keeps
// messages for its session from then on, not before.
func (e *blockEnv) start(t testing.TB) {
	t.Helper()
	e.block.Start()
	e.block.WaitMetric("cloudblock_mqtt_connected", 30*time.Second, func(v float64) bool { return v == 1 })
}

func payloads(rs []received) [][]byte {
	out := make([][]byte, len(rs))
	for i, r := range rs {
		out[i] = r.Payload
	}
	return out
}

// waitAll reads until messages 0..n-1 all arrived, then on until the queue
// stays empty for two polls, so late duplicates are counted too.
func (e *blockEnv) waitAll(t testing.TB, n, size int, timeout time.Duration) harness.Tally {
	t.Helper()
	e.r.until(t, timeout, func(rs []received) error {
		if tally := harness.Count(n, size, payloads(rs)); tally.Lost > 0 {
			return fmt.Errorf("%s; missing e.g. %v", tally, tally.Missing)
		}
		return nil
	})
	for quiet := 0; quiet < 2; {
		k, err := e.r.poll(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if quiet++; k > 0 {
			quiet = 0
		}
	}
	tally := harness.Count(n, size, payloads(e.r.received()))
	if tally.Corrupt > 0 {
		t.Fatalf("corrupt deliveries: %s", tally)
	}
	return tally
}

// idDuplicates counts messages whose cloudblock.id was read more than once:
// one spooled message stored twice by the sink.
func idDuplicates(rs []received) int {
	seen := map[string]bool{}
	d := 0
	for _, r := range rs {
		if seen[r.ID] {
			d++
		}
		seen[r.ID] = true
	}
	return d
}

func binaryPayload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 7)
	}
	return p
}

// Byte-exact read-back of text, binary, empty and the largest payloads that
// fit (as text and as base64); one byte more is dead-lettered, and the
// messages around it are delivered.
func TestBlockByteExact(t *testing.T) {
	e := newBlockEnv(t, false, nil)
	e.start(t)
	maxSize := e.b.maxSize(t, e.queue)
	// Spool ids are 25 characters: 12 hex digits, '-', 12 digits.
	text := maxText(maxSize, "cloud-input", 25, testDeviceE2E)
	bin := (text - len(AttrEncoding) - len(typeString) - len(EncodingBase64)) / 4 * 3
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	ok := [][]byte{[]byte(`{"sensor":"t","v":21.5}`), all, {}, {0}, []byte("ünïcödé\r\n"), bytes.Repeat([]byte("m"), text), binaryPayload(bin)}
	over := [][]byte{bytes.Repeat([]byte("m"), text+1), binaryPayload(bin + 1)}
	pub := harness.NewPublisher(t, e.broker, "cloud-input", 0)
	for i, p := range ok {
		pub.PublishRaw("cloud-input", p, false)
		if i < len(over) {
			pub.PublishRaw("cloud-input", over[i], false)
		}
	}
	rs := e.r.until(t, time.Minute, func(rs []received) error {
		if len(rs) < len(ok) {
			return fmt.Errorf("%d of %d read", len(rs), len(ok))
		}
		return nil
	})
	e.block.WaitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == 2 })
	if k, _ := e.r.poll(context.Background()); k > 0 || len(rs) != len(ok) {
		t.Errorf("read %d messages, want %d", len(rs)+k, len(ok))
	}
	for i, p := range ok {
		found := false
		for _, r := range rs {
			if bytes.Equal(r.Payload, p) {
				found = true
				if r.Topic != "cloud-input" || r.Device != testDeviceE2E || len(r.ID) != 25 {
					t.Errorf("payload %d: attributes topic %q device %q id %q", i, r.Topic, r.Device, r.ID)
				}
				if at, err := time.Parse(ReceivedLayout, r.Received); err != nil || time.Since(at) > 5*time.Minute {
					t.Errorf("payload %d: received %q", i, r.Received)
				}
			}
		}
		if !found {
			t.Errorf("payload %d (%d bytes) not read back byte-exact", i, len(p))
		}
	}
	dead := e.block.DeadLetters(t)
	if len(dead) != 2 {
		t.Fatalf("%d dead-letter entries, want 2", len(dead))
	}
	for i, d := range dead {
		if p := d.Payload; !bytes.Equal(p, over[0]) && !bytes.Equal(p, over[1]) {
			t.Errorf("dead letter %d: payload of %d bytes is not one of the oversized ones", i, len(p))
		}
		if !strings.Contains(d.Reason, fmt.Sprintf("exceeds the queue's MaximumMessageSize of %d bytes", maxSize)) {
			t.Errorf("dead letter %d: reason %q", i, d.Reason)
		}
	}
	t.Logf("MaximumMessageSize %d: largest text payload %d, largest binary %d; both +1 dead-lettered", maxSize, text, bin)
}

// killDuringStream publishes n messages while the block is killed with
// SIGKILL kills times, and returns the tally once everything arrived.
func killDuringStream(t *testing.T, e *blockEnv, n, size, kills int) (harness.Tally, *harness.Publisher) {
	t.Helper()
	e.start(t)
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, 2000)
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for range kills {
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		e.block.Kill()
		e.block.Start()
	}
	<-done
	return e.waitAll(t, n, size, 2*time.Minute), pub
}

// mqttRedeliveries bounds the copies that get a new id: the broker sends
// again what it had not seen acknowledged when the block died, and the spool
// may already hold some of those (stored, but the PUBACK not yet out). This
// is the common layer's at-least-once from MQTT, not the sink's doing; at
// most max_inflight_messages (1000) a kill.
const mqttRedeliveries = 1000

// FIFO: a batch sent again after kill -9 carries the same deduplication
// ids, so SQS stores no message twice.
func TestBlockKill9FIFO(t *testing.T) {
	const n, size, kills = 4000, 200, 4
	e := newBlockEnv(t, true, nil)
	tally, pub := killDuringStream(t, e, n, size, kills)
	rs := e.r.received()
	same := idDuplicates(rs)
	t.Logf("FIFO, kill -9 x%d: %s; stored twice under the same id: %d; copies under a new id (MQTT redeliveries): %d; publisher republished %d",
		kills, tally, same, tally.Duplicates-same, pub.Republish.Load())
	if same != 0 {
		t.Errorf("%d messages stored twice despite their deduplication ids", same)
	}
	if tally.Duplicates > kills*mqttRedeliveries+int(pub.Republish.Load()) {
		t.Errorf("%d duplicates", tally.Duplicates)
	}
	// One group, one batch at a time: the queue holds the spool's order.
	for i := 1; i < len(rs); i++ {
		if rs[i].ID <= rs[i-1].ID || rs[i].Group != testDeviceE2E {
			t.Fatalf("message %d: id %s after %s, group %q", i, rs[i].ID, rs[i-1].ID, rs[i].Group)
		}
	}
}

// Standard queue: nothing lost; duplicates bounded by the batches in flight.
func TestBlockKill9Standard(t *testing.T) {
	const n, size, kills = 6000, 200, 4
	e := newBlockEnv(t, false, nil)
	tally, pub := killDuringStream(t, e, n, size, kills)
	same := idDuplicates(e.r.received())
	// Per kill: BATCH_CONCURRENCY (4) batches of 10 in flight, and those
	// delivered after the spool last persisted its delivered mark (it does
	// so asynchronously, coalescing acknowledgements): 25 batches is ample.
	limit := kills * 25 * 10
	t.Logf("standard, kill -9 x%d: %s; stored twice under the same id: %d (limit %d); copies under a new id (MQTT redeliveries): %d; publisher republished %d",
		kills, tally, same, limit, tally.Duplicates-same, pub.Republish.Load())
	if same > limit {
		t.Errorf("too many resends: %d > %d", same, limit)
	}
	if tally.Duplicates-same > kills*mqttRedeliveries+int(pub.Republish.Load()) {
		t.Errorf("%d duplicates under new ids", tally.Duplicates-same)
	}
}

// The queue is down for 30 s: the backlog waits in the spool, /ready says
// why, and everything arrives once it is back.
func TestBlockQueueOutage(t *testing.T) {
	const n, size = 3000, 200
	e := newBlockEnv(t, false, map[string]string{"READY_MAX_UNSENT_AGE": "5s"})
	e.b.needFake(t)
	e.start(t)
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, 500, 0)
	e.waitAll(t, 500, size, time.Minute)
	e.b.Fake.SetDown(true)
	down := time.Now()
	pub.Publish(500, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n-500 })
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = e.block.Ready()
		if code == 503 && strings.Contains(body, "oldest undelivered message") && strings.Contains(body, "sqs: SendMessageBatch") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/ready during the outage: %s", body)
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	refused := e.b.Fake.Stats().Refused
	e.b.Fake.SetDown(false)
	up := time.Now()
	e.block.WaitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	drained := time.Since(up)
	tally := e.waitAll(t, n, size, 2*time.Minute)
	t.Logf("after a 30 s outage (%d requests refused): %s; backlog of %d sent in %s", refused, tally, n-500, drained.Round(time.Millisecond))
	if tally.Duplicates != 0 {
		t.Errorf("duplicates without a crash: %s", tally)
	}
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready after the outage = %d %s", code, body)
	}
}
