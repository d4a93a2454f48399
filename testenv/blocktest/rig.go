package blocktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/netproxy"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// A target is one destination binary and how to run it against its
// emulator.
type target struct {
	name string
	pkg  string // main package, for harness.Build
	open func(t *testing.T) backend
	// dupFree: a batch sent again after a crash stores nothing twice
	// (deterministic object keys, FIFO deduplication ids).
	dupFree bool
	// batch is BATCH_MAX_MESSAGES in the crash scenario (the destination's
	// own request limit where it has one).
	batch int
	// shares names the emulator the target's rigs share (shared.go; "":
	// each rig starts its own).
	shares string
	// only limits a variant to some scenarios (nil: all).
	only []string
	// env is added to the block's environment in every scenario.
	env map[string]string
	// badVars are invalid values for the destination's own variables;
	// anyValue lists those that take any value, and why.
	badVars  map[string]badValue
	anyValue map[string]string
	// limitEnv sets the destination's own payload limit (small, to keep the
	// bytes scenario quick) and limit says, once the block is connected,
	// the largest payload of ASCII text it then takes; nil: the destination
	// has no limit below the spool's.
	limitEnv map[string]string
	limit    func(r *rig) int
	// refused is a payload the destination refuses for its content (with
	// limitEnv set), to be dead-lettered like one over the limit; nil: the
	// emulator has no such switch.
	refused []byte
}

// in reports whether the target runs scenarios of this kind at scale sc.
func (tg *target) in(kind string, sc Scale) bool {
	if sc.Scenarios != nil && !slices.Contains(sc.Scenarios, kind) {
		return false
	}
	return tg.only == nil || slices.Contains(tg.only, kind)
}

// A backend is a running emulator (or the file destination's file) with a
// reader that keeps everything it has read (queues and subscriptions are
// consumed by reading).
type backend interface {
	// env is what the block needs to reach the destination at addr, the
	// proxy's host:port ("" for a destination without network).
	env(addr string) map[string]string
	// upstream is the emulator's own host:port ("" without network).
	upstream() string
	// read returns every message delivered so far.
	read(t testing.TB) []msg
	// secrets are values that must never appear in logs, errors or metrics.
	secrets() []string
}

// A switchable backend has an outage of its own besides the proxy's: the
// file destination, which has no network, and the keyless-identity
// backends, whose token endpoint goes away with the destination.
type switchable interface {
	stop(t testing.TB)
	start(t testing.TB)
}

// rig is one target's emulator, proxy, broker and block for a scenario.
type rig struct {
	t      *testing.T
	tg     *target
	be     backend
	proxy  *netproxy.Proxy // nil for the file destination
	broker *harness.Mosquitto
	block  *harness.Block
	env    map[string]string // the block's environment besides the harness's

	mu      sync.Mutex
	secrets []string
	snaps   []string // /metrics and /ready bodies seen, scanned for secrets
}

type rigOpts struct {
	broker harness.MosquittoOptions
	env    map[string]string
	tags   string // build tags for the block, e.g. harness.SeamBuildTag
}

const mqttUser = "cloudblock"

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newRig starts the target's emulator, a proxy in front of it, Mosquitto
// (which checks the block's password) and prepares the block (not started).
func newRig(t *testing.T, tg *target, o rigOpts) *rig {
	t.Helper()
	r := &rig{t: t, tg: tg}
	// Registered first, so it runs last: after the block has stopped and
	// its logs are complete.
	t.Cleanup(r.scanSecrets)
	r.be = tg.open(t)
	addr := ""
	if up := r.be.upstream(); up != "" {
		p, err := netproxy.New(up)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		r.proxy, addr = p, p.Addr()
	}
	// Anonymous clients (the test's publisher) stay allowed; a client that
	// gives a user name (the block) must have the right password.
	pass := "mqttPW-" + randHex(8)
	o.broker.Extra += "password_file " + passwordFile(t, mqttUser, pass) + "\n"
	r.broker = harness.StartMosquitto(t, o.broker)
	r.env = map[string]string{"LOCAL_MQTT_USERNAME": mqttUser, "LOCAL_MQTT_PASSWORD": pass}
	for _, m := range []map[string]string{tg.env, r.be.env(addr), o.env} {
		for k, v := range m {
			r.env[k] = v
		}
	}
	r.block = harness.NewBlock(t, harness.BuildTags(t, tg.pkg, o.tags), r.broker, r.env)
	if d := r.env["BUFFER_DIR"]; d != "" {
		r.block.BufDir = d
	}
	r.secrets = append(r.be.secrets(), pass)
	return r
}

