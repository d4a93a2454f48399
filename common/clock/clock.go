// Package clock decides whether the system's wall clock can be trusted.
//
// A Raspberry Pi has no real-time clock: after a power cut it boots with a
// stale or wrong time until NTP sets it, which may take minutes or never
// happen on an isolated network. Signed requests (SigV4, SAS tokens, OAuth
// JWT assertions) fail with a skewed clock, and date-partitioned object keys
// would name the wrong day. So the block keeps receiving and spooling while
// the clock is not plausible, and sends only once it is (common/pipeline
// waits on a Guard).
//
// The clock is plausible when both hold:
//
//   - it is not earlier than Floor: this build's date (BuildDate, set at
//     build time with -ldflags), or a date compiled in when the build did
//     not set one. No message can be received before the code receiving
//     it was built.
//   - it is not jumping: the wall clock has advanced as the monotonic clock
//     (CLOCK_MONOTONIC, which nothing sets) did, within MaxJump, for the
//     last Settle. A step larger than MaxJump in either direction (NTP
//     setting a wrong clock right, someone setting it by hand, a resume
//     from suspend) makes the clock untrusted until it has run without
//     another step for Settle: chrony and ntpd may step more than once
//     while they start.
//
// A message received while the clock is not plausible gets an untrusted
// receive time, Unsynchronised: 1970-01-01 plus the time since the block
// started (its order and spacing within the run are right, the true time is
// unknown). Any receive time before UntrustedBefore (2000) is untrusted
// (Trusted): it survives restarts and upgrades in the spool as it is, with
// no mark of its own, and consumers see it marked (common/objstore); object
// keys use the time of sending instead. A clock that is plausible but
// wrong (a stale time past the build date) cannot be told from a right one
// until it steps.
//
// Everything reads the wall clock through Now, which test builds (tag
// clockseam, seam.go) can shift; nothing changes the machine's clock.
package clock

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// BuildDate is the build's date, RFC 3339 (e.g. 2026-12-05T01:56:23Z), set
// with -ldflags "-X github.com/cloud-block/cloud-block/common/clock.BuildDate=...".
// The Makefile sets the date of the commit built.
var BuildDate string

// fallbackFloor is the floor when BuildDate is not set or does not parse:
// a date before any build of this code (when it was written), so it never
// holds back a right clock, and still far past what a clock without an RTC
// boots with (1970, or a distribution's release date).
var fallbackFloor = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// Floor is the earliest time the clock may show to be trusted.
func Floor() time.Time {
	if t, err := time.Parse(time.RFC3339, BuildDate); err == nil && t.After(fallbackFloor) {
		return t.UTC()
	}
	return fallbackFloor
}

// UntrustedBefore: a receive time before it was recorded while the clock
// was not plausible (Unsynchronised), or read from a clock set to 1970.
var UntrustedBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Trusted reports whether t, a receive time, can be taken as true.
func Trusted(t time.Time) bool { return !t.Before(UntrustedBefore) }

// Unsynchronised is the receive time given to a message received while the
// clock is not plausible: 1970-01-01 plus sinceStart, the time since the
// block started by the monotonic clock. Trusted says false of it.
func Unsynchronised(sinceStart time.Duration) time.Time {
	return time.Unix(0, 0).UTC().Add(sinceStart)
}

// Source reads the clocks: the wall clock (settable, possibly wrong) and
// the monotonic one (time since an arbitrary start, never set).
type Source interface {
	Wall() time.Time
	Mono() time.Duration
}

type system struct{ start time.Time }

func (s system) Wall() time.Time     { return now().Round(0) }
func (s system) Mono() time.Duration { return time.Since(s.start) }

// now is the wall clock; the clockseam build shifts it.
var now = time.Now

// Now is the wall clock: what every receive time and key time is read
// from. Measure durations with time.Now, not with it (a test build's may
// carry no monotonic reading).
func Now() time.Time { return now() }

// CertTime is the time to check TLS certificates at (tls.Config.Time):
// the wall clock, or Floor while the clock is earlier. A device whose
// clock is not yet set still reaches its local broker over TLS when the
// broker's certificate was valid at the build's date; once the clock is
// right, expiry is checked as usual.
func CertTime() time.Time {
	t := Now()
	if f := Floor(); t.Before(f) {
		return f
	}
	return t
}

