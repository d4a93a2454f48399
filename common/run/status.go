package run

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/common/deadletter"
)

// The status page (GET /) is one self-contained HTML document: inline CSS
// and an inline SVG chart, no script and nothing fetched, so that it works
// offline on the device's LAN and through a public device URL. GET
// /status.json has the same numbers.

const (
	// historySlots is how many sampling intervals the chart shows.
	historySlots = 60
	// historyEvery is the sampling interval: a point a minute.
	historyEvery = time.Minute
	// deadLetterRows is how many dead letters the page lists, newest first.
	deadLetterRows = 20
)

// counts are the counters the chart follows, as they stand.
type counts struct{ received, delivered uint64 }

type tally struct {
	at time.Time
	c  counts
}

// history keeps the counters' values at each sampling tick, for the last
// historySlots intervals (and the one before, to difference).
type history struct {
	mu      sync.Mutex
	samples []tally // oldest first
}

func (h *history) add(at time.Time, c counts) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == historySlots+1 {
		copy(h.samples, h.samples[1:])
		h.samples = h.samples[:historySlots]
	}
	h.samples = append(h.samples, tally{at, c})
}

// run samples read at every tick until ctx ends.
func (h *history) run(ctx context.Context, every time.Duration, read func() counts) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.add(now, read())
		}
	}
}

// slot is what arrived and went out in one interval.
type slot struct {
	End       time.Time `json:"end"`
	Received  uint64    `json:"received"`
	Delivered uint64    `json:"delivered"`
	// Partial: the interval in progress, counted up to now.
	Partial bool `json:"partial,omitempty"`
}

// slots are the completed intervals, oldest first, then the one in
// progress (from the last sample to now, with the counters at cur).
func (h *history) slots(now time.Time, cur counts) []slot {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slot
	for i := 1; i < len(h.samples); i++ {
		a, b := h.samples[i-1], h.samples[i]
		out = append(out, slot{End: b.at, Received: b.c.received - a.c.received, Delivered: b.c.delivered - a.c.delivered})
	}
	if n := len(h.samples); n > 0 {
		// cur was read before the lock: a sample taken since may be ahead.
		last := h.samples[n-1]
		out = append(out, slot{End: now, Received: since(cur.received, last.c.received), Delivered: since(cur.delivered, last.c.delivered), Partial: true})
	}
	// At most historySlots in all: the oldest completed one gives way to
	// the one in progress.
	if len(out) > historySlots {
		out = out[len(out)-historySlots:]
	}
	return out
}

// since is a counter's increase from was to now, none if was is later.
func since(now, was uint64) uint64 {
	if now < was {
		return 0
	}
	return now - was
}

// statusData is what the page and /status.json show. Configuration appears
// only where it is not secret: the service's name, the broker's address
// without user information, the topic filters, the spool's budget and policy.
type statusData struct {
	Service     string    `json:"service"`
	Version     string    `json:"version"`
	Device      string    `json:"device"`
	GeneratedAt time.Time `json:"generated_at"`
	Ready       bool      `json:"ready"`
	Reasons     []string  `json:"reasons"`
	Destination struct {
		Name        string    `json:"name"`
		Connected   bool      `json:"connected"`
		LastError   string    `json:"last_error,omitempty"`
		LastErrorAt time.Time `json:"last_error_at,omitzero"`
		LastSuccess time.Time `json:"last_success_at,omitzero"`
		InFlight    int       `json:"batches_in_flight"`
	} `json:"destination"`
	Broker struct {
		Address   string   `json:"address"`
		Topics    []string `json:"topics"`
		Connected bool     `json:"connected"`
		LastError string   `json:"last_error,omitempty"`
	} `json:"broker"`
	Backlog struct {
		Messages     uint64    `json:"messages"`
		OldestUnsent time.Time `json:"oldest_unsent,omitzero"`
		OldestAge    float64   `json:"oldest_age_seconds"`
		HeldBytes    int64     `json:"held_in_memory_bytes"`
	} `json:"backlog"`
	Spool struct {
		Bytes    int64  `json:"bytes"`
		MaxBytes int64  `json:"max_bytes"`
		Policy   string `json:"full_policy"`
		Full     bool   `json:"full"`
		Failing  string `json:"write_error,omitempty"`
		Dropped  uint64 `json:"dropped"`
	} `json:"spool"`
	// Totals since the service started.
	Totals struct {
		Received     uint64 `json:"received"`
		Acknowledged uint64 `json:"acknowledged"`
		Delivered    uint64 `json:"delivered"`
		DeadLettered uint64 `json:"dead_lettered"`
	} `json:"totals"`
	History struct {
		Slots     []slot    `json:"minutes"`
		Since     time.Time `json:"since,omitzero"` // start of the first slot
		Received  uint64    `json:"received"`
		Delivered uint64    `json:"delivered"`
	} `json:"last_hour"`
	DeadLetters deadLetterSummary `json:"dead_letters"`
}