// passwordFile writes a Mosquitto password file with one user.
func passwordFile(t *testing.T, user, pass string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	out, err := exec.Command("mosquitto_passwd", "-c", "-b", path, user, pass).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_passwd (Debian's mosquitto package): %v: %s", err, out)
	}
	return path
}

// scanSecrets fails the test if a secret shows in any log line of any run
// of the block, or in any /metrics or /ready body the test saw.
func (r *rig) scanSecrets() {
	if r.block == nil {
		return
	}
	r.snapshot() // one last look, if the block still runs
	r.mu.Lock()
	defer r.mu.Unlock()
	logs := r.block.Logs()
	for _, s := range r.secrets {
		if len(s) < 8 {
			continue
		}
		if strings.Contains(logs, s) {
			r.t.Errorf("secret %.4s... appears in the block's log", s)
		}
		for _, body := range r.snaps {
			if strings.Contains(body, s) {
				r.t.Errorf("secret %.4s... appears in /metrics or /ready", s)
				break
			}
		}
	}
}

// addSecret adds a value to scan for.
func (r *rig) addSecret(s string) {
	r.mu.Lock()
	r.secrets = append(r.secrets, s)
	r.mu.Unlock()
}

func httpGet(url string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// snapshot keeps the current /metrics and /ready for the secret scan.
func (r *rig) snapshot() {
	if !r.block.Running() {
		return
	}
	_, m := httpGet("http://" + r.block.HTTP + "/metrics")
	_, rd := httpGet("http://" + r.block.HTTP + "/ready")
	r.mu.Lock()
	r.snaps = append(r.snaps, m, rd)
	r.mu.Unlock()
}

// ready returns /ready (and keeps it for the secret scan).
func (r *rig) ready() (int, string) {
	code, body := r.block.Ready()
	r.mu.Lock()
	r.snaps = append(r.snaps, body)
	r.mu.Unlock()
	return code, body
}

// waitReady waits until /ready answers code with a body containing every
// one of subs, and returns the body.
func (r *rig) waitReady(code int, timeout time.Duration, subs ...string) string {
	r.t.Helper()
	var body string
	err := procs.WaitFor(context.Background(), timeout, func() error {
		var c int
		c, body = r.ready()
		if c != code {
			return fmt.Errorf("/ready %d %s", c, body)
		}
		for _, s := range subs {
			if !strings.Contains(body, s) {
				return fmt.Errorf("/ready %d without %q: %s", c, s, body)
			}
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("waiting for /ready %d: %v", code, err)
	}
	return body
}

// metric is one metric's value (-1 when unavailable).
func (r *rig) metric(name string) float64 { return r.block.Metric(name) }

// waitMetric waits until cond(metric value) holds. (harness.Block's
// WaitMetric fails the test the block was made in, which a subtest must
// not do.)
func (r *rig) waitMetric(name string, timeout time.Duration, cond func(float64) bool) {
	r.t.Helper()
	var last float64
	err := procs.WaitFor(context.Background(), timeout, func() error {
		if last = r.metric(name); cond(last) {
			return nil
		}
		return fmt.Errorf("%s = %v", name, last)
	})
	if err != nil {
		r.t.Fatalf("waiting for a metric: %v", err)
	}
}

// start runs the block; the first time, it waits until the block has
// subscribed, since the broker queues nothing for a session that never
// subscribed.
func (r *rig) start() {
	r.t.Helper()
	r.block.Start()
	if r.block.Starts == 1 {
		r.waitMetric("cloudblock_mqtt_connected", time.Minute, func(v float64) bool { return v == 1 })
	}
}

// down takes the destination away: the proxy in front of the emulator
// refuses connections and resets those open, as a destination that went
// away does. The emulator itself keeps running (other rigs may share it,
// and one restarted on its old port may find the port taken), so what was
// delivered stays readable.
func (r *rig) down() {
	r.t.Helper()
	if r.proxy != nil {
		if err := r.proxy.SetMode(netproxy.Refuse); err != nil {
			r.t.Fatal(err)
		}
	}
	if s, ok := r.be.(switchable); ok {
		s.stop(r.t)
	}
}

// up brings the destination back.
func (r *rig) up() {
	r.t.Helper()
	if s, ok := r.be.(switchable); ok {
		s.start(r.t)
	}
	if r.proxy != nil {
		if err := r.proxy.SetMode(netproxy.Pass); err != nil {
			r.t.Fatal(err)
		}
	}
}

// waitAll waits until messages 0..n-1 were all delivered, then until the
// spool is empty (so late resends are read too), and returns the tally of
// every delivery (pure) or of the numbered ones only.
func (r *rig) waitAll(n, size int, timeout time.Duration, pure bool) (tally, []msg) {
	r.t.Helper()
	return r.waitRange(0, n, size, timeout, pure)
}

// waitRange is waitAll for messages from..to-1 (others are not counted).
func (r *rig) waitRange(from, to, size int, timeout time.Duration, pure bool) (tally, []msg) {
	r.t.Helper()
	var tl tally
	var got []msg
	countNow := func() {
		got = r.be.read(r.t)
		if pure {
			tl = countRange(from, to, size, got)
		} else {
			tl = countRange(from, to, size, numbered(got))
		}
	}
	err := procs.WaitFor(context.Background(), timeout, func() error {
		countNow()
		if tl.Lost > 0 {
			time.Sleep(200 * time.Millisecond) // reads are not free: poll calmly
			return fmt.Errorf("%s; missing e.g. %v", tl, tl.Missing)
		}
		return nil
	})
	if err != nil {
		r.t.Errorf("not everything delivered: %v", err)
		return tl, got
	}
	if r.block.Running() {
		r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
		countNow()
	}
	if tl.Corrupt > 0 {
		r.t.Errorf("corrupt deliveries: %s", tl)
	}
	return tl, got
}

// report records the scenario's row; expected is how many messages the
// scenario destroyed on purpose (they are missing but not lost).
func (r *rig) report(scenario string, tl tally, expected int, note string) {
	r.reportStuck(scenario, tl, expected, 0, note)
}

// reportStuck is report when the block could not deliver everything:
// stuck messages are still held (in the spool, or unacknowledged at the
// broker), missing but not lost. The scenario fails them itself.
func (r *rig) reportStuck(scenario string, tl tally, expected, stuck int, note string) {
	stuck = max(min(stuck, tl.Lost-expected), 0)
	lost := max(tl.Lost-expected-stuck, 0)
	record(row{Scenario: scenario, Target: r.tg.name, Published: tl.Published, Delivered: tl.Distinct,
		Duplicates: tl.Copies, Expected: expected, Stuck: stuck, Lost: lost, Note: note})
	if lost > 0 {
		r.t.Errorf("%s: %d messages lost: %s; missing e.g. %v", scenario, lost, tl, tl.Missing)
	}
}

// logContains waits until the block's log contains s.
func (r *rig) logContains(s string, timeout time.Duration) bool {
	return procs.WaitFor(context.Background(), timeout, func() error {
		if strings.Contains(r.block.Logs(), s) {
			return nil
		}
		return fmt.Errorf("no %q in the log", s)
	}) == nil
}

// readEvery is how often a long scenario reads the destination while it
// waits: an emulator may forget what nobody reads for long (pstest drops a
// message left undelivered for 10 minutes).
const readEvery = time.Minute

// idleUntil waits until at, reading the destination every readEvery.
func (r *rig) idleUntil(at time.Time) {
	for d := time.Until(at); d > 0; d = time.Until(at) {
		time.Sleep(min(d, readEvery))
		r.be.read(r.t)
	}
}

// await waits for done, reading the destination every readEvery.
func (r *rig) await(done <-chan struct{}) {
	tick := time.NewTicker(readEvery)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			r.be.read(r.t)
		}
	}
}
