// Package pipeline reads the spool in order, cuts batches that fit both the
// user's settings and the destination's own limits, hands them to the sink,
// retries with capped exponential backoff and jitter (only the messages a
// partial failure names), dead-letters what the destination can never
// accept, and advances the spool only past delivered messages.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// Config are the batching and retry settings. A zero field with a default
// gets it; New refuses a value outside its range. common/run reads the
// BATCH_*, SEND_TIMEOUT and RETRY_* variables within the same ranges, so
// that a bad value is reported under its variable's name.
type Config struct {
	MaxMessages int // most messages in a batch: DefaultMaxMessages if 0, at most MaxMessagesMax
	MaxBytes    int // most payload bytes in a batch: DefaultMaxBytes if 0, at most MaxBytesMax
	// MaxWait is the longest a batch waits to fill, at most MaxWaitMax;
	// 0 sends what is spooled at once.
	MaxWait     time.Duration
	Concurrency int // batches in flight at once: DefaultConcurrency if 0, at most ConcurrencyMax
	// SendTimeout is the longest one WriteBatch call may take:
	// DefaultSendTimeout if 0, from SendTimeoutMin to SendTimeoutMax.
	SendTimeout time.Duration
	// RetryInitial is the first wait after a failure (DefaultRetryInitial
	// if 0); it doubles up to RetryMax (DefaultRetryMax if 0, and never
	// below RetryInitial). Both at least RetryMin.
	RetryInitial, RetryMax time.Duration
}

// Defaults and ranges of Config.
const (
	DefaultMaxMessages  = 500
	DefaultMaxBytes     = 1 << 20
	DefaultConcurrency  = 4
	DefaultSendTimeout  = 30 * time.Second
	DefaultRetryInitial = time.Second
	DefaultRetryMax     = time.Minute

	MaxMessagesMax = 1_000_000
	MaxBytesMax    = 1 << 30
	MaxWaitMax     = time.Hour
	ConcurrencyMax = 64
	// A send over a slow link takes a while; a timeout below a second
	// would abandon sends that were about to succeed.
	SendTimeoutMin  = time.Second
	SendTimeoutMax  = time.Hour
	RetryMin        = 10 * time.Millisecond
	RetryInitialMax = time.Hour
	RetryMaxMax     = 24 * time.Hour
)

// withDefaults fills in the zero fields that have a default.
func (c Config) withDefaults() Config {
	if c.MaxMessages == 0 {
		c.MaxMessages = DefaultMaxMessages
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = DefaultSendTimeout
	}
	if c.RetryInitial == 0 {
		c.RetryInitial = DefaultRetryInitial
	}
	if c.RetryMax == 0 {
		c.RetryMax = max(DefaultRetryMax, c.RetryInitial)
	}
	return c
}

// validate reports every field outside its range.
func (c Config) validate() error {
	var errs []error
	out := func(field string, v, lo, hi any) {
		errs = append(errs, fmt.Errorf("pipeline: %s %v: want %v to %v", field, v, lo, hi))
	}
	if c.MaxMessages < 1 || c.MaxMessages > MaxMessagesMax {
		out("MaxMessages", c.MaxMessages, 1, MaxMessagesMax)
	}
	if c.MaxBytes < 1 || c.MaxBytes > MaxBytesMax {
		out("MaxBytes", c.MaxBytes, 1, MaxBytesMax)
	}
	if c.MaxWait < 0 || c.MaxWait > MaxWaitMax {
		out("MaxWait", c.MaxWait, time.Duration(0), MaxWaitMax)
	}
	if c.Concurrency < 1 || c.Concurrency > ConcurrencyMax {
		out("Concurrency", c.Concurrency, 1, ConcurrencyMax)
	}
	if c.SendTimeout < SendTimeoutMin || c.SendTimeout > SendTimeoutMax {
		out("SendTimeout", c.SendTimeout, SendTimeoutMin, SendTimeoutMax)
	}
	if c.RetryInitial < RetryMin || c.RetryInitial > RetryInitialMax {
		out("RetryInitial", c.RetryInitial, RetryMin, RetryInitialMax)
	}
	if lo := max(RetryMin, c.RetryInitial); c.RetryMax < lo || c.RetryMax > RetryMaxMax {
		out("RetryMax", c.RetryMax, lo, RetryMaxMax)
	}
	return errors.Join(errs...)
}