// deadLetterSummary is the dead-letter store without payloads.
type deadLetterSummary struct {
	Total   int               `json:"total"`
	Bytes   int64             `json:"bytes"`
	Evicted uint64            `json:"evicted"`
	Newest  []deadletter.Info `json:"newest"`
	Error   string            `json:"error,omitempty"`
}

// deadLetterCache reads the store again only when its files changed: a
// page refreshed every half minute should not read megabytes each time.
type deadLetterCache struct {
	dir string

	mu  sync.Mutex
	key string
	sum deadLetterSummary
}

func (c *deadLetterCache) get() deadLetterSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	key, size, err := dirKey(c.dir)
	if err == nil && key == c.key {
		return c.sum
	}
	entries, rerr := deadletter.ReadAll(c.dir)
	sum := deadLetterSummary{Total: len(entries), Bytes: size, Newest: []deadletter.Info{}}
	if rerr != nil {
		sum.Error = rerr.Error()
	}
	for i := len(entries) - 1; i >= 0 && len(sum.Newest) < deadLetterRows; i-- {
		e := entries[i]
		sum.Newest = append(sum.Newest, e.Info())
	}
	if err == nil && rerr == nil {
		c.key, c.sum = key, sum
	}
	return sum
}

// dirKey names the files in dir with their sizes and times (it changes
// whenever an entry is added or removed, by this process or another) and
// adds up their sizes.
func dirKey(dir string) (string, int64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, err
	}
	var b strings.Builder
	var size int64
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			return "", 0, err
		}
		fmt.Fprintf(&b, "%s %d %d\n", de.Name(), fi.Size(), fi.ModTime().UnixNano())
		size += fi.Size()
	}
	return b.String(), size, nil
}

// counts reads the counters the chart follows.
func (p parts) counts() counts {
	return counts{received: p.in.received.Value(), delivered: p.pm.Delivered.Value()}
}

