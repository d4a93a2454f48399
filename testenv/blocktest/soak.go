package blocktest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// sample is the block's footprint at one moment.
type sample struct {
	at            time.Duration
	rss           int64
	fds, threads  int
	spool, unsent float64
}

// footprint reads pid's RSS, open file descriptors and threads. (Go's
// goroutines are not visible from outside and the product exports no
// count: threads and descriptors are what leaks would show in.)
func footprint(pid int) (sample, error) {
	var s sample
	st, err := harness.ReadProcStat(pid)
	if err != nil {
		return s, err
	}
	s.rss = st.RSS
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			s.threads, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return s, nil
}

// thirds returns the mean of f over the first and the last third of ss.
func thirds(ss []sample, f func(sample) float64) (first, last float64) {
	n := len(ss) / 3
	for i := 0; i < n; i++ {
		first += f(ss[i])
		last += f(ss[len(ss)-1-i])
	}
	return first / float64(n), last / float64(n)
}

// Soak: an hour of a typical device's traffic (one 200-byte reading a
// second: 3,600 messages) compressed into two minutes (BLOCKTEST_SOAK=1: ten;
// or BLOCKTEST_SOAK_TIME),
// with the emulator stopped for a quarter of every fifth of it. RSS, open
// descriptors and threads stay flat (the last third's mean within 1.5x of
// the first's), nothing is lost, and the spool empties at the end.
func soak(t *testing.T, tg *target, sc Scale) {
	d := sc.Soak
	const hour = 3600 // messages in an hour at one a second
	rate := hour / d.Seconds()
	period := d / 5
	away := period / 4
	r := newRig(t, tg, rigOpts{})
	r.start()
	pub := harness.NewPublisher(t, r.broker, "cloud-input", 200)
	began := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, hour, rate)
	}()
	var samples []sample
	outages := 0
	tick := d / 60
	for next := period; time.Since(began) < d; {
		if time.Since(began) >= next {
			r.down()
			time.Sleep(away)
			r.up()
			outages++
			next += period
			continue
		}
		s, err := footprint(r.block.PID())
		if err != nil {
			t.Fatal(err)
		}
		s.at = time.Since(began)
		s.spool, s.unsent = r.metric("cloudblock_spool_bytes"), r.metric("cloudblock_spool_messages")
		samples = append(samples, s)
		if !r.block.Running() {
			t.Fatal("the block exited")
		}
		time.Sleep(tick)
	}
	<-done
	tl, _ := r.waitAll(hour, 200, 3*time.Minute, true)
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	// Delivered segments are deleted after the delivered mark is stored:
	// the spool returns to empty.
	if err := waitCond(30*time.Second, func() bool { return r.metric("cloudblock_spool_bytes") == 0 }); err != nil {
		t.Errorf("cloudblock_spool_bytes = %v with nothing left to send, want 0", r.metric("cloudblock_spool_bytes"))
	}
	end, _ := footprint(r.block.PID())
	spoolBytes := r.metric("cloudblock_spool_bytes")
	r.snapshot()

	rss0, rss1 := thirds(samples, func(s sample) float64 { return float64(s.rss) })
	fd0, fd1 := thirds(samples, func(s sample) float64 { return float64(s.fds) })
	th0, th1 := thirds(samples, func(s sample) float64 { return float64(s.threads) })
	note := fmt.Sprintf("%s at %.0f msg/s, %d outages of %s; RSS %.1f -> %.1f MiB, fds %.1f -> %.1f (end %d), threads %.1f -> %.1f; spool at the end %v bytes, %d samples",
		d, rate, outages, away, rss0/(1<<20), rss1/(1<<20), fd0, fd1, end.fds, th0, th1, spoolBytes, len(samples))
	t.Logf("%s: %s; %s", tg.name, tl, note)
	if rss1 > 1.5*rss0 {
		t.Errorf("RSS grew: %.1f MiB in the first third, %.1f in the last", rss0/(1<<20), rss1/(1<<20))
	}
	// A couple of descriptors come and go with connections.
	if fd1 > 1.5*fd0+2 || float64(end.fds) > 1.5*fd0+2 {
		t.Errorf("file descriptors grew: %.1f in the first third, %.1f in the last, %d at the end", fd0, fd1, end.fds)
	}
	if th1 > 1.5*th0+2 {
		t.Errorf("threads grew: %.1f in the first third, %.1f in the last", th0, th1)
	}
	r.report("soak", tl, 0, note)
}
