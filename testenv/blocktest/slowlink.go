package blocktest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/netproxy"
)

func init() {
	scenarios = append(scenarios, scenario{name: "slowlink", kind: "slowlink", run: slowLink})
}

// slowShape is the slow link of README "Slow links": 300 ms each way (a
// 600 ms round trip, a geostationary satellite's or a poor cellular
// link's) and 1 % of the segments lost. BLOCKTEST_SLOWLINK=<latency>,<loss>
// (e.g. 1s,0.05) tries another.
func slowShape(t *testing.T) netproxy.Shape {
	sh := netproxy.Shape{Latency: 300 * time.Millisecond, Loss: 0.01}
	if v := os.Getenv("BLOCKTEST_SLOWLINK"); v != "" {
		lat, loss, _ := strings.Cut(v, ",")
		var err error
		if sh.Latency, err = time.ParseDuration(lat); err != nil {
			t.Fatalf("BLOCKTEST_SLOWLINK=%q: want <latency>,<loss> such as 1s,0.05: %v", v, err)
		}
		if sh.Loss, err = strconv.ParseFloat(loss, 64); err != nil {
			t.Fatalf("BLOCKTEST_SLOWLINK=%q: want <latency>,<loss> such as 1s,0.05: %v", v, err)
		}
	}
	return sh
}

// slowlink: the block runs with its default timeouts and keepalives over
// the slow link from its first connection on, while a sensor publishes;
// everything is delivered, none dead-lettered. The note gives how long
// delivery took and what the link did.
func slowLink(t *testing.T, tg *target, sc Scale) {
	if tg.name == "file" {
		t.Skip("the file destination has no network")
	}
	shape := slowShape(t)
	r := newRig(t, tg, rigOpts{})
	if err := r.proxy.SetShape(shape); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.start()
	// Two phases: a burst of 1 MB while the block connects, then a steady
	// stream at 20 messages a second for 15 s.
	const burst, burstSize, rate, size = 1000, 1024, 20, 200
	n := burst + int(15*rate)
	harness.NewPublisher(t, r.broker, "cloud-input", burstSize).Publish(0, burst, 0)
	harness.NewPublisher(t, r.broker, "cloud-input", size).Publish(burst, n, rate)
	published := time.Now()
	tl, _ := r.waitRange(0, burst, burstSize, 5*time.Minute, false)
	tl2, _ := r.waitRange(burst, n, size, 5*time.Minute, false)
	took := time.Since(published)
	tl.Published += tl2.Published
	tl.Distinct += tl2.Distinct
	tl.Copies += tl2.Copies
	tl.Resent += tl2.Resent
	tl.Lost += tl2.Lost
	if v := r.metric("cloudblock_dead_lettered_total"); v != 0 {
		t.Errorf("cloudblock_dead_lettered_total = %v over a slow link", v)
	}
	// The defaults must not give up on a call the slow link answers.
	if strings.Contains(r.block.Logs(), "no answer within SEND_TIMEOUT") {
		t.Errorf("a send was abandoned at SEND_TIMEOUT over the slow link")
	}
	r.waitReady(200, time.Minute)
	st := r.proxy.Stats()
	note := fmt.Sprintf("%s each way, %.0f %% loss: %d connections, %d of %d segments lost; last delivered %s after the last publish (%s from start); %v failed calls",
		shape.Latency, shape.Loss*100, st.Accepted, st.Lost, st.Segments, took.Round(100*time.Millisecond),
		time.Since(start).Round(100*time.Millisecond), r.metric("cloudblock_sink_errors_total"))
	t.Logf("%s slowlink: %s; %s", tg.name, tl, note)
	r.report("slowlink", tl, 0, note)
}