// status gathers what the page shows.
func (s *settings) status(p parts, h *history, dl *deadLetterCache, now time.Time) statusData {
	var d statusData
	d.Service, d.Version, d.Device, d.GeneratedAt = s.svc.Name, Version, s.device, now.UTC()
	reasons, st := s.readiness(p.sp, p.sub, p.pipe)
	d.Ready, d.Reasons = len(reasons) == 0, reasons
	if d.Reasons == nil {
		d.Reasons = []string{}
	}

	d.Destination.Name = s.svc.Name
	d.Destination.Connected = st.Connected
	d.Destination.LastError, d.Destination.LastErrorAt = st.LastError, st.LastErrorAt.UTC()
	d.Destination.LastSuccess = st.LastSuccess.UTC()
	d.Destination.InFlight = st.InFlight

	d.Broker.Address = brokerAddress(s.mqtt.Broker)
	d.Broker.Topics = s.mqtt.Topics
	d.Broker.Connected = p.sub.Connected()
	d.Broker.LastError = p.sub.LastError()

	sst := p.sp.Stats()
	d.Backlog.Messages = p.sp.Backlog()
	if !st.OldestUnsent.IsZero() {
		d.Backlog.OldestUnsent = st.OldestUnsent.UTC()
		d.Backlog.OldestAge = math.Max(0, now.Sub(st.OldestUnsent).Seconds())
	}
	d.Backlog.HeldBytes = sst.HeldBytes
	d.Spool.Bytes, d.Spool.MaxBytes, d.Spool.Policy = sst.Bytes, s.spool.MaxBytes, string(s.spool.Policy)
	d.Spool.Full, d.Spool.Failing, d.Spool.Dropped = sst.Full, sst.Failing, sst.Dropped

	cur := p.counts()
	d.Totals.Received, d.Totals.Acknowledged, d.Totals.Delivered = cur.received, p.in.acked.Value(), cur.delivered
	d.Totals.DeadLettered = p.pm.DeadLettered.Value()

	d.History.Slots = h.slots(now, cur)
	for i, sl := range d.History.Slots {
		if i == 0 {
			d.History.Since = sl.End.Add(-historyEvery).UTC()
			if sl.Partial {
				d.History.Since = time.Time{} // only the slot in progress: since start
			}
		}
		d.History.Received += sl.Received
		d.History.Delivered += sl.Delivered
	}

	d.DeadLetters = dl.get()
	_, _, d.DeadLetters.Evicted = p.dead.Stats()
	return d
}

// brokerAddress is the broker's URL without user information.
func brokerAddress(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	return c.String()
}

// chart is the SVG chart of the slots: the plot's coordinates, computed
// here so that the template only places them.
type chart struct {
	W, H, Left, Right, Top, Bottom int
	Received, Delivered            string  // polyline points
	ReceivedDots, DeliveredDots    []point // the same, drawn (one point is no line)
	YTicks, XTicks                 []tick
	Hover                          []hover
}

type point struct{ X, Y int }

type tick struct {
	X, Y  int
	Label string
}

// hover is a slot's invisible column, whose title the browser shows as a
// tooltip (no script needed).
type hover struct {
	X, W  int
	Title string
}

// The chart's geometry: 10 units a slot, the legend above the plot.
const (
	chartW, chartH        = 700, 280
	chartLeft, chartRight = 70, 670
	chartTop, chartBottom = 36, 236
	chartSlotW            = (chartRight - chartLeft) / historySlots
)

func (c chart) PlotH() int   { return c.Bottom - c.Top }
func (c chart) YLabelY() int { return (c.Top + c.Bottom) / 2 }
func (c chart) XLabelX() int { return (c.Left + c.Right) / 2 }

func newChart(slots []slot) chart {
	c := chart{W: chartW, H: chartH, Left: chartLeft, Right: chartRight, Top: chartTop, Bottom: chartBottom}
	var top uint64
	for _, sl := range slots {
		top = max(top, sl.Received, sl.Delivered)
	}
	// Four or five gridlines at round numbers.
	step := niceStep((max(top, 4) + 3) / 4)
	yMax := max((top+step-1)/step*step, step)
	y := func(v uint64) int {
		return chartBottom - int(math.Round(float64(v)*float64(chartBottom-chartTop)/float64(yMax)))
	}
	for v := uint64(0); v <= yMax; v += step {
		c.YTicks = append(c.YTicks, tick{X: chartLeft - 6, Y: y(v), Label: strconv.FormatUint(v, 10)})
	}
	for _, m := range []int{60, 45, 30, 15, 0} {
		l := strconv.Itoa(m)
		if m == 0 {
			l = "now"
		}
		c.XTicks = append(c.XTicks, tick{X: chartRight - m*chartSlotW, Y: chartBottom + 18, Label: l})
	}
	var rcv, dlv []string
	for i, sl := range slots {
		x := chartRight - (len(slots)-1-i)*chartSlotW // the slot in progress at now
		r, d := point{x, y(sl.Received)}, point{x, y(sl.Delivered)}
		c.ReceivedDots, c.DeliveredDots = append(c.ReceivedDots, r), append(c.DeliveredDots, d)
		rcv = append(rcv, fmt.Sprintf("%d,%d", r.X, r.Y))
		dlv = append(dlv, fmt.Sprintf("%d,%d", d.X, d.Y))
		when := sl.End.UTC().Format("15:04")
		if sl.Partial {
			when = "this minute so far"
		}
		c.Hover = append(c.Hover, hover{X: x - chartSlotW/2, W: chartSlotW, Title: fmt.Sprintf("%s: %d received, %d delivered", when, sl.Received, sl.Delivered)})
	}
	c.Received, c.Delivered = strings.Join(rcv, " "), strings.Join(dlv, " ")
	return c
}

