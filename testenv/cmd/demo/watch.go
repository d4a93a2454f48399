package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// destination is one cloud's emulator, as the demo drives it.
type destination interface {
	// Describe names the emulator for the first line.
	Describe() string
	// Helpers are extra packages to build (readers that need a cloud SDK,
	// kept out of this binary so the default demo compiles fast).
	Helpers() []string
	// Start launches the emulator and returns the block's variables for it.
	Start(ctx context.Context, d *demo) ([]string, error)
	// Peek returns what arrived since the previous call.
	Peek(ctx context.Context) ([]show.Arrival, error)
	// Stop ends in-process emulators (processes are stopped by the demo).
	Stop()
}

// watcher prints the block's counters and what arrived, and keeps count.
type watcher struct {
	d     *demo
	dest  destination
	block *procs.Proc

	readings  map[string]bool // boot/seq of every distinct reading seen
	dups      int
	arrivals  int
	firstData time.Time
	lastErr   string
}

const (
	showArrivals = 3   // arrivals printed in full per report
	showLines    = 2   // lines printed per arrival
	lineWidth    = 320 // characters per printed line: a whole NDJSON line of the sensor
)

func (w *watcher) report(ctx context.Context) {
	w.metricsLine(ctx)
	w.print(w.peek(ctx))
}

// final is the last report: the readers of some emulators poll, so it waits
// up to a few seconds for everything the block delivered to show up.
func (w *watcher) final(ctx context.Context) {
	m, err := w.metricsLine(ctx)
	var got []show.Arrival
	deadline := time.Now().Add(5 * time.Second)
	for {
		more := w.peek(ctx)
		got = append(got, more...)
		seen := len(w.readings) + w.dups
		for _, a := range got {
			seen += len(a.Payloads)
		}
		if err != nil || float64(seen) >= m["cloudblock_delivered_total"] || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	w.print(got)
}

func (w *watcher) metricsLine(ctx context.Context) (metrics, error) {
	m, err := scrape(ctx, w.d.metricsURL)
	if err != nil {
		w.d.say("block: /metrics did not answer: %v", err)
		return nil, err
	}
	w.d.say("block: received %s, acknowledged %s, delivered %s, in buffer %s, oldest unsent %ss, mqtt %s, destination %s",
		m.n("cloudblock_received_total"), m.n("cloudblock_acknowledged_total"), m.n("cloudblock_delivered_total"),
		m.n("cloudblock_spool_messages"), m.f1("cloudblock_oldest_unsent_age_seconds"),
		m.up("cloudblock_mqtt_connected"), m.up("cloudblock_destination_connected"))
	return m, nil
}

// peek asks the emulator what arrived; an error is printed once while it
// stays the same, not at every report.
func (w *watcher) peek(ctx context.Context) []show.Arrival {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got, err := w.dest.Peek(ctx)
	if err != nil {
		if err.Error() != w.lastErr {
			w.d.say("emulator: reading back failed: %v", err)
			w.lastErr = err.Error()
		}
	} else {
		w.lastErr = ""
	}
	return got
}

// print shows a few arrivals in full and counts all of them.
func (w *watcher) print(got []show.Arrival) {
	if len(got) == 0 {
		return
	}
	if w.firstData.IsZero() {
		w.firstData = time.Now()
		w.d.say("first data in the emulator %.1fs after the sensor started (%.1fs after the demo started)",
			w.firstData.Sub(w.d.sensorAt).Seconds(), w.firstData.Sub(w.d.start).Seconds())
	}
	for i, a := range got {
		w.count(a.Payloads)
		if i < showArrivals {
			w.d.indent(fmt.Sprintf("+ %s", a.Label))
			for j, l := range a.Lines {
				if j == showLines {
					w.d.indent(fmt.Sprintf("    ... %d more", len(a.Lines)-showLines))
					break
				}
				w.d.indent("    " + clip(l, lineWidth))
			}
		}
	}
	if len(got) > showArrivals {
		w.d.indent(fmt.Sprintf("+ %d more", len(got)-showArrivals))
	}
	w.arrivals += len(got)
	w.d.say("emulator now holds %s (%s)", show.Plural(len(w.readings), "distinct sensor reading"), show.Plural(w.dups, "duplicate"))
}

// count records the sensor readings among payloads, by their boot and seq.
func (w *watcher) count(payloads [][]byte) {
	if w.readings == nil {
		w.readings = map[string]bool{}
	}
	for _, p := range payloads {
		var r struct {
			Boot int64  `json:"boot"`
			Seq  uint64 `json:"seq"`
		}
		if json.Unmarshal(p, &r) != nil || r.Seq == 0 {
			continue
		}
		k := fmt.Sprintf("%d/%d", r.Boot, r.Seq)
		if w.readings[k] {
			w.dups++
		}
		w.readings[k] = true
	}
}

// drain waits until the block has delivered everything it acknowledged, so
// the final report shows all the sensor sent. False if it did not in time.
func (w *watcher) drain(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := scrape(ctx, w.d.metricsURL)
		if err == nil && m["cloudblock_spool_messages"] == 0 && m["cloudblock_delivered_total"] >= m["cloudblock_acknowledged_total"] {
			return true
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// metrics are the block's Prometheus samples, summed over labels.
type metrics map[string]float64

func scrape(ctx context.Context, url string) (metrics, error) {
	if url == "" {
		return nil, fmt.Errorf("the block is not running")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(name, '{'); i >= 0 {
			// Labels may hold spaces: the value is the last field.
			name = name[:i]
			rest = line[strings.LastIndexByte(line, ' ')+1:]
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			m[name] += v
		}
	}
	return m, sc.Err()
}

func (m metrics) n(name string) string  { return strconv.FormatFloat(m[name], 'f', 0, 64) }
func (m metrics) f1(name string) string { return strconv.FormatFloat(m[name], 'f', 1, 64) }
func (m metrics) up(name string) string {
	if m[name] == 1 {
		return "up"
	}
	return "DOWN"
}

var (
	sensorStopped = regexp.MustCompile(`"msg":"stopping".*"published":(\d+),"acknowledged":(\d+)`)
	blockStopLine = regexp.MustCompile(`"msg":"stopped".*"received":(\d+),"acknowledged":(\d+),"delivered":(\d+),"undelivered_in_spool":(\d+)`)
)

// sensorCount is what the sensor said it published, from its last log line.
func sensorCount(log string) string {
	if m := sensorStopped.FindStringSubmatch(log); m != nil {
		return fmt.Sprintf("%s readings (%s acknowledged by the broker)", m[1], m[2])
	}
	return "an unknown number of readings"
}

// blockStopped is the block's own account at exit.
func blockStopped(log string) string {
	if m := blockStopLine.FindStringSubmatch(log); m != nil {
		return fmt.Sprintf("%s of the %s it received (%s left in its buffer)", m[3], m[1], m[4])
	}
	return "an unknown number of messages (no stop line in its log)"
}