// System is the machine's clocks.
func System() Source { return system{start: time.Now()} }

// Defaults.
const (
	// DefaultMaxJump: smaller steps go unnoticed. The clouds accept requests
	// signed up to 5 minutes (SAS, OAuth) or 15 (SigV4) off their clock.
	DefaultMaxJump = time.Minute
	// MaxJumpMin: at a sample a second, slewing (chrony's fastest, 83 ms
	// a second) never looks like a step.
	MaxJumpMin = time.Second
	MaxJumpMax = 24 * time.Hour
	// Settle is how long the clock must run without a step after one.
	Settle = 10 * time.Second
	// SampleEvery is how often Run samples the clocks.
	SampleEvery = time.Second
)

// Guard watches the clock. Run samples it; WaitSane blocks until it is
// plausible.
type Guard struct {
	src     Source
	maxJump time.Duration
	floor   time.Time

	mu       sync.Mutex
	sampled  bool
	prevWall time.Time
	prevMono time.Duration
	stepped  bool
	stepAt   time.Duration // Mono at the last step
	lastStep time.Duration // its size, wall minus monotonic
	verdict  bool          // sane and reason are set
	sane     bool
	reason   string
	changed  chan struct{} // closed and replaced when sane changes
	jumps    uint64
	insane   uint64 // times the clock became untrusted
}

// NewGuard watches src; maxJump 0 is DefaultMaxJump. It samples once.
func NewGuard(src Source, maxJump time.Duration) *Guard {
	if maxJump == 0 {
		maxJump = DefaultMaxJump
	}
	g := &Guard{src: src, maxJump: maxJump, floor: Floor(), changed: make(chan struct{})}
	g.Sample()
	return g
}

// Sample reads the clocks and updates the verdict.
func (g *Guard) Sample() {
	wall, mono := g.src.Wall(), g.src.Mono()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sample(wall, mono)
}

// ReceiveTime samples the clocks and returns the receive time to record
// for a message arriving now: the wall clock's reading while it is
// plausible, Unsynchronised otherwise.
func (g *Guard) ReceiveTime() time.Time {
	wall, mono := g.src.Wall(), g.src.Mono()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sample(wall, mono)
	if !g.sane {
		return Unsynchronised(mono)
	}
	return wall.UTC()
}

func (g *Guard) sample(wall time.Time, mono time.Duration) {
	if g.sampled {
		step := wall.Sub(g.prevWall) - (mono - g.prevMono)
		if step > g.maxJump || step < -g.maxJump {
			g.stepped, g.stepAt, g.lastStep = true, mono, step
			g.jumps++
		}
	}
	g.sampled, g.prevWall, g.prevMono = true, wall, mono
	sane, reason := true, ""
	switch {
	case wall.Before(g.floor):
		sane = false
		reason = fmt.Sprintf("clock not synchronised: the system time %s is before this build's date %s",
			wall.UTC().Format(time.RFC3339), g.floor.Format(time.RFC3339))
	case g.stepped && mono-g.stepAt < Settle:
		sane = false
		reason = fmt.Sprintf("clock not synchronised: the system time stepped by %s (more than CLOCK_MAX_JUMP=%s) %s ago; trusted again after %s without a step",
			round(g.lastStep), g.maxJump, round(mono-g.stepAt), Settle)
	}
	g.reason = reason
	if !g.verdict || sane != g.sane {
		if !sane {
			g.insane++
		}
		g.sane, g.verdict = sane, true
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

func round(d time.Duration) time.Duration {
	if d > time.Minute || d < -time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}

// State is the verdict: sane, or why not.
func (g *Guard) State() (sane bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sane, g.reason
}

// Counts are the steps seen and the times the clock became untrusted.
func (g *Guard) Counts() (jumps, untrusted uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.jumps, g.insane
}

// Run samples the clocks every SampleEvery until ctx ends.
func (g *Guard) Run(ctx context.Context) {
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			g.Sample()
		}
	}
}

// WaitSane returns true once the clock is plausible (at once if it is),
// false when ctx ends first. It relies on Run (or Sample) for news.
func (g *Guard) WaitSane(ctx context.Context) bool {
	for {
		g.mu.Lock()
		sane, ch := g.sane, g.changed
		g.mu.Unlock()
		if sane {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