// niceStep is the least of 1, 2, 5, 10, 20, 50, ... at least v.
func niceStep(v uint64) uint64 {
	for p := uint64(1); ; p *= 10 {
		for _, m := range []uint64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

// pageCSS is the page's only style sheet; the Content-Security-Policy
// allows exactly it, by hash.
const pageCSS = `
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#c62828;--rcv:#1f6feb;--dlv:#e36209;--muted:#6b7280;--line:#d0d7de}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:980px;padding:12px 16px}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
.muted{color:var(--muted)}.ok{color:var(--ok)}.bad{color:var(--bad)}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.card h3{margin:0 0 4px;font-size:1em}
.num{font-size:1.4em;font-weight:600}
.err{font-family:ui-monospace,monospace;font-size:.85em;overflow-wrap:anywhere}
svg{width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:currentColor}
.axis{stroke:var(--muted);stroke-width:1}.grid-line{stroke:var(--line);stroke-width:1}
.rcv{fill:none;stroke:var(--rcv);stroke-width:2}.dlv{fill:none;stroke:var(--dlv);stroke-width:2;stroke-dasharray:5 3}
.hover{fill:transparent}.hover:hover{fill:rgba(127,127,127,.15)}
.rcv-dot{fill:var(--rcv)}.dlv-dot{fill:var(--dlv)}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{text-align:left;border-bottom:1px solid var(--line);padding:4px 6px;vertical-align:top}
td.reason,td.topic{overflow-wrap:anywhere}
meter{width:100%}
`

var (
	pageCSP = "default-src 'none'; style-src 'sha256-" + cssHash() + "'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

	pageTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
		"add":   func(a, b int) int { return a + b },
		"bytes": formatBytes,
		"age":   func(t, now time.Time) string { return now.Sub(t).Round(time.Second).String() },
		"when":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"secs":  func(s float64) string { return (time.Duration(s) * time.Second).Round(time.Second).String() },
		"pct": func(a, b int64) string {
			if b <= 0 {
				return "0"
			}
			return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64)
		},
	}).Parse(pageHTML))
)

func cssHash() string {
	h := sha256.Sum256([]byte(pageCSS))
	return base64.StdEncoding.EncodeToString(h[:])
}

// formatBytes writes n in IEC units.
func formatBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n), "B"
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
}

const pageHTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>cloud-block-{{.Service}} on {{.Device}}</title>
<style>` + pageCSS + `</style>
</head>
<body>
<header>
<h1>cloud-block-{{.Service}} <span class="badge {{if .Ready}}ok{{else}}bad{{end}}">{{if .Ready}}ready{{else}}not ready{{end}}</span></h1>
<p class="muted">device <b>{{.Device}}</b> · version {{.Version}} · {{when .GeneratedAt}} · refreshes every 30 s</p>
{{if .Reasons}}<ul id="reasons">{{range .Reasons}}<li class="bad">{{.}}</li>{{end}}</ul>{{end}}
</header>