// Source is what the pipeline needs of the spool.
type Source interface {
	Next(ctx context.Context, deadline time.Time) (spool.Record, error)
	Ack(seq uint64)
	RecordedInFlight() (first, last uint64, ok bool)
	RecordInFlight(first, last uint64) error
}

// ClockGate tells whether the clock may be used (common/clock.Guard).
type ClockGate interface {
	// WaitSane returns true once the clock is plausible, false if ctx ends first.
	WaitSane(ctx context.Context) bool
}

// waitClock waits for a plausible clock (true), or for ctx to end (false).
func (p *Pipeline) waitClock(ctx context.Context) bool {
	return p.Clock == nil || p.Clock.WaitSane(ctx)
}

// DeadLetterStore keeps messages that can never be delivered.
type DeadLetterStore interface {
	Put(msgs []sink.Message, reason string) error
}

// Pipeline moves messages from a Source to a Sink.
type Pipeline struct {
	cfg  Config
	src  Source
	snk  sink.Sink
	dead DeadLetterStore
	log  *slog.Logger
	m    *Metrics
	// OnAuthError is called (if set) when the sink reports an authentication
	// failure, before the next attempt: the run loop re-reads secrets there.
	OnAuthError func(ctx context.Context)
	// Clock, if set, is asked before every connect and send: while the
	// clock is not plausible, nothing is signed (SigV4, SAS tokens and
	// OAuth assertions fail with a skewed clock, and object keys would name
	// a date that cannot be trusted). Messages keep being spooled meanwhile.
	Clock ClockGate

	lim      sink.Limits
	stable   bool
	connOnce sync.Mutex
	conn     atomic.Bool

	mu        sync.Mutex
	recovered chan struct{} // closed when a send succeeds after failures
	inflight  []*batch      // dispatch order
	building  time.Time
	lastErr   string
	lastErrAt time.Time
	lastOK    time.Time
	nextID    uint64
	calls     map[*struct{}]time.Time // WriteBatch calls in progress, by start
}

type batch struct {
	id      uint64
	msgs    []sink.Message
	seqs    []uint64
	tooBig  bool // a single message over the destination's limit
	done    bool
	started time.Time
}

// Metrics of the pipeline.
type Metrics struct {
	Delivered, Retried, DeadLettered, Batches, Failures *metrics.Counter
	BatchSize, BatchBytes, BatchLatency                 *metrics.Histogram
}

// NewMetrics registers the pipeline's metrics.
func NewMetrics(r *metrics.Registry) *Metrics {
	return &Metrics{
		Delivered:    r.Counter("cloudblock_delivered_total", "Messages the destination confirmed stored."),
		Retried:      r.Counter("cloudblock_retried_total", "Message send attempts that failed and were retried."),
		DeadLettered: r.Counter("cloudblock_dead_lettered_total", "Messages that can never be delivered (refused by the destination, or too large for the spool), moved to the dead-letter store."),
		Batches:      r.Counter("cloudblock_batches_total", "Batches delivered."),
		Failures:     r.Counter("cloudblock_sink_errors_total", "Failed calls to the destination."),
		BatchSize:    r.Histogram("cloudblock_batch_messages", "Messages per delivered batch.", 1, 10, 100, 500, 1000, 5000, 10000),
		BatchBytes:   r.Histogram("cloudblock_batch_bytes", "Payload bytes per delivered batch.", 1<<10, 16<<10, 256<<10, 1<<20, 4<<20, 16<<20),
		BatchLatency: r.Histogram("cloudblock_batch_seconds", "Time from a batch's dispatch to its delivery, retries included.", .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60),
	}
}

// New returns a pipeline, or the fields of cfg out of their ranges; Run
// starts it.
func New(cfg Config, src Source, snk sink.Sink, dead DeadLetterStore, m *Metrics, log *slog.Logger) (*Pipeline, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Pipeline{cfg: cfg, src: src, snk: snk, dead: dead, m: m, log: log, recovered: make(chan struct{})}, nil
}

// Status is what /ready and the metrics report.
type Status struct {
	Connected    bool
	OldestUnsent time.Time // zero when nothing is waiting
	LastError    string
	LastErrorAt  time.Time
	LastSuccess  time.Time
	InFlight     int
	// OldestCall is when the longest-running WriteBatch call in progress
	// began (zero when none is): one far past SEND_TIMEOUT means the sink
	// ignores its deadline and the pipeline is stuck.
	OldestCall time.Time
}

