package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// fakeSink records batches and fails as told.
type fakeSink struct {
	lim     sink.Limits
	mu      sync.Mutex
	batches [][]sink.Message
	fail    func(call int, batch []sink.Message) error
	calls   int
	stored  map[string]int // id -> times stored
}

func (f *fakeSink) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeSink) Connect(context.Context) error { return nil }
func (f *fakeSink) Limits() sink.Limits           { return f.lim }
func (f *fakeSink) Close(context.Context) error   { return nil }
func (f *fakeSink) WriteBatch(ctx context.Context, b []sink.Message) error {
	f.mu.Lock()
	f.calls++
	call := f.calls
	f.mu.Unlock()
	var err error
	if f.fail != nil {
		err = f.fail(call, b)
	}
	var be *sink.BatchError
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stored == nil {
		f.stored = map[string]int{}
	}
	if err == nil || errors.As(err, &be) {
		kept := []sink.Message{}
		for i, m := range b {
			if be != nil {
				if _, failed := be.Failed[i]; failed {
					continue
				}
			}
			f.stored[m.ID]++
			kept = append(kept, m)
		}
		f.batches = append(f.batches, kept)
	}
	return err
}

type fakeDead struct {
	mu   sync.Mutex
	msgs []sink.Message
}

func (d *fakeDead) Put(m []sink.Message, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, m...)
	return nil
}

type rig struct {
	sp    *spool.Spool
	snk   *fakeSink
	dead  *fakeDead
	p     *Pipeline
	stop  context.CancelFunc
	done  chan error
	dir   string
	cfg   Config
	total int
}

func newRig(t *testing.T, dir string, cfg Config, snk *fakeSink) *rig {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: dir, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RetryInitial == 0 {
		cfg.RetryInitial, cfg.RetryMax = RetryMin, 5*RetryMin
	}
	r := &rig{sp: sp, snk: snk, dead: &fakeDead{}, dir: dir, cfg: cfg}
	r.p, err = New(cfg, sp, snk, r.dead, NewMetrics(metrics.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	r.done = make(chan error, 1)
	go func() { r.done <- r.p.Run(ctx, ctx) }()
}

func (r *rig) close(t *testing.T) {
	r.stop()
	if err := <-r.done; err != nil {
		t.Error(err)
	}
	r.sp.Close()
}

func (r *rig) add(t *testing.T, payloads ...[]byte) {
	t.Helper()
	var wg sync.WaitGroup
	for _, p := range payloads {
		wg.Add(1)
		if err := r.sp.Append(context.Background(), spool.Entry{Topic: "t", Received: time.Now(), Payload: p}, func(uint64) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	r.total += len(payloads)
}

func (r *rig) waitDrained(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.sp.Backlog() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("backlog %d not drained", r.sp.Backlog())
		}
		time.Sleep(time.Millisecond)
	}
}

func payloads(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(make([]byte, 0, size), "%0*d", size, i)
	}
	return out
}

func TestBatchCutByCountBytesAndSinkLimits(t *testing.T) {
	snk := &fakeSink{lim: sink.Limits{MaxBatchMessages: 7, MaxBatchBytes: 1000, MessageOverhead: 50}}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 100, MaxBytes: 1 << 20, MaxWait: time.Second}, snk)
	r.add(t, payloads(100, 100)...)
	r.start()
	r.waitDrained(t)
	r.close(t)
	// 150 bytes a message against 1000: 6 a batch, within the sink's 7.
	for i, b := range snk.batches {
		if len(b) > 6 {
			t.Fatalf("batch %d has %d messages", i, len(b))
		}
	}
	if len(snk.stored) != 100 {
		t.Fatalf("stored %d", len(snk.stored))
	}
}

func TestBatchMaxWait(t *testing.T) {
	snk := &fakeSink{}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 1000, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond}, snk)
	r.start()
	r.add(t, payloads(3, 10)...)
	start := time.Now()
	r.waitDrained(t)
	if time.Since(start) > 5*time.Second {
		t.Fatal("partial batch not sent after max wait")
	}
	r.close(t)
	if len(snk.batches) != 1 || len(snk.batches[0]) != 3 {
		t.Fatalf("batches %v", snk.batches)
	}
}

