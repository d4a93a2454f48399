// Package metrics is a small Prometheus text-format registry: counters,
// gauges and histograms with fixed labels, enough for one block's /metrics.
// The official client would add ~2 MiB and a protobuf dependency to every
// binary; the exposition format is simple text.
package metrics

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds the metrics of one process.
type Registry struct {
	mu      sync.Mutex
	metrics []metric
	labels  string // constant labels, rendered
}

type metric interface {
	name() string
	write(w io.Writer, labels string)
}

// NewRegistry returns a registry adding the constant labels (name, value
// pairs) to every sample.
func NewRegistry(constLabels ...string) *Registry {
	var parts []string
	for i := 0; i+1 < len(constLabels); i += 2 {
		parts = append(parts, constLabels[i]+"="+strconv.Quote(constLabels[i+1]))
	}
	return &Registry{labels: strings.Join(parts, ",")}
}

func (r *Registry) add(m metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metrics = append(r.metrics, m)
}

// Write writes every metric in the Prometheus text format, sorted by name.
func (r *Registry) Write(w io.Writer) {
	r.mu.Lock()
	ms := append([]metric(nil), r.metrics...)
	r.mu.Unlock()
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].name() < ms[j].name() })
	for _, m := range ms {
		m.write(w, r.labels)
	}
}

func braces(labels string) string {
	if labels == "" {
		return ""
	}
	return "{" + labels + "}"
}

func fmtFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Counter only goes up.
type Counter struct {
	n, help string
	v       atomic.Uint64
}

// Counter registers a counter.
func (r *Registry) Counter(name, help string) *Counter {
	c := &Counter{n: name, help: help}
	r.add(c)
	return c
}

// Add increases the counter by d.
func (c *Counter) Add(d uint64) { c.v.Add(d) }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

func (c *Counter) name() string { return c.n }
func (c *Counter) write(w io.Writer, labels string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s%s %d\n", c.n, c.help, c.n, c.n, braces(labels), c.v.Load())
}

// GaugeFunc reports a value computed at scrape time.
type GaugeFunc struct {
	n, help string
	f       func() float64
	counter bool
}

// GaugeFunc registers a gauge read from f on every scrape.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.add(&GaugeFunc{n: name, help: help, f: f})
}

// CounterFunc registers a counter read from f (a monotonic count kept elsewhere).
func (r *Registry) CounterFunc(name, help string, f func() float64) {
	r.add(&GaugeFunc{n: name, help: help, f: f, counter: true})
}

func (g *GaugeFunc) name() string { return g.n }
func (g *GaugeFunc) write(w io.Writer, labels string) {
	typ := "gauge"
	if g.counter {
		typ = "counter"
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s%s %s\n", g.n, g.help, g.n, typ, g.n, braces(labels), fmtFloat(g.f()))
}

// Histogram counts observations into fixed buckets.
type Histogram struct {
	n, help string
	bounds  []float64
	mu      sync.Mutex
	counts  []uint64
	sum     float64
	count   uint64
}

// Histogram registers a histogram with the given upper bounds (ascending).
func (r *Registry) Histogram(name, help string, bounds ...float64) *Histogram {
	h := &Histogram{n: name, help: help, bounds: bounds, counts: make([]uint64, len(bounds))}
	r.add(h)
	return h
}

// Observe records v.
func (h *Histogram) Observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.count++
}

func (h *Histogram) name() string { return h.n }
func (h *Histogram) write(w io.Writer, labels string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sep := ""
	if labels != "" {
		sep = ","
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", h.n, h.help, h.n)
	for i, b := range h.bounds {
		fmt.Fprintf(w, "%s_bucket{%s%sle=%q} %d\n", h.n, labels, sep, fmtFloat(b), h.counts[i])
	}
	fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n", h.n, labels, sep, h.count)
	fmt.Fprintf(w, "%s_sum%s %s\n%s_count%s %d\n", h.n, braces(labels), fmtFloat(h.sum), h.n, braces(labels), h.count)
}
