package clock

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a Source a test moves by hand: advance moves both clocks, set
// steps the wall clock alone.
type fake struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

func (f *fake) Wall() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall
}

func (f *fake) Mono() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mono
}

func (f *fake) advance(d time.Duration) {
	f.mu.Lock()
	f.wall, f.mono = f.wall.Add(d), f.mono+d
	f.mu.Unlock()
}

func (f *fake) set(t time.Time) {
	f.mu.Lock()
	f.wall = t
	f.mu.Unlock()
}

var right = time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)

func TestFloor(t *testing.T) {
	defer func(s string) { BuildDate = s }(BuildDate)
	BuildDate = ""
	if !Floor().Equal(fallbackFloor) {
		t.Errorf("no build date: floor %s, want the fallback %s", Floor(), fallbackFloor)
	}
	BuildDate = "not a date"
	if !Floor().Equal(fallbackFloor) {
		t.Errorf("a bad build date: floor %s, want the fallback", Floor())
	}
	BuildDate = "2020-01-01T00:00:00Z" // earlier than the fallback: the fallback wins
	if !Floor().Equal(fallbackFloor) {
		t.Errorf("an old build date: floor %s, want the fallback", Floor())
	}
	BuildDate = "2027-01-02T03:04:05+01:00"
	if want := time.Date(2027, 1, 2, 2, 4, 5, 0, time.UTC); !Floor().Equal(want) {
		t.Errorf("floor %s, want %s", Floor(), want)
	}
}

func TestTrusted(t *testing.T) {
	if Trusted(time.Unix(0, 0)) || Trusted(Unsynchronised(48*time.Hour)) || Trusted(time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)) {
		t.Error("a time before 2000 trusted")
	}
	// Times before the build date were true when a block built earlier
	// received them (a backlog delivered after an upgrade).
	if !Trusted(time.Date(2024, 3, 5, 7, 8, 9, 0, time.UTC)) || !Trusted(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Error("a time since 2000 untrusted")
	}
	if u := Unsynchronised(90 * time.Second); !u.Equal(time.Date(1970, 1, 1, 0, 1, 30, 0, time.UTC)) {
		t.Errorf("Unsynchronised(90s) = %s", u)
	}
}

func TestGuardBeforeFloor(t *testing.T) {
	f := &fake{wall: time.Unix(300, 0)}
	g := NewGuard(f, 0)
	sane, reason := g.State()
	if sane || !strings.HasPrefix(reason, "clock not synchronised: the system time 1970-01-01T00:05:00Z is before this build's date") {
		t.Fatalf("1970: sane %v, reason %q", sane, reason)
	}
	f.advance(2 * time.Second)
	if got, want := g.ReceiveTime(), Unsynchronised(2*time.Second); !got.Equal(want) {
		t.Fatalf("ReceiveTime in 1970: %s, want %s", got, want)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if g.WaitSane(ctx) {
		t.Fatal("WaitSane true with an untrusted clock")
	}
	done := make(chan bool)
	go func() { done <- g.WaitSane(context.Background()) }()
	// Running on, still 1970: untrusted.
	for range 5 {
		f.advance(time.Second)
		g.Sample()
	}
	if sane, _ := g.State(); sane {
		t.Fatal("sane in 1970")
	}
	// NTP sets it: a step of 57 years, so it settles first.
	f.set(right)
	g.Sample()
	sane, reason = g.State()
	if sane || !strings.Contains(reason, "stepped by") || !strings.Contains(reason, "CLOCK_MAX_JUMP=1m0s") {
		t.Fatalf("just set: sane %v, reason %q", sane, reason)
	}
	for d := time.Duration(0); d < Settle-time.Second; d += time.Second {
		f.advance(time.Second)
		g.Sample()
		if sane, _ := g.State(); sane {
			t.Fatalf("sane %s after the step, before Settle", d+time.Second)
		}
	}
	select {
	case <-done:
		t.Fatal("WaitSane returned before the clock settled")
	default:
	}
	f.advance(time.Second)
	g.Sample()
	if sane, reason := g.State(); !sane || reason != "" {
		t.Fatalf("settled: sane %v, reason %q", sane, reason)
	}
	if got := g.ReceiveTime(); !got.Equal(f.Wall()) || !Trusted(got) {
		t.Fatalf("ReceiveTime once settled: %s, want %s", got, f.Wall())
	}
	if !<-done {
		t.Fatal("WaitSane false")
	}
	if jumps, untrusted := g.Counts(); jumps != 1 || untrusted != 1 {
		t.Errorf("counts: %d jumps, %d times untrusted; want 1 and 1", jumps, untrusted)
	}
}

func TestGuardJumps(t *testing.T) {
	f := &fake{wall: right}
	g := NewGuard(f, 30*time.Second)
	if sane, reason := g.State(); !sane {
		t.Fatalf("a right clock untrusted: %s", reason)
	}
	// Slewing (chrony's fastest, 83 ms a second) and small steps are not jumps.
	for range 100 {
		f.advance(time.Second)
		f.set(f.Wall().Add(83 * time.Millisecond))
		g.Sample()
	}
	f.set(f.Wall().Add(29 * time.Second))
	g.Sample()
	if sane, reason := g.State(); !sane {
		t.Fatalf("slewing and a 29 s step with CLOCK_MAX_JUMP=30s: %s", reason)
	}
	// Backwards by an hour, past the floor still: untrusted until settled.
	f.advance(time.Second)
	f.set(f.Wall().Add(-time.Hour))
	if got := g.ReceiveTime(); Trusted(got) {
		t.Fatalf("ReceiveTime just after a step: %s, trusted", got)
	}
	sane, reason := g.State()
	if sane || !strings.Contains(reason, "stepped by -1h0m0s") {
		t.Fatalf("an hour back: sane %v, reason %q", sane, reason)
	}
	// A second step while settling starts the wait again.
	f.advance(5 * time.Second)
	g.Sample()
	f.set(f.Wall().Add(time.Hour))
	g.Sample()
	f.advance(Settle - time.Second)
	g.Sample()
	if sane, _ := g.State(); sane {
		t.Fatal("sane before Settle after the second step")
	}
	f.advance(time.Second)
	g.Sample()
	if sane, reason := g.State(); !sane {
		t.Fatalf("not sane after settling: %s", reason)
	}
	if jumps, untrusted := g.Counts(); jumps != 2 || untrusted != 1 {
		t.Errorf("counts: %d jumps, %d times untrusted; want 2 and 1", jumps, untrusted)
	}
}

func TestSystemSource(t *testing.T) {
	s := System()
	w, m := s.Wall(), s.Mono()
	if d := time.Since(w); d < 0 || d > time.Minute {
		t.Errorf("Wall is %s from time.Now", d)
	}
	if m < 0 || m > time.Minute {
		t.Errorf("Mono %s right after System()", m)
	}
	g := NewGuard(s, 0)
	g.Sample()
	if sane, reason := g.State(); !sane {
		t.Errorf("this machine's clock untrusted: %s", reason)
	}
}

func TestCertTime(t *testing.T) {
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return time.Unix(300, 0) }
	if got := CertTime(); !got.Equal(Floor()) {
		t.Errorf("CertTime in 1970: %s, want the floor %s", got, Floor())
	}
	now = func() time.Time { return right }
	if got := CertTime(); !got.Equal(right) {
		t.Errorf("CertTime with a right clock: %s, want %s", got, right)
	}
}