<section class="grid" id="state">
<div class="card" id="destination"><h3>Destination: {{.Destination.Name}}</h3>
{{if .Destination.Connected}}<p class="ok">connected</p>{{else}}<p class="bad">not connected</p>{{end}}
<p>last delivery: {{if .Destination.LastSuccess.IsZero}}none yet{{else}}{{age .Destination.LastSuccess .GeneratedAt}} ago{{end}}<br>
batches in flight: {{.Destination.InFlight}}</p>
{{if .Destination.LastError}}<p>last error, {{age .Destination.LastErrorAt .GeneratedAt}} ago:<br><span class="err">{{.Destination.LastError}}</span></p>{{end}}
</div>
<div class="card" id="broker"><h3>Broker</h3>
{{if .Broker.Connected}}<p class="ok">connected</p>{{else}}<p class="bad">not connected</p>{{end}}
<p>{{.Broker.Address}}<br>topics: {{range $i, $t := .Broker.Topics}}{{if $i}}, {{end}}<code>{{$t}}</code>{{end}}</p>
{{if .Broker.LastError}}<p>last error:<br><span class="err">{{.Broker.LastError}}</span></p>{{end}}
</div>
<div class="card" id="backlog"><h3>Backlog</h3>
<p><span class="num">{{.Backlog.Messages}}</span> messages not yet delivered<br>
oldest: {{if .Backlog.OldestUnsent.IsZero}}none waiting{{else}}{{secs .Backlog.OldestAge}} old{{end}}<br>
held in memory: {{bytes .Backlog.HeldBytes}}</p>
</div>
<div class="card" id="spool"><h3>Buffer on disk</h3>
<p>{{bytes .Spool.Bytes}} of {{bytes .Spool.MaxBytes}} ({{pct .Spool.Bytes .Spool.MaxBytes}} %)<br>
<meter min="0" max="{{.Spool.MaxBytes}}" high="{{.Spool.MaxBytes}}" value="{{.Spool.Bytes}}">{{pct .Spool.Bytes .Spool.MaxBytes}} %</meter><br>
when full: {{.Spool.Policy}}{{if .Spool.Dropped}} · <span class="bad">{{.Spool.Dropped}} dropped</span>{{end}}</p>
{{if .Spool.Full}}<p class="bad">full: new messages are not acknowledged</p>{{end}}
{{if .Spool.Failing}}<p class="bad">cannot write: <span class="err">{{.Spool.Failing}}</span></p>{{end}}
</div>
<div class="card" id="totals"><h3>Since start</h3>
<p>received <span class="num" id="total-received">{{.Totals.Received}}</span><br>
acknowledged {{.Totals.Acknowledged}}<br>
delivered <span class="num" id="total-delivered">{{.Totals.Delivered}}</span><br>
dead-lettered {{.Totals.DeadLettered}}</p>
</div>
</section>

<section id="traffic">
<h2>Messages per minute, last hour</h2>
<p>received <span class="num" id="hour-received">{{.History.Received}}</span> ·
delivered <span class="num" id="hour-delivered">{{.History.Delivered}}</span>
<span class="muted">{{if .History.Since.IsZero}}since start{{else}}since {{when .History.Since}}{{end}}</span></p>
{{with .Chart}}
<svg id="chart" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">
<title id="chart-title">Messages received and delivered per minute over the last hour: {{$.History.Received}} received, {{$.History.Delivered}} delivered</title>
<line class="rcv" x1="{{.Left}}" x2="{{.Left | add 24}}" y1="12" y2="12"/><text x="{{.Left | add 30}}" y="12" dominant-baseline="middle">received</text>
<line class="dlv" x1="{{.Left | add 110}}" x2="{{.Left | add 134}}" y1="12" y2="12"/><text x="{{.Left | add 140}}" y="12" dominant-baseline="middle">delivered</text>
{{range .YTicks}}<line class="grid-line" x1="{{$.Chart.Left}}" x2="{{$.Chart.Right}}" y1="{{.Y}}" y2="{{.Y}}"/><text x="{{.X}}" y="{{.Y}}" text-anchor="end" dominant-baseline="middle">{{.Label}}</text>
{{end}}{{range .XTicks}}<text x="{{.X}}" y="{{.Y}}" text-anchor="middle">{{.Label}}</text>
{{end}}<line class="axis" id="y-axis" x1="{{.Left}}" x2="{{.Left}}" y1="{{.Top}}" y2="{{.Bottom}}"/>
<line class="axis" id="x-axis" x1="{{.Left}}" x2="{{.Right}}" y1="{{.Bottom}}" y2="{{.Bottom}}"/>
<text x="14" y="{{.YLabelY}}" text-anchor="middle" transform="rotate(-90 14 {{.YLabelY}})">messages per minute</text>
<text x="{{.XLabelX}}" y="{{.H | add -6}}" text-anchor="middle">minutes ago</text>
<polyline id="line-received" class="rcv" points="{{.Received}}"/>
<polyline id="line-delivered" class="dlv" points="{{.Delivered}}"/>
{{range .ReceivedDots}}<circle class="rcv-dot" cx="{{.X}}" cy="{{.Y}}" r="2.5"/>{{end}}
{{range .DeliveredDots}}<circle class="dlv-dot" cx="{{.X}}" cy="{{.Y}}" r="2.5"/>{{end}}
{{range .Hover}}<rect class="hover" x="{{.X}}" y="{{$.Chart.Top}}" width="{{.W}}" height="{{$.Chart.PlotH}}"><title>{{.Title}}</title></rect>
{{end}}</svg>
{{end}}
</section>

