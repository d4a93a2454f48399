package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// The identities the demo gives the block and the sensor.
const (
	demoDevice = "demo-device"
	demoTopic  = "cloud-input"
)

// demo holds what the run started, so it can stop all of it in reverse order.
type demo struct {
	root, work, bin, logs, buffer string
	cfg                           config
	out                           io.Writer
	start                         time.Time
	metricsURL                    string    // the block's /metrics, once it runs
	sensorAt                      time.Time // when the sensor started

	mu      sync.Mutex
	started []*procs.Proc
	// watched are processes whose early exit ends the demo with an error.
	watched []*procs.Proc
	// cleanups run after every process is stopped (in-process emulators).
	cleanups []func()
}

func newDemo(root string, cfg config, out io.Writer) (*demo, error) {
	work := cfg.Work
	if work == "" {
		work = filepath.Join(root, ".cache", "demo", cfg.Service)
	}
	// A fresh start every run: an old buffer would deliver old messages into
	// a new, empty emulator and muddle what the demo shows.
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	d := &demo{root: root, work: work, cfg: cfg, out: out, start: time.Now(),
		bin: filepath.Join(work, "bin"), logs: filepath.Join(work, "logs"), buffer: filepath.Join(work, "buffer")}
	for _, dir := range []string{d.bin, d.logs, d.buffer} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// say prints one line stamped with the time since the demo started.
func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "[%5.1fs] %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// indent prints lines under the previous one, without a stamp.
func (d *demo) indent(lines ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range lines {
		fmt.Fprintf(d.out, "          %s\n", l)
	}
}

// build compiles the block, the sensor and the destination's helpers with
// the workspace's go, in one go build so the compiles share the cores.
func (d *demo) build(ctx context.Context, service string, helpers []string) error {
	pkgs := append([]string{"./services/" + service, "./examples/sensor"}, helpers...)
	d.say("building %s (go build; the first time takes a few minutes, then seconds)", strings.Join(pkgs, " "))
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", d.bin + "/"}, pkgs...)...)
	cmd.Dir = d.root
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	// go build names a binary after its folder; give the block its image's name.
	if err := os.Rename(filepath.Join(d.bin, service), d.blockBin()); err != nil {
		return err
	}
	d.say("built in %.1fs", time.Since(t0).Seconds())
	return nil
}

func (d *demo) blockBin() string { return filepath.Join(d.bin, "cloud-block-"+d.cfg.Service) }

// startProc starts a process whose output goes to the logs folder, and
// remembers it for stopAll; watch makes its early exit end the demo.
func (d *demo) startProc(spec procs.Spec, watch bool) (*procs.Proc, error) {
	p, err := procs.StartNoCleanup(spec, d.logs)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.started = append(d.started, p)
	if watch {
		d.watched = append(d.watched, p)
	}
	d.mu.Unlock()
	return p, nil
}

// onStop registers a clean-up that runs after the processes are stopped.
func (d *demo) onStop(f func()) {
	d.mu.Lock()
	d.cleanups = append(d.cleanups, f)
	d.mu.Unlock()
}

// freeAddr returns 127.0.0.1:port with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// mosquittoPath finds Debian's broker (make demo installs it).
func mosquittoPath() (string, error) {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	return "", errors.New("mosquitto not found: `make demo` installs it (scripts/setup.sh mosquitto)")
}

// startMosquitto runs a broker configured as in compose/mosquitto, on a free
// local port, and returns its URL.
func (d *demo) startMosquitto() (string, error) {
	bin, err := mosquittoPath()
	if err != nil {
		return "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`# Written by the demo; compose/mosquitto/mosquitto.conf explains the settings.
listener %s 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 100000
max_queued_bytes 268435456
log_dest stdout
log_type error
log_type warning
log_type notice
`, port)
	if os.Geteuid() == 0 {
		// As root it would switch to the mosquitto user, which may not exist
		// or read this folder.
		conf += "user root\n"
	}
	path := filepath.Join(d.work, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", err
	}
	if _, err := d.startProc(procs.Spec{Name: "mosquitto", Path: bin, Args: []string{"-c", path},
		Ready: procs.TCPReady(addr), Timeout: 10 * time.Second}, true); err != nil {
		return "", err
	}
	d.say("mosquitto listening on %s", addr)
	return "mqtt://" + addr, nil
}

// startBlock runs the block with the demo's settings plus the destination's.
func (d *demo) startBlock(service, broker string, destEnv []string) (*procs.Proc, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	env := []string{
		"LOCAL_MQTT_HOST=" + broker,
		"LOCAL_MQTT_INPUT_TOPIC=" + demoTopic,
		"BUFFER_DIR=" + d.buffer,
		"HTTP_LISTEN=" + httpAddr,
		"BALENA_DEVICE_UUID=" + demoDevice,
		"LOG_LEVEL=info",
		"RETRY_INITIAL_BACKOFF=200ms",
		"RETRY_MAX_BACKOFF=2s",
	}
	env = append(env, destEnv...)
	p, err := d.startProc(procs.Spec{
		Name: "cloud-block-" + service, Path: d.blockBin(), Env: env,
		Ready: httpReady("http://" + httpAddr + "/live"), Timeout: 20 * time.Second,
	}, true)
	if err != nil {
		return nil, fmt.Errorf("the block did not start: %w", err)
	}
	d.metricsURL = "http://" + httpAddr + "/metrics"
	d.say("block cloud-block-%s running (pid %d): %s, /ready and /metrics on http://%s", service, p.Cmd.Process.Pid, shown(destEnv), httpAddr)
	return p, nil
}

// shown lists the destination's variables for the log line, secrets masked.
func shown(env []string) string {
	var parts []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if secretName.MatchString(k) {
			v = "***"
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

var secretName = regexp.MustCompile(`SECRET|KEY$|CONNECTION_?STRING|PASSWORD`)

func (d *demo) startSensor(broker string) (*procs.Proc, error) {
	d.sensorAt = time.Now()
	p, err := d.startProc(procs.Spec{
		Name: "sensor", Path: filepath.Join(d.bin, "sensor"),
		Env: []string{"MQTT_HOST=" + broker, "MQTT_TOPIC=" + demoTopic, "INTERVAL=" + d.cfg.Interval.String(),
			"DEVICE_ID=" + demoDevice, "MQTT_CLIENT_ID=demo-sensor"},
	}, true)
	if err != nil {
		return nil, err
	}
	// The sensor retries until the broker answers; it says so once connected.
	if err := d.waitLog(p, `"msg":"connected"`, 10*time.Second); err != nil {
		return nil, err
	}
	d.say("sensor publishing a reading to %q every %s (QoS 1, persistent session)", demoTopic, d.cfg.Interval)
	return p, nil
}

// httpReady succeeds once url answers at all.
func httpReady(url string) func() error {
	c := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
}

// exited reports a watched process that ended by itself.
func (d *demo) exited() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.watched {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited unexpectedly (code %d); its log %s ends with:\n%s",
				p.Name, p.ExitCode(), rel(d.root, p.LogPath), tail(p.Log(), 3000))
		default:
		}
	}
	return nil
}

// stopAll stops every process, newest first (SIGTERM to its process group,
// SIGKILL after 10 s), then runs the clean-ups. Calling it again is harmless.
func (d *demo) stopAll() {
	d.mu.Lock()
	ps := d.started
	d.started, d.watched = nil, nil
	cleanups := d.cleanups
	d.cleanups = nil
	d.mu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].Stop()
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
}

// killAll is the second Ctrl-C: SIGKILL to every process at once.
func (d *demo) killAll() {
	d.mu.Lock()
	ps := append([]*procs.Proc(nil), d.started...)
	d.mu.Unlock()
	d.say("killing every process now")
	for _, p := range ps {
		select {
		case <-p.Done():
		default:
			p.Kill()
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
