package blocktest

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

const (
	crashSize        = 200 // bytes per message
	crashConcurrency = 4   // BATCH_CONCURRENCY
	// brokerInflight is Mosquitto's max_inflight_messages in the harness (as
	// in the compose files): at most this many messages can be spooled but
	// not yet acknowledged when the block dies, and the broker sends them
	// again under new ids.
	brokerInflight = 1000
)

// streamWithEvents publishes n messages at rate in the background (done
// closes when the broker has them all) and returns k moments, spread at
// random over the stream's expected length, for the events of a scenario.
func streamWithEvents(t *testing.T, r *rig, n int, rate float64, k int) (pub *harness.Publisher, began time.Time, done chan struct{}, stream time.Duration, at []time.Duration) {
	pub = harness.NewPublisher(t, r.broker, "cloud-input", crashSize)
	began, done = time.Now(), make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, rate)
	}()
	stream = time.Duration(float64(n) / rate * float64(time.Second))
	at = make([]time.Duration, k)
	for i := range at {
		at[i] = time.Duration(float64(stream) * (0.05 + 0.9*rand.Float64()))
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	return pub, began, done, stream, at
}

// Crash: SIGKILL at random moments during a long stream. Every message
// arrives at least once, byte for byte; a kill can only make the sink send
// again the batches it had in flight (none at all for object stores and
// FIFO queues), and the broker send again what was spooled but not yet
// acknowledged (under new ids).
//
// Targets run one after another: the stream is CPU-bound on 2 cores.
func crash(t *testing.T, tg *target, sc Scale) {
	n, kills := sc.Messages, sc.Kills
	r := newRig(t, tg, rigOpts{env: map[string]string{
		"BATCH_MAX_MESSAGES": strconv.Itoa(tg.batch),
		"BATCH_CONCURRENCY":  strconv.Itoa(crashConcurrency),
	}})
	r.start()
	pub, began, done, stream, at := streamWithEvents(t, r, n, sc.Rate, kills)
	for _, d := range at {
		time.Sleep(time.Until(began.Add(d)))
		r.block.Kill()
		r.block.Start()
	}
	<-done
	published := time.Since(began)
	tl, _ := r.waitAll(n, crashSize, 5*time.Minute+stream, true)
	drained := time.Since(began)

	// A copy under the same id is the sink storing a spooled message
	// twice; a copy under a new id is the broker's redelivery.
	resendLimit := 0
	if !tg.dupFree {
		// Per kill: the batches in flight plus the one whose delivered
		// mark was not yet persisted.
		resendLimit = kills * (crashConcurrency + 1) * tg.batch
	}
	redeliveries := tl.Copies - tl.Resent
	redeliveryLimit := kills*brokerInflight + int(pub.Republish.Load())
	note := fmt.Sprintf("%d kills; %d resent (limit %d), %d redelivered (limit %d); stream %s, all delivered after %s",
		kills, tl.Resent, resendLimit, redeliveries, redeliveryLimit, published.Round(time.Second), drained.Round(time.Second))
	t.Logf("%s: %s; %s", tg.name, tl, note)
	if tl.Resent > resendLimit {
		t.Errorf("%d messages stored twice under one id, limit %d", tl.Resent, resendLimit)
	}
	if redeliveries > redeliveryLimit {
		t.Errorf("%d redelivered copies, limit %d", redeliveries, redeliveryLimit)
	}
	if r.block.Starts != kills+1 {
		t.Errorf("block started %d times, want %d", r.block.Starts, kills+1)
	}
	r.report("crash", tl, 0, note)
}