// Status returns the current state.
func (p *Pipeline) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{Connected: p.conn.Load(), LastError: p.lastErr, LastErrorAt: p.lastErrAt, LastSuccess: p.lastOK, InFlight: len(p.inflight)}
	for _, b := range p.inflight {
		if !b.done && len(b.msgs) > 0 {
			st.OldestUnsent = b.msgs[0].Received
			break
		}
	}
	if st.OldestUnsent.IsZero() {
		st.OldestUnsent = p.building
	}
	for _, at := range p.calls {
		if st.OldestCall.IsZero() || at.Before(st.OldestCall) {
			st.OldestCall = at
		}
	}
	return st
}

// Run delivers until stop ends; then it waits for the batches in flight,
// which stop when kill ends (they stay in the spool, to be sent again after
// a restart).
func (p *Pipeline) Run(stop, kill context.Context) error {
	ctx := stop
	if err := p.connect(stop, kill); err != nil || ctx.Err() != nil {
		return err
	}
	p.lim = p.snk.Limits()
	conc := p.cfg.Concurrency
	if p.lim.StableBatches {
		// A resent batch must be identical to the first attempt (object keys
		// are named after it), so one batch is in flight and its range is
		// recorded before it is sent.
		p.stable, conc = true, 1
	}
	if p.lim.MaxInFlight > 0 {
		conc = min(conc, p.lim.MaxInFlight)
	}
	slots := make(chan struct{}, conc)
	var wg sync.WaitGroup
	defer wg.Wait()
	var carry *spool.Record
	first, last, resend := p.src.RecordedInFlight()
	for {
		b, next, err := p.cut(ctx, carry, first, last, resend)
		carry, resend = next, false
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, spool.ErrClosed) {
				return nil
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		if p.stable && !b.tooBig && !p.recordInFlight(ctx, b) {
			<-slots
			return nil // stopping
		}
		p.mu.Lock()
		b.id = p.nextID
		p.nextID++
		b.started = time.Now()
		p.inflight = append(p.inflight, b)
		p.building = time.Time{}
		p.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if p.deliver(kill, b) {
				p.complete(b)
			}
		}()
	}
}

