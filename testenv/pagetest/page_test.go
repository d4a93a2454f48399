package pagetest

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// chromiumPath finds the browser (installed by `make setup`). Missing, the
// test fails: a skipped render would pass unseen.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: run `make setup` (scripts/setup.sh chromium installs Debian's chromium)")
	return ""
}

// chromium runs the headless browser with args and returns its stdout and
// stderr. It has a profile of its own and runs in a process group of its
// own, which is killed when it is done or past its deadline.
func chromium(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0"}
	cmd := exec.CommandContext(ctx, chromiumPath(t), append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind, if any
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), errb.String()
}

// refusals are the lines the browser logs when the page's own policy
// blocks something on it (an inline style without its hash, a fetch).
func refusals(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if refusal.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

var refusal = regexp.MustCompile(`(?i)Content[- ]Security[- ]Policy|Refused to`)

func TestStatusPageInChromium(t *testing.T) {
	chromiumPath(t) // before starting anything
	bin := harness.Build(t, "testenv/cmd/filedest")
	broker := harness.StartMosquitto(t, harness.MosquittoOptions{})
	b := harness.NewBlock(t, bin, broker, map[string]string{
		"FILE_SINK_PATH":          filepath.Join(t.TempDir(), "out.jsonl"),
		"FILE_SINK_REJECT_PREFIX": "REFUSE",
		"LOCAL_MQTT_INPUT_TOPIC":  "cloud-input/#",
	})
	b.Start() // returns once /live answers and the block is subscribed

	const n = 25
	pub := harness.NewPublisher(t, broker, "cloud-input", 64)
	pub.Publish(0, n, 0)
	// One the destination refuses, on a topic that is markup.
	hostile := "cloud-input/<script>alert(1)</script>"
	pub.PublishRaw(hostile, []byte("REFUSE this one"), false)
	b.WaitMetric("cloudblock_delivered_total", 30*time.Second, func(v float64) bool { return v == n })
	b.WaitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == 1 })
	dead := b.DeadLetters(t)
	if len(dead) != 1 || dead[0].Topic != hostile {
		t.Fatalf("dead letters: %v", dead)
	}
	reason := dead[0].Reason

	// /status.json has the numbers the page shows.
	var st struct {
		Ready  bool `json:"ready"`
		Totals struct {
			Received, Delivered uint64
		} `json:"totals"`
		LastHour struct {
			Received, Delivered uint64
		} `json:"last_hour"`
		DeadLetters struct {
			Total int `json:"total"`
		} `json:"dead_letters"`
	}
	resp, err := http.Get("http://" + b.HTTP + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("status.json: %v", err)
	}
	if !st.Ready || st.Totals.Received != n+1 || st.Totals.Delivered != n || st.LastHour.Received != n+1 || st.LastHour.Delivered != n || st.DeadLetters.Total != 1 {
		t.Errorf("status.json: %+v, want ready, %d received and %d delivered (also in the last hour), 1 dead letter", st, n+1, n)
	}

	url := "http://" + b.HTTP + "/"
	dom, logs := chromium(t, "--dump-dom", url)
	t.Logf("rendered DOM, %d bytes", len(dom))
	if r := refusals(logs); len(r) > 0 {
		t.Errorf("chromium refused something on the page:\n%s", strings.Join(r, "\n"))
	}
	if strings.Contains(strings.ToLower(dom), "<script") {
		t.Errorf("the rendered page has a script element:\n%s", dom)
	}
	for _, want := range []string{
		`<span class="badge ok">ready</span>`,
		`id="total-received">` + strconv.Itoa(n+1) + `<`,
		`id="total-delivered">` + strconv.Itoa(n) + `<`,
		`id="hour-received">` + strconv.Itoa(n+1) + `<`,
		`id="hour-delivered">` + strconv.Itoa(n) + `<`,
		`id="dead-total">1<`,
		html.EscapeString(hostile),
		domText(reason),
		`>messages per minute</text>`,
		`>minutes ago</text>`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %s", want)
		}
	}
	// The chart, an SVG in the document, with both lines off the baseline
	// where the messages came in.
	svg := regexp.MustCompile(`(?s)<svg id="chart".*?</svg>`).FindString(dom)
	if svg == "" {
		t.Fatalf("no SVG chart in the rendered page:\n%s", dom)
	}
	axis := regexp.MustCompile(`<line [^>]*id="x-axis"[^>]* y1="(\d+)"`).FindStringSubmatch(svg)
	if axis == nil {
		t.Fatalf("chart: no x axis:\n%s", svg)
	}
	baseline, _ := strconv.Atoi(axis[1])
	for _, line := range []string{"line-received", "line-delivered"} {
		m := regexp.MustCompile(`<polyline id="` + line + `"[^>]* points="([^"]*)"`).FindStringSubmatch(svg)
		if m == nil {
			t.Errorf("chart: no %s polyline", line)
			continue
		}
		if !pointAbove(m[1], baseline) {
			t.Errorf("chart: %s points %q all on the baseline (y %d)", line, m[1], baseline)
		}
	}

	// A screenshot: a PNG showing both lines in their colours, so the
	// inline style sheet applied and the SVG was drawn.
	shot := filepath.Join(t.TempDir(), "status.png")
	_, logs = chromium(t, "--hide-scrollbars", "--window-size=1000,1600", "--screenshot="+shot, url)
	if r := refusals(logs); len(r) > 0 {
		t.Errorf("chromium refused something on the page:\n%s", strings.Join(r, "\n"))
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if sz := img.Bounds().Size(); sz.X < 500 || sz.Y < 500 {
		t.Errorf("screenshot %v, want the window's size", sz)
	}
	rcv, dlv := colourPixels(img, 0x1f, 0x6f, 0xeb), colourPixels(img, 0xe3, 0x62, 0x09)
	t.Logf("screenshot %v: %d pixels of the received line's colour, %d of the delivered line's", img.Bounds().Size(), rcv, dlv)
	if rcv < 20 || dlv < 20 {
		t.Errorf("the screenshot shows %d pixels of the received line's colour and %d of the delivered line's: the chart was not drawn", rcv, dlv)
	}
}

// domText is s as a browser serialises a text node: &, < and > escaped,
// quotes not.
func domText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// pointAbove reports whether a polyline has a point above y (SVG's y grows
// downwards).
func pointAbove(points string, y int) bool {
	for _, p := range strings.Fields(points) {
		_, ys, ok := strings.Cut(p, ",")
		if v, err := strconv.Atoi(ys); ok && err == nil && v < y {
			return true
		}
	}
	return false
}

// colourPixels counts the pixels within a few levels of the colour r, g, b.
func colourPixels(img image.Image, r, g, b uint8) int {
	near := func(a uint32, c uint8) bool { d := int(a>>8) - int(c); return d > -10 && d < 10 }
	n := 0
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr, r) && near(pg, g) && near(pb, b) {
				n++
			}
		}
	}
	return n
}
