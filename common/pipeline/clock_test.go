package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// gate is a ClockGate a test opens and closes; waiting tells when the
// pipeline asks while it is closed.
type gate struct {
	mu      sync.Mutex
	open    chan struct{} // closed while the clock is sane
	waiting chan struct{} // one value each time a caller starts waiting
}

func newGate(sane bool) *gate {
	g := &gate{open: make(chan struct{}), waiting: make(chan struct{}, 100)}
	if sane {
		close(g.open)
	}
	return g
}

func (g *gate) WaitSane(ctx context.Context) bool {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	default:
	}
	g.waiting <- struct{}{}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *gate) set(sane bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		if !sane {
			g.open = make(chan struct{})
		}
	default:
		if sane {
			close(g.open)
		}
	}
}

// countingSink counts connects.
type countingSink struct {
	*fakeSink
	connects atomic.Int32
}

func (c *countingSink) Connect(ctx context.Context) error {
	c.connects.Add(1)
	return c.fakeSink.Connect(ctx)
}

// While the clock is not plausible the pipeline neither connects nor sends
// (both sign requests); the messages wait in the spool and go, all of them,
// once it is.
func TestClockGatesConnectAndSend(t *testing.T) {
	snk := &countingSink{fakeSink: &fakeSink{}}
	g := newGate(false)
	r := newRig(t, t.TempDir(), Config{MaxMessages: 10}, snk.fakeSink)
	r.p.snk = snk
	r.p.Clock = g
	r.start()
	<-g.waiting // at connect
	r.add(t, payloads(25, 10)...)
	if n := snk.connects.Load(); n != 0 {
		t.Fatalf("connected %d times with the clock untrusted", n)
	}
	if r.sp.Backlog() != 25 {
		t.Fatalf("backlog %d, want the 25 spooled", r.sp.Backlog())
	}
	g.set(true)
	r.waitDrained(t)
	if n := snk.connects.Load(); n != 1 {
		t.Fatalf("%d connects, want 1", n)
	}
	if len(snk.stored) != 25 {
		t.Fatalf("stored %d of 25", len(snk.stored))
	}

	// Untrusted again (a step): batches wait before their send.
	g.set(false)
	calls := snk.callCount()
	r.add(t, payloads(5, 10)...)
	<-g.waiting
	if c := snk.callCount(); c != calls {
		t.Fatalf("%d sends with the clock untrusted", c-calls)
	}
	g.set(true)
	r.waitDrained(t)
	r.close(t)
	n := 0
	for _, c := range snk.stored {
		n += c
	}
	if n != 30 {
		t.Fatalf("stored %d messages, want 30", n)
	}
}

// A pipeline stopping while it waits for the clock returns.
func TestClockWaitEndsWithStop(t *testing.T) {
	g := newGate(false)
	r := newRig(t, t.TempDir(), Config{}, &fakeSink{})
	r.p.Clock = g
	r.start()
	<-g.waiting
	r.close(t)
}