func TestPartialFailureRetriesOnlyFailedAndDeadLettersPermanent(t *testing.T) {
	snk := &fakeSink{fail: func(call int, b []sink.Message) error {
		var be sink.BatchError
		for i, m := range b {
			switch {
			case string(m.Payload) == "bad":
				be.Fail(i, sink.Permanent(errors.New("refused")))
			case call == 1 && i%2 == 0:
				be.Fail(i, errors.New("throttled"))
			}
		}
		return be.Err()
	}}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 10, MaxBytes: 1 << 20}, snk)
	msgs := payloads(9, 5)
	msgs = append(msgs, []byte("bad"))
	r.add(t, msgs...)
	r.start()
	r.waitDrained(t)
	r.close(t)
	if len(r.dead.msgs) != 1 || string(r.dead.msgs[0].Payload) != "bad" {
		t.Fatalf("dead-lettered %v", r.dead.msgs)
	}
	for id, n := range snk.stored {
		if n != 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	if len(snk.stored) != 9 || len(snk.batches) != 2 || len(snk.batches[1]) != 5 {
		t.Fatalf("stored %d in batches %d; second batch %d (want only the 5 throttled)", len(snk.stored), len(snk.batches), len(snk.batches[1]))
	}
}

func TestWholeBatchRetryUntilSuccess(t *testing.T) {
	snk := &fakeSink{fail: func(call int, b []sink.Message) error {
		if call < 4 {
			return errors.New("down")
		}
		return nil
	}}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 100, MaxBytes: 1 << 20}, snk)
	r.add(t, payloads(20, 5)...)
	r.start()
	r.waitDrained(t)
	r.close(t)
	if snk.calls < 4 || len(snk.stored) != 20 {
		t.Fatalf("calls %d stored %d", snk.calls, len(snk.stored))
	}
	if st := r.p.Status(); st.LastError != "" || st.LastSuccess.IsZero() {
		t.Errorf("status after recovery %+v", st)
	}
}

func TestTooLargeDeadLetteredWithoutCall(t *testing.T) {
	snk := &fakeSink{lim: sink.Limits{MaxMessageBytes: 10}}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 100, MaxBytes: 1 << 20}, snk)
	r.add(t, []byte("small"), []byte("this one is too large"), []byte("small2"))
	r.start()
	r.waitDrained(t)
	r.close(t)
	if len(r.dead.msgs) != 1 || len(snk.stored) != 2 {
		t.Fatalf("dead %d stored %d", len(r.dead.msgs), len(snk.stored))
	}
	for _, b := range snk.batches {
		for _, m := range b {
			if len(m.Payload) > 10 {
				t.Fatal("sink called with an oversized message")
			}
		}
	}
}

func TestConcurrentBatchesAckInOrder(t *testing.T) {
	// Batch 1 is slow; batch 2 finishes first: the spool must not advance
	// past batch 1 until it is done.
	release := make(chan struct{})
	snk := &fakeSink{fail: func(call int, b []sink.Message) error {
		if string(b[0].Payload) == "00000" {
			<-release
		}
		return nil
	}}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 5, MaxBytes: 1 << 20, Concurrency: 4}, snk)
	r.add(t, payloads(20, 5)...)
	r.start()
	deadline := time.Now().Add(5 * time.Second)
	for {
		snk.mu.Lock()
		n := len(snk.batches)
		snk.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("other batches did not proceed")
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.sp.Backlog(); got != 20 {
		t.Fatalf("spool advanced past an undelivered batch: backlog %d", got)
	}
	if r.p.Status().OldestUnsent.IsZero() {
		t.Error("oldest unsent not reported")
	}
	close(release)
	r.waitDrained(t)
	r.close(t)
}

