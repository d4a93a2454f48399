package run

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/deadletter"
	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// statusRig is a service's parts, not running: a spool and a dead-letter
// store on disk, a subscriber never started (so not connected), a pipeline
// never run (so not connected to its destination), counters set by hand.
type statusRig struct {
	s    *settings
	p    parts
	page *statusPage
	url  string // of a server of s.handler(p), once started
}

const (
	rigPassword = "pw-never-shown-7d1f"
	rigUser     = "user-never-shown-4c2a"
)

func newStatusRig(t *testing.T) *statusRig {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	broker, _ := url.Parse("mqtt://" + rigUser + ":" + rigPassword + "@mosquitto:1883")
	s := &settings{svc: Service{Name: "file"}, log: log, device: "dev-1", readyMaxAge: time.Minute,
		mqtt:  mqtt.Options{Broker: broker, Topics: []string{"cloud-input", "sensors/#"}, Username: rigUser, Password: rigPassword, ClientID: "c", Logger: log},
		spool: spool.Options{Dir: dir, MaxBytes: spool.MaxBytesMin, Policy: spool.Block}}
	sp, err := spool.Open(s.spool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	dead, err := deadletter.Open(filepath.Join(dir, "deadletter"), 1<<20, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	reg := metrics.NewRegistry()
	pm := pipeline.NewMetrics(reg)
	pipe, err := pipeline.New(pipeline.Config{RetryInitial: pipeline.RetryMin}, sp, nil, dead, pm, log)
	if err != nil {
		t.Fatal(err)
	}
	in := newIngest(t.Context(), sp, pipe.DeadLetter, reg)
	sub := mqtt.New(s.mqtt, in.handle)
	r := &statusRig{s: s, p: parts{ctx: t.Context(), reg: reg, sp: sp, sub: sub, pipe: pipe, dead: dead, in: in, pm: pm}}
	r.page = &statusPage{s: s, p: r.p, h: &history{}, dl: &deadLetterCache{dir: filepath.Join(dir, "deadletter")}}
	return r
}

func (r *statusRig) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(r.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// render serves the rig's own page (whose history the test fills).
func (r *statusRig) render(t *testing.T) (http.Header, string) {
	t.Helper()
	w := httptest.NewRecorder()
	r.page.serveHTML(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /: %d", w.Code)
	}
	return w.Header(), w.Body.String()
}

func TestHistorySlots(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var h history
	if got := h.slots(t0, counts{}); len(got) != 0 {
		t.Fatalf("no samples: %v", got)
	}
	h.add(t0, counts{100, 90})
	h.add(t0.Add(time.Minute), counts{110, 98})
	h.add(t0.Add(2*time.Minute), counts{130, 120})
	got := h.slots(t0.Add(150*time.Second), counts{131, 125})
	want := []slot{
		{End: t0.Add(time.Minute), Received: 10, Delivered: 8},
		{End: t0.Add(2 * time.Minute), Received: 20, Delivered: 22},
		{End: t0.Add(150 * time.Second), Received: 1, Delivered: 5, Partial: true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("slots:\n got %v\nwant %v", got, want)
	}

	// Two hours of samples: the last hour is kept, the slot in progress last.
	h = history{}
	for i := range 120 {
		h.add(t0.Add(time.Duration(i)*time.Minute), counts{uint64(i * 2), uint64(i)})
	}
	if len(h.samples) != historySlots+1 {
		t.Errorf("%d samples kept, want %d", len(h.samples), historySlots+1)
	}
	got = h.slots(t0.Add(119*time.Minute+time.Second), counts{238, 119})
	if len(got) != historySlots {
		t.Fatalf("%d slots, want %d", len(got), historySlots)
	}
	if first := got[0]; first.End != t0.Add(61*time.Minute) || first.Received != 2 || first.Delivered != 1 {
		t.Errorf("oldest slot %+v", first)
	}
	if last := got[len(got)-1]; !last.Partial || last.Received != 0 {
		t.Errorf("last slot %+v, want the one in progress", last)
	}
	// Counters read just before a sample was added: nothing in progress
	// (not a wrapped-around difference).
	if last := h.slots(t0.Add(2*time.Hour), counts{230, 110})[historySlots-1]; last.Received != 0 || last.Delivered != 0 {
		t.Errorf("counters behind the last sample: slot %+v", last)
	}
}

// The sampler samples at every tick and stops with its context.
func TestHistorySampler(t *testing.T) {
	var h history
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	var n uint64
	go func() {
		defer close(done)
		h.run(ctx, time.Millisecond, func() counts { n++; return counts{n, n} })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		k := len(h.samples)
		h.mu.Unlock()
		if k >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d samples after 10 s at 1 ms", k)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sampler did not stop with its context")
	}
	for _, sl := range h.slots(time.Now(), counts{n, n}) {
		if !sl.Partial && (sl.Received != 1 || sl.Delivered != 1) {
			t.Fatalf("slot %+v, want one message each", sl)
		}
	}
}

func TestNiceStepAndTicks(t *testing.T) {
	for _, c := range []struct{ in, want uint64 }{{0, 1}, {1, 1}, {3, 5}, {5, 5}, {6, 10}, {11, 20}, {250, 500}, {501, 1000}} {
		if got := niceStep(c.in); got != c.want {
			t.Errorf("niceStep(%d) = %d, want %d", c.in, got, c.want)
		}
	}
}

// The page: state, numbers, the chart's points, the dead letters newest
// first, strict headers, hostile text escaped, no secret and nothing
// fetched from elsewhere.
func TestStatusPage(t *testing.T) {
	r := newStatusRig(t)
	r.p.in.received.Add(42)
	r.p.in.acked.Add(41)
	r.p.pm.Delivered.Add(40)
	r.p.pm.DeadLettered.Add(25)

	t0 := time.Now().Add(-3*time.Minute - 30*time.Second)
	r.page.h.add(t0, counts{0, 0})
	r.page.h.add(t0.Add(time.Minute), counts{10, 8})
	r.page.h.add(t0.Add(2*time.Minute), counts{20, 18})
	r.page.h.add(t0.Add(3*time.Minute), counts{30, 28})
	// Slots: received 10 10 10 then 12 so far, delivered 8 10 10 12.

	received := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	for i := range 24 {
		m := sink.Message{ID: fmt.Sprintf("id-%02d", i), Topic: "cloud-input", Received: received, Payload: []byte("0123456789")}
		if err := r.p.dead.Put([]sink.Message{m}, fmt.Sprintf("refused number %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	hostileTopic := `sensors/<script>alert("t")</script>`
	hostileReason := `payload refused: <img src=x onerror=alert(1)> & "quotes"`
	if err := r.p.dead.Put([]sink.Message{{ID: "id-hostile", Topic: hostileTopic, Received: received, Payload: []byte("secret payload bytes")}}, hostileReason); err != nil {
		t.Fatal(err)
	}

	hd, body := r.render(t)
	t.Log(body)

	// Headers.
	if ct := hd.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if v := hd.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", v)
	}
	csp := hd.Get("Content-Security-Policy")
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(body)
	if style == nil {
		t.Fatal("no <style>")
	}
	sum := sha256.Sum256([]byte(style[1]))
	for _, want := range []string{"default-src 'none'", "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	for _, bad := range []string{"unsafe", "http", "*", "script-src"} {
		if strings.Contains(csp, bad) {
			t.Errorf("Content-Security-Policy %q allows %q", csp, bad)
		}
	}

	// Self-contained: no script, nothing loaded from anywhere.
	if m := regexp.MustCompile(`(?i)<script|<[^>]*\s(src|on[a-z]+)=|<link|@import|url\(`).FindString(body); m != "" {
		t.Errorf("the page has a script, a loaded resource or an event handler: %s", m)
	}
	for _, h := range regexp.MustCompile(`href="([^"]*)"`).FindAllStringSubmatch(body, -1) {
		if strings.Contains(h[1], ":") || strings.HasPrefix(h[1], "/") {
			t.Errorf("link %q is not relative to the page", h[1])
		}
	}

	// Escaped hostile text.
	for _, want := range []string{
		`sensors/&lt;script&gt;alert(&#34;t&#34;)&lt;/script&gt;`,
		`payload refused: &lt;img src=x onerror=alert(1)&gt; &amp; &#34;quotes&#34;`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks the escaped %s", want)
		}
	}

	// No secret, no payload.
	for _, secret := range []string{rigPassword, rigUser, "secret payload bytes", base64.StdEncoding.EncodeToString([]byte("secret payload bytes"))} {
		if strings.Contains(body, secret) {
			t.Errorf("the page shows %q", secret)
		}
	}

	// State and numbers.
	for _, want := range []string{
		`<span class="badge bad">not ready</span>`,
		`<li class="bad">not connected to the MQTT broker</li>`,
		`Destination: file</h3>`,
		`mqtt://mosquitto:1883`,
		`<code>cloud-input</code>, <code>sensors/#</code>`,
		`id="total-received">42<`, `acknowledged 41`, `id="total-delivered">40<`, `dead-lettered 25`,
		`<span class="num">0</span> messages not yet delivered`,
		`of 1.0 MiB`,
		`when full: block`,
		`id="hour-received">42<`, `id="hour-delivered">40<`,
		`id="dead-total">25<`,
		`the newest 20 of 25`,
		`device <b>dev-1</b>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}

	// The chart: 10 units a slot ending at now (x 670), y from 236 (0) up
	// to 36 (the axis' top, 15 here: ticks 0, 5, 10, 15).
	for _, want := range []string{
		`<polyline id="line-received" class="rcv" points="640,103 650,103 660,103 670,76"/>`,
		`<polyline id="line-delivered" class="dlv" points="640,129 650,103 660,103 670,76"/>`,
		`<circle class="dlv-dot" cx="640" cy="129" r="2.5"/>`,
		`<line class="axis" id="x-axis" x1="70" x2="670" y1="236" y2="236"/>`,
		`>messages per minute</text>`, `>minutes ago</text>`, `>now</text>`, `>60</text>`,
		`>15</text>`, `<title>this minute so far: 12 received, 12 delivered</title>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("chart lacks %s", want)
		}
	}

	// Dead letters newest first: the hostile one, then 23, 22, ...; 20 rows.
	rows := regexp.MustCompile(`<tr><td>[^<]*</td><td><code>([^<]*)</code></td><td class="topic">[^<]*</td><td>(\d+) B</td>`).FindAllStringSubmatch(body, -1)
	if len(rows) != deadLetterRows {
		t.Fatalf("%d dead-letter rows, want %d", len(rows), deadLetterRows)
	}
	if rows[0][1] != "id-hostile" || rows[0][2] != "20" || rows[1][1] != "id-23" || rows[19][1] != "id-05" || rows[19][2] != "10" {
		t.Errorf("rows: first %v, second %v, last %v", rows[0][1:], rows[1][1:], rows[19][1:])
	}
}

// The handler serves the page at / only, and /status.json with the same
// numbers and no payload.
func TestStatusRoutes(t *testing.T) {
	r := newStatusRig(t)
	r.p.in.received.Add(3) // before the page: not in its last hour
	srv := httptest.NewServer(r.s.handler(r.p))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	r.p.in.received.Add(7)
	r.p.pm.Delivered.Add(5)
	if err := r.p.dead.Put([]sink.Message{{ID: "x1", Topic: "t/<b>", Received: time.Now(), Payload: []byte("payload-xyz")}}, "too big"); err != nil {
		t.Fatal(err)
	}

	resp, body := r.get(t, "/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="total-received">10<`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET /: %s, CSP %q\n%s", resp.Status, resp.Header.Get("Content-Security-Policy"), body)
	}
	if resp, _ := r.get(t, "/nothing-here"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %s, want 404", resp.Status)
	}

	resp, body = r.get(t, "/status.json")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /status.json: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, secret := range []string{rigPassword, rigUser, "payload-xyz", base64.StdEncoding.EncodeToString([]byte("payload-xyz")), "payload_base64"} {
		if strings.Contains(body, secret) {
			t.Errorf("status.json shows %q", secret)
		}
	}
	var d statusData
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	if d.Totals.Received != 10 || d.Totals.Delivered != 5 || d.History.Received != 7 || d.History.Delivered != 5 {
		t.Errorf("totals %+v, last hour %d/%d", d.Totals, d.History.Received, d.History.Delivered)
	}
	if d.Ready || len(d.Reasons) != 2 || d.Broker.Connected || d.Destination.Connected || d.Broker.Address != "mqtt://mosquitto:1883" {
		t.Errorf("state: ready %v %q, broker %+v, destination %+v", d.Ready, d.Reasons, d.Broker, d.Destination)
	}
	if d.DeadLetters.Total != 1 || len(d.DeadLetters.Newest) != 1 || d.DeadLetters.Newest[0].Topic != "t/<b>" || d.DeadLetters.Newest[0].Size != len("payload-xyz") || d.DeadLetters.Bytes == 0 {
		t.Errorf("dead letters %+v", d.DeadLetters)
	}
}

// The dead-letter summary is read again when the store's files change,
// not on every request.
func TestDeadLetterCache(t *testing.T) {
	r := newStatusRig(t)
	put := func(id string) {
		t.Helper()
		if err := r.p.dead.Put([]sink.Message{{ID: id, Topic: "t", Received: time.Now(), Payload: []byte("p")}}, "no"); err != nil {
			t.Fatal(err)
		}
	}
	put("a")
	if got := r.page.dl.get(); got.Total != 1 || got.Newest[0].ID != "a" {
		t.Fatalf("%+v", got)
	}
	key := r.page.dl.key
	put("b")
	if got := r.page.dl.get(); got.Total != 2 || got.Newest[0].ID != "b" {
		t.Fatalf("after a second entry: %+v", got)
	}
	if r.page.dl.key == key {
		t.Error("the key did not change with the files")
	}
}
