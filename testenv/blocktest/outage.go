package blocktest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/netproxy"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

const (
	// outageRate is the production rate during outages (messages/s).
	outageRate = 50
	outageSize = 200
	// readyAge is READY_MAX_UNSENT_AGE: /ready must fail this soon.
	readyAge = 5 * time.Second
)

// stream is a publisher's numbering, shared by a rig's phases.
type stream struct {
	pub  *harness.Publisher
	next int
}

// publish sends k messages at rate in the background; the returned channel
// closes when the broker has acknowledged them all.
func (s *stream) publish(k int, rate float64) (from, to int, done chan struct{}) {
	from, to = s.next, s.next+k
	s.next = to
	done = make(chan struct{})
	go func() {
		defer close(done)
		s.pub.Publish(from, to, rate)
	}()
	return from, to, done
}

// drainTimes waits until the spool is empty after the destination came
// back at upAt, and returns when the first message of the backlog was
// delivered (recovery) and when the last was (0 if it was not).
func drainTimes(r *rig, backlog float64, upAt time.Time, timeout time.Duration) (first, last time.Duration) {
	r.t.Helper()
	err := procs.WaitFor(context.Background(), timeout, func() error {
		v := r.metric("cloudblock_spool_messages")
		if v >= 0 && v < backlog && first == 0 {
			first = time.Since(upAt)
		}
		if v == 0 {
			last = time.Since(upAt)
			return nil
		}
		return fmt.Errorf("%v of %v messages still in the spool", v, backlog)
	})
	if err != nil {
		r.t.Errorf("backlog not drained %s after the destination came back: %v", timeout, err)
		return first, 0
	}
	if first == 0 {
		first = last
	}
	return first, last
}

// checkTruth checks what /metrics say while the destination is away and
// k messages arrived meanwhile: all spooled and acknowledged, none
// delivered, the oldest as old as the outage.
func checkTruth(r *rig, k int, since time.Time, deliveredBefore float64) {
	r.t.Helper()
	r.waitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == float64(k) })
	if d := r.metric("cloudblock_delivered_total"); d != deliveredBefore {
		r.t.Errorf("cloudblock_delivered_total went from %v to %v while the destination was away", deliveredBefore, d)
	}
	age := r.metric("cloudblock_oldest_unsent_age_seconds")
	if min := time.Since(since).Seconds() / 2; age < min {
		r.t.Errorf("cloudblock_oldest_unsent_age_seconds = %v, want at least %.0f", age, min)
	}
	r.snapshot()
}

// Outages, each with a rig of its own:
//   - outage: the destination away for the scale's Outage (the proxy in
//     front of the emulator refusing connections and resetting open ones);
//   - outage-past-cap: away for longer than the retry cap
//     (RETRY_MAX_BACKOFF), so the block sits at the cap when it returns;
//   - network-cut: the network to the emulator black-holed by the proxy
//     (connections hang, nothing is refused);
//   - broker-restart: Mosquitto stopped mid-stream and started again.
//
// Nothing is lost, and /ready and the metrics tell the truth meanwhile.
func outage(t *testing.T, tg *target, sc Scale) {
	r, s := outageRig(t, tg, nil)
	away(r, s, "outage", sc.Outage, 0, false)
}

func outagePastCap(t *testing.T, tg *target, sc Scale) {
	// The retry cap is a quarter of the outage: the block has been
	// retrying at the cap for most of it when the emulator returns. At
	// least 3 s: a failed call takes time of its own (the Blob SDK's quick
	// retries of a refused connection: about 1.7 s), and the last 2 caps of
	// the outage must hold one.
	capd := max(sc.Outage/4, 3*time.Second)
	r, s := outageRig(t, tg, map[string]string{"RETRY_MAX_BACKOFF": capd.String()})
	away(r, s, "outage-past-cap", sc.Outage+2*capd, capd, false)
}

func networkCut(t *testing.T, tg *target, sc Scale) {
	if tg.name == "file" {
		t.Skip("the file destination has no network")
	}
	// A request the cut left hanging ends at SEND_TIMEOUT: no longer than
	// the cut, so that (as with the default at full scale) the block is
	// retrying afresh when the network heals.
	r, s := outageRig(t, tg, map[string]string{"SEND_TIMEOUT": min(sc.Outage, pipeline.DefaultSendTimeout).String()})
	away(r, s, "network-cut", sc.Outage, 0, true)
}

func brokerRestart(t *testing.T, tg *target, sc Scale) {
	r, s := outageRig(t, tg, nil)
	down := min(max(sc.Outage/4, 3*time.Second), 15*time.Second)
	k := int(outageRate * (2*down + 10*time.Second).Seconds())
	reconnects := r.metric("cloudblock_mqtt_reconnects_total")
	from, to, done := s.publish(k, outageRate)
	time.Sleep(5 * time.Second) // mid-stream
	r.broker.Stop()
	downAt := time.Now()
	body := r.waitReady(503, 30*time.Second, "not connected to the MQTT broker")
	if v := r.metric("cloudblock_mqtt_connected"); v != 0 {
		t.Errorf("cloudblock_mqtt_connected = %v while the broker is down", v)
	}
	time.Sleep(time.Until(downAt.Add(down)))
	r.broker.Start()
	upAt := time.Now()
	r.waitMetric("cloudblock_mqtt_connected", time.Minute, func(v float64) bool { return v == 1 })
	back := time.Since(upAt)
	<-done
	tl, _ := r.waitRange(from, to, outageSize, 3*time.Minute, false)
	r.waitReady(200, time.Minute)
	note := fmt.Sprintf("broker down %s mid-stream; block reconnected %s after it was back (reconnects %v -> %v); publisher republished %d; /ready said %.100s",
		down, back.Round(100*time.Millisecond), reconnects, r.metric("cloudblock_mqtt_reconnects_total"), s.pub.Republish.Load(), strings.TrimSpace(body))
	t.Logf("%s broker-restart: %s; %s", tg.name, tl, note)
	r.report("broker-restart", tl, 0, note)
}