// connect creates the sink's clients with the long-lived context (some SDKs
// keep it), retrying until it works or stop ends.
func (p *Pipeline) connect(ctx, kill context.Context) error {
	backoff := p.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		if !p.waitClock(ctx) {
			return nil
		}
		err := p.snk.Connect(kill)
		if err == nil {
			p.conn.Store(true)
			// Connecting leaves garbage behind (the Event Hubs size probe
			// alone builds some twenty batches of up to 1 MiB). Hand it back
			// to the OS now rather than when the scavenger gets to it, so a
			// device at rest keeps the smaller footprint (make bench:
			// TestBenchMemory).
			debug.FreeOSMemory()
			if attempt > 1 {
				p.log.Info("connected to the destination", "attempt", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		p.noteErr(err)
		p.log.Error("connecting to the destination failed; retrying", "err", err, "attempt", attempt)
		if sink.IsAuth(err) && p.OnAuthError != nil {
			p.OnAuthError(ctx)
		}
		_ = p.snk.Close(ctx)
		if !sleep(ctx, jitter(backoff)) {
			return nil
		}
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

// effective batch limits: the user's settings within the destination's own.
func (p *Pipeline) limits() (maxMsgs, maxBytes, maxMsgBytes, overhead int) {
	maxMsgs, maxBytes = p.cfg.MaxMessages, p.cfg.MaxBytes
	if p.lim.MaxBatchMessages > 0 {
		maxMsgs = min(maxMsgs, p.lim.MaxBatchMessages)
	}
	if p.lim.MaxBatchBytes > 0 {
		maxBytes = min(maxBytes, p.lim.MaxBatchBytes)
	}
	return maxMsgs, maxBytes, p.lim.MaxMessageBytes, p.lim.MessageOverhead
}

// cut reads the next batch. A record that does not fit is returned as carry
// for the next batch. With resend, the batch is exactly records first..last.
func (p *Pipeline) cut(ctx context.Context, carry *spool.Record, first, last uint64, resend bool) (*batch, *spool.Record, error) {
	maxMsgs, maxBytes, maxMsg, overhead := p.limits()
	b := &batch{}
	size := 0
	var deadline time.Time
	for {
		var rec spool.Record
		if carry != nil {
			rec, carry = *carry, nil
		} else {
			var err error
			rec, err = p.src.Next(ctx, deadline)
			if errors.Is(err, spool.ErrTimeout) {
				return b, nil, nil
			}
			if err != nil {
				return nil, nil, err
			}
		}
		if resend && rec.Seq > last {
			if len(b.msgs) > 0 {
				return b, &rec, nil
			}
			resend = false // the recorded batch was lost to corruption
		}
		if len(b.msgs) == 0 {
			p.mu.Lock()
			p.building = rec.Received
			p.mu.Unlock()
			// With no wait, take what is already spooled and send it now.
			deadline = time.Now().Add(p.cfg.MaxWait)
		}
		msg := sink.Message{ID: rec.ID, Topic: rec.Topic, Received: rec.Received, Payload: rec.Payload}
		if maxMsg > 0 && len(rec.Payload) > maxMsg {
			if len(b.msgs) > 0 {
				return b, &rec, nil // send what we have; the big one goes alone
			}
			return &batch{msgs: []sink.Message{msg}, seqs: []uint64{rec.Seq}, tooBig: true}, nil, nil
		}
		n := len(rec.Payload) + overhead
		if !resend && len(b.msgs) > 0 && size+n > maxBytes {
			return b, &rec, nil
		}
		b.msgs = append(b.msgs, msg)
		b.seqs = append(b.seqs, rec.Seq)
		size += n
		if resend {
			if rec.Seq >= last {
				return b, nil, nil
			}
			continue
		}
		if len(b.msgs) >= maxMsgs || size >= maxBytes {
			return b, nil, nil
		}
	}
}

// deliver sends b until every message is delivered or dead-lettered (true),
// or ctx ends (false: the batch stays in the spool).
func (p *Pipeline) deliver(ctx context.Context, b *batch) bool {
	if b.tooBig {
		reason := fmt.Sprintf("payload of %d bytes exceeds the destination's limit of %d bytes", len(b.msgs[0].Payload), p.lim.MaxMessageBytes)
		return p.DeadLetter(ctx, b.msgs, reason)
	}
	todo := b.msgs
	backoff := p.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		if !p.waitClock(ctx) {
			return false
		}
		err := p.write(ctx, todo)
		if err == nil {
			p.delivered(len(todo))
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.m.Failures.Inc()
		var be *sink.BatchError
		var retry []sink.Message
		var dead []sink.Message
		var reasons []string
		switch {
		case errors.As(err, &be):
			for i, m := range todo {
				ferr, failed := be.Failed[i]
				switch {
				case !failed:
				case sink.IsPermanent(ferr):
					dead = append(dead, m)
					reasons = append(reasons, ferr.Error())
				default:
					retry = append(retry, m)
				}
			}
			p.delivered(len(todo) - len(retry) - len(dead))
		case sink.IsPermanent(err):
			dead = todo
			for range todo {
				reasons = append(reasons, err.Error())
			}
		default:
			retry = todo
		}
		for i := range dead {
			if !p.DeadLetter(ctx, dead[i:i+1], reasons[i]) {
				return false
			}
		}
		if len(retry) == 0 {
			return true
		}
		p.m.Retried.Add(uint64(len(retry)))
		p.noteErr(err)
		p.log.Warn("sending failed; will retry", "err", err, "batch", b.id, "messages", len(retry), "attempt", attempt)
		if sink.IsAuth(err) && p.OnAuthError != nil {
			p.OnAuthError(ctx)
		}
		todo = retry
		if !p.backoff(ctx, jitter(backoff)) {
			return false
		}
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

// backoff waits d, or less if another batch gets through meanwhile: after
// an outage, every batch waiting in backoff retries as soon as one send
// succeeds, so the backlog drains at full speed instead of each batch
// sleeping out its own (up to RETRY_MAX_BACKOFF) wait.
func (p *Pipeline) backoff(ctx context.Context, d time.Duration) bool {
	return waitBackoff(ctx, d, p.recovery())
}

// recordInFlight durably records b's range before it is sent, retrying a
// failed write (a full disk) until it succeeds: sending without it could
// duplicate the batch's object after a crash. False when ctx ended.
func (p *Pipeline) recordInFlight(ctx context.Context, b *batch) bool {
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := p.src.RecordInFlight(b.seqs[0], b.seqs[len(b.seqs)-1])
		if err == nil {
			return true
		}
		if attempt%20 == 0 {
			p.log.Error("recording the batch in flight failed; retrying before sending it", "err", err, "attempt", attempt+1)
		}
		if !p.backoff(ctx, wait) {
			return false
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// recovery returns the channel closed at the next success after a failure.
func (p *Pipeline) recovery() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recovered
}

func waitBackoff(ctx context.Context, d time.Duration, recovered <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-recovered:
		return true
	case <-ctx.Done():
		return false
	}
}

// write calls the sink with a deadline, so a connection that hangs (a
// network that drops packets instead of refusing them) becomes a retryable
// error instead of stalling the batch forever.
func (p *Pipeline) write(ctx context.Context, msgs []sink.Message) error {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.SendTimeout)
	defer cancel()
	call := new(struct{})
	p.mu.Lock()
	if p.calls == nil {
		p.calls = map[*struct{}]time.Time{}
	}
	p.calls[call] = time.Now()
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.calls, call)
		p.mu.Unlock()
	}()
	err := p.snk.WriteBatch(wctx, msgs)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return fmt.Errorf("no answer within SEND_TIMEOUT (%s): %w", p.cfg.SendTimeout, err)
	}
	return err
}

// DeadLetter moves msgs, which can never be delivered, to the dead-letter
// store with reason, then counts (cloudblock_dead_lettered_total) and logs
// each. A failing store is retried with backoff until it works: a message
// is let go of (acknowledged) only once it is kept. False when ctx ends
// first; then nothing was stored. The pipeline calls it for what the
// destination refuses, run for what the spool refuses on arrival.
func (p *Pipeline) DeadLetter(ctx context.Context, msgs []sink.Message, reason string) bool {
	backoff := p.cfg.RetryInitial
	for {
		err := p.dead.Put(msgs, reason)
		if err == nil {
			p.m.DeadLettered.Add(uint64(len(msgs)))
			for _, m := range msgs {
				p.log.Error("message dead-lettered: it can never be delivered", "id", m.ID, "topic", m.Topic, "bytes", len(m.Payload), "reason", reason)
			}
			return true
		}
		p.log.Error("writing the dead-letter store failed; will retry", "err", err)
		if !sleep(ctx, jitter(backoff)) {
			return false
		}
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

func (p *Pipeline) delivered(n int) {
	if n <= 0 {
		return
	}
	p.m.Delivered.Add(uint64(n))
	p.mu.Lock()
	p.lastOK = time.Now()
	if p.lastErr != "" {
		// The destination is back: wake the batches waiting in backoff.
		close(p.recovered)
		p.recovered = make(chan struct{})
	}
	p.lastErr = ""
	p.mu.Unlock()
}

func (p *Pipeline) noteErr(err error) {
	p.mu.Lock()
	p.lastErr, p.lastErrAt = err.Error(), time.Now()
	p.mu.Unlock()
}

// complete marks b done and acknowledges the longest delivered prefix of
// the batches in flight, so the spool only ever advances past delivered data.
func (p *Pipeline) complete(b *batch) {
	p.m.Batches.Inc()
	p.m.BatchSize.Observe(float64(len(b.msgs)))
	bytes := 0
	for _, m := range b.msgs {
		bytes += len(m.Payload)
	}
	p.m.BatchBytes.Observe(float64(bytes))
	p.m.BatchLatency.Observe(time.Since(b.started).Seconds())
	p.mu.Lock()
	b.done = true
	var ack uint64
	n := 0
	for n < len(p.inflight) && p.inflight[n].done {
		s := p.inflight[n].seqs
		ack = s[len(s)-1]
		n++
	}
	p.inflight = append(p.inflight[:0], p.inflight[n:]...)
	p.mu.Unlock()
	if ack > 0 {
		p.src.Ack(ack)
	}
}

func jitter(d time.Duration) time.Duration {
	// Full jitter within [d/2, d): spreads a fleet's retries after an outage.
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