func TestCancelLeavesBatchInSpool(t *testing.T) {
	snk := &fakeSink{fail: func(int, []sink.Message) error { return errors.New("down") }}
	dir := t.TempDir()
	r := newRig(t, dir, Config{MaxMessages: 100, MaxBytes: 1 << 20, RetryInitial: time.Hour, RetryMax: time.Hour}, snk)
	r.add(t, payloads(5, 5)...)
	r.start()
	for snk.callCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	r.close(t) // cancels during the backoff sleep
	if time.Since(start) > 5*time.Second {
		t.Fatal("cancellation did not interrupt the backoff")
	}
	sp, err := spool.Open(spool.Options{Dir: dir, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if sp.Backlog() != 5 {
		t.Fatalf("backlog after cancel %d, want 5", sp.Backlog())
	}
}

// With StableBatches, a batch interrupted by a crash is resent as exactly
// the same batch, even if more messages arrived meanwhile.
func TestStableBatchResentExactly(t *testing.T) {
	dir := t.TempDir()
	snk := &fakeSink{lim: sink.Limits{StableBatches: true}, fail: func(int, []sink.Message) error { return errors.New("down") }}
	r := newRig(t, dir, Config{MaxMessages: 100, MaxBytes: 1 << 20, MaxWait: 10 * time.Millisecond, RetryInitial: time.Hour, RetryMax: time.Hour}, snk)
	r.add(t, payloads(7, 5)...)
	r.start()
	for snk.callCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	r.close(t) // "crash" with the batch of 7 in flight

	snk2 := &fakeSink{lim: sink.Limits{StableBatches: true}}
	r2 := newRig(t, dir, Config{MaxMessages: 100, MaxBytes: 1 << 20, MaxWait: 10 * time.Millisecond}, snk2)
	r2.add(t, payloads(5, 6)...) // more arrive before the restart's first batch
	r2.start()
	r2.waitDrained(t)
	r2.close(t)
	if len(snk2.batches) < 2 || len(snk2.batches[0]) != 7 {
		t.Fatalf("first batch after restart has %d messages, want exactly the 7 in flight", len(snk2.batches[0]))
	}
}

// After an outage, the first success wakes every batch waiting in backoff,
// instead of each sleeping out its own wait (up to RETRY_MAX_BACKOFF).
func TestRecoveryWakesBatchesInBackoff(t *testing.T) {
	p, err := New(Config{}, nil, &fakeSink{}, nil, NewMetrics(metrics.NewRegistry()), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	p.noteErr(errors.New("down"))
	woke := make(chan bool, 3)
	for range 3 {
		rec := p.recovery() // what a batch entering backoff now would wait on
		go func() { woke <- waitBackoff(context.Background(), time.Hour, rec) }()
	}
	p.delivered(1)
	for range 3 {
		select {
		case ok := <-woke:
			if !ok {
				t.Fatal("backoff reported cancellation")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a batch in backoff was not woken by the recovery")
		}
	}
}

// A send that hangs is abandoned after SendTimeout and retried.
func TestSendTimeout(t *testing.T) {
	snk2 := &hangingSink{fakeSink: &fakeSink{}}
	r := newRig(t, t.TempDir(), Config{MaxMessages: 100, MaxBytes: 1 << 20, SendTimeout: SendTimeoutMin}, nil)
	r.p.snk = snk2
	r.add(t, payloads(3, 5)...)
	r.start()
	r.waitDrained(t)
	r.close(t)
	if snk2.attempts.Load() < 2 {
		t.Fatalf("attempts %d", snk2.attempts.Load())
	}
}

// hangingSink's first WriteBatch blocks until its context ends.
type hangingSink struct {
	*fakeSink
	attempts atomic.Int32
}

func (h *hangingSink) WriteBatch(ctx context.Context, b []sink.Message) error {
	if h.attempts.Add(1) == 1 {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// A zero Config gets the defaults; every field out of its range is
// reported at once, by name.
func TestConfigDefaultsAndRanges(t *testing.T) {
	got := Config{}.withDefaults()
	want := Config{MaxMessages: DefaultMaxMessages, MaxBytes: DefaultMaxBytes, Concurrency: DefaultConcurrency,
		SendTimeout: DefaultSendTimeout, RetryInitial: DefaultRetryInitial, RetryMax: DefaultRetryMax}
	if got != want {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	if err := got.validate(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	// A zero RetryMax is never below the RetryInitial given.
	if c := (Config{RetryInitial: 2 * time.Minute}).withDefaults(); c.RetryMax != 2*time.Minute || c.validate() != nil {
		t.Errorf("RetryMax %s for RetryInitial 2m (%v)", c.RetryMax, c.validate())
	}
	bad := Config{MaxMessages: MaxMessagesMax + 1, MaxBytes: -1, MaxWait: MaxWaitMax + 1, Concurrency: ConcurrencyMax + 1,
		SendTimeout: SendTimeoutMin - 1, RetryInitial: time.Minute, RetryMax: time.Second}
	_, err := New(bad, nil, &fakeSink{}, nil, NewMetrics(metrics.NewRegistry()), slog.New(slog.DiscardHandler))
	for _, field := range []string{"MaxMessages 1000001", "MaxBytes -1", "MaxWait 1h0m0.000000001s", "Concurrency 65",
		"SendTimeout 999.999999ms", "RetryMax 1s: want 1m0s to 24h0m0s"} {
		if err == nil || !strings.Contains(err.Error(), "pipeline: "+field) {
			t.Errorf("error %v does not report %q", err, field)
		}
	}
	if err != nil && strings.Contains(err.Error(), "RetryInitial") {
		t.Errorf("RetryInitial within range reported: %v", err)
	}
}