// outageRig starts a block (with env besides the outage settings) against
// a broker that keeps its sessions on disk, and delivers a first stream.
func outageRig(t *testing.T, tg *target, env map[string]string) (*rig, *stream) {
	all := map[string]string{"READY_MAX_UNSENT_AGE": readyAge.String()}
	for k, v := range env {
		all[k] = v
	}
	r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Persistence: true}, env: all})
	r.start()
	s := &stream{pub: harness.NewPublisher(t, r.broker, "cloud-input", outageSize)}
	from, to, done := s.publish(200, 0)
	<-done
	r.waitRange(from, to, outageSize, time.Minute, true)
	r.waitReady(200, time.Minute)
	return r, s
}

// away runs one outage of length d: the emulator stopped or, with cut, the
// network to it black-holed, while messages keep coming at outageRate.
// With capd > 0 (the block's RETRY_MAX_BACKOFF), it also checks that the
// block still retries at the end and notices the return within the cap.
func away(r *rig, s *stream, scenario string, d, capd time.Duration, cut bool) {
	t := r.t
	t.Helper()
	k := int(outageRate * d.Seconds())
	before := r.metric("cloudblock_delivered_total")
	if cut {
		if err := r.proxy.SetMode(netproxy.Hang); err != nil {
			t.Fatal(err)
		}
	} else {
		r.down()
	}
	downAt := time.Now()
	from, to, done := s.publish(k, outageRate)
	body := r.waitReady(503, readyAge+30*time.Second, "oldest undelivered message")
	r.checkLive()
	retrying := ""
	if capd > 0 {
		// Retries never give up: failed calls keep coming at the cap.
		time.Sleep(time.Until(downAt.Add(d - 2*capd)))
		errsBefore := r.metric("cloudblock_sink_errors_total")
		time.Sleep(time.Until(downAt.Add(d)))
		errsAfter := r.metric("cloudblock_sink_errors_total")
		retrying = fmt.Sprintf("; %v failed calls in its last %s", errsAfter-errsBefore, 2*capd)
		if errsAfter <= errsBefore {
			t.Errorf("no retry in the last %s of the outage (cloudblock_sink_errors_total stayed %v)", 2*capd, errsAfter)
		}
	}
	<-done
	time.Sleep(time.Until(downAt.Add(d)))
	checkTruth(r, k, downAt, before)
	errs := r.metric("cloudblock_sink_errors_total")
	if cut {
		if err := r.proxy.SetMode(netproxy.Pass); err != nil {
			t.Fatal(err)
		}
	} else {
		r.up()
	}
	upAt := time.Now()
	first, last := drainTimes(r, float64(k), upAt, 5*time.Minute)
	tl, _ := r.waitRange(from, to, outageSize, 2*time.Minute, false)
	produced := time.Duration(float64(k) / outageRate * float64(time.Second))
	draining := last - first
	note := fmt.Sprintf("away %s, %d produced meanwhile; first delivery %s after the return, drained in %s more (%.0fx production); %v failed calls%s; /ready said %.140s",
		d.Round(time.Second), k, first.Round(100*time.Millisecond), draining.Round(100*time.Millisecond),
		produced.Seconds()/max(draining.Seconds(), 0.001), errs, retrying, strings.TrimSpace(body))
	if capd > 0 {
		note = fmt.Sprintf("RETRY_MAX_BACKOFF=%s; ", capd) + note
	}
	t.Logf("%s %s: %s; %s", r.tg.name, scenario, tl, note)
	if last > 0 {
		r.waitReady(200, time.Minute)
		// How fast the backlog drains is reported (the note), not asserted:
		// on a shared 2-core machine it measures the neighbours as much as
		// the block; `make bench` measures throughput.
		// A retry waits at most the cap (jitter keeps it under), plus the
		// time a connection attempt takes.
		if capd > 0 && first > capd+10*time.Second {
			t.Errorf("first delivery %s after the destination came back, more than the retry cap %s (+10 s)", first, capd)
		}
	}
	stuck := 0
	if last == 0 { // not drained: what is missing is still in the spool
		stuck = int(max(r.metric("cloudblock_spool_messages"), 0))
	}
	r.reportStuck(scenario, tl, 0, stuck, note)
}

// checkLive runs the binary's healthcheck (the image's HEALTHCHECK) against
// the running block: while the destination is away the block is not ready
// but live, since it is doing its job, keeping messages until they can go.
func (r *rig) checkLive() {
	r.t.Helper()
	cmd := exec.Command(r.block.Bin, "healthcheck")
	cmd.Env = []string{"HTTP_LISTEN=" + r.block.HTTP}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		r.t.Errorf("healthcheck while the destination is away: %v: %s (want exit 0, ok: not ready, but live)", err, out)
	}
}