<section id="dead-letters">
<h2>Dead letters</h2>
<p><span class="num" id="dead-total">{{.DeadLetters.Total}}</span> stored ({{bytes .DeadLetters.Bytes}}){{if .DeadLetters.Evicted}}, {{.DeadLetters.Evicted}} removed to stay within DEADLETTER_MAX_BYTES{{end}}.
Messages the destination refused, or too large for the buffer; the payloads are not shown.
{{if .DeadLetters.Total}}On the device: <code>cloud-block-{{.Service}} deadletter show &lt;id&gt;</code> for one with its payload,
<code>deadletter replay &lt;id&gt;</code> or <code>--all</code> to send them again once the cause is fixed.{{end}}</p>
{{if .DeadLetters.Error}}<p class="bad">reading the store: <span class="err">{{.DeadLetters.Error}}</span></p>{{end}}
{{if .DeadLetters.Newest}}<table>
<thead><tr><th>dead at</th><th>id</th><th>topic</th><th>size</th><th>reason</th></tr></thead>
<tbody>{{range .DeadLetters.Newest}}
<tr><td>{{when .DeadAt}}</td><td><code>{{.ID}}</code></td><td class="topic">{{.Topic}}</td><td>{{.Size}} B</td><td class="reason">{{.Reason}}</td></tr>{{end}}
</tbody></table>
{{if gt .DeadLetters.Total (len .DeadLetters.Newest)}}<p class="muted">the newest {{len .DeadLetters.Newest}} of {{.DeadLetters.Total}}</p>{{end}}
{{end}}
</section>

<footer><p class="muted">Also: <a href="status.json">status.json</a> · <a href="ready">ready</a> · <a href="live">live</a> · <a href="metrics">metrics</a></p></footer>
</body>
</html>
`

// page is what the template renders.
type page struct {
	statusData
	Chart chart
}

// statusPage serves GET / and GET /status.json. Its history starts with
// the counters as they are when it is made; h.run, which the caller
// starts, adds the rest.
type statusPage struct {
	s  *settings
	p  parts
	h  *history
	dl *deadLetterCache
}

func (s *settings) newStatusPage(p parts) *statusPage {
	h := &history{}
	h.add(time.Now(), p.counts())
	return &statusPage{s: s, p: p, h: h, dl: &deadLetterCache{dir: filepath.Join(s.spool.Dir, "deadletter")}}
}

func (sp *statusPage) serveHTML(w http.ResponseWriter, r *http.Request) {
	d := sp.s.status(sp.p, sp.h, sp.dl, time.Now())
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", pageCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	if err := pageTemplate.Execute(w, page{d, newChart(d.History.Slots)}); err != nil {
		sp.s.log.Warn("status page", "err", err)
	}
}

func (sp *statusPage) serveJSON(w http.ResponseWriter, r *http.Request) {
	d := sp.s.status(sp.p, sp.h, sp.dl, time.Now())
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(d)
}
