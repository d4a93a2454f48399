package composetest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-block/cloud-block/testenv/imagetest"
)

// TestComposeRun brings every compose file up with docker-compose exactly as
// written, under the engine of `make test-images` (skipped without it). The
// only additions are override files: one per block (overrides/<service>.yml)
// with what a user fills in, pointed at the test's emulator, and what a balena
// device gives (overrides/device.yml): the device's id, which keeps the MQTT
// client ids stable when `up` makes the containers anew, and a network, here
// one of the test's own.
// Mosquitto is built from compose/mosquitto, the sensor and the blocks are
// the images `make images` tagged :latest. For each file:
//   - the sensor's readings arrive at every destination, and the engine
//     reports each block healthy;
//   - a crash of a block (its process killed): `restart: always` brings it
//     back, and no reading is missing;
//   - with the clouds down the blocks hold a backlog; `down` then `up` keeps
//     their volumes and delivers it.
//
// all.yml runs the six side by side; each must receive every reading.
func TestComposeRun(t *testing.T) {
	e := imagetest.Open(t)
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Fatalf("docker-compose: %v (scripts/setup.sh docker installs it)", err)
	}
	for _, path := range composeFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			runFile(t, e, compose, path)
		})
	}
}

// TestOverrides keeps each override file and the variables the test's
// destination sets in step (the destinations are started to learn them).
func TestOverrides(t *testing.T) {
	e := imagetest.Open(t)
	_, gw := e.Network(t)
	for _, svc := range imagetest.Services {
		t.Run(svc, func(t *testing.T) {
			d := imagetest.StartDestination(t, svc, gw)
			var o struct {
				Services map[string]struct {
					Environment map[string]string
				}
			}
			b, err := os.ReadFile(filepath.Join(root, "testenv", "composetest", "overrides", svc+".yml"))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(b, &o); err != nil {
				t.Fatal(err)
			}
			env := o.Services["cloud-block-"+svc].Environment
			for k, v := range env {
				if v != "${"+k+"}" {
					t.Errorf("%s: %q, want ${%s}", k, v, k)
				}
				if _, ok := d.Env[k]; !ok && k != "BALENA_DEVICE_UUID" {
					t.Errorf("%s is not a variable the test sets", k)
				}
			}
			if _, ok := env["BALENA_DEVICE_UUID"]; !ok {
				t.Errorf("no BALENA_DEVICE_UUID, which balena gives every service")
			}
			for k := range d.Env {
				if _, ok := env[k]; !ok {
					t.Errorf("the test sets %s, which the override does not pass on", k)
				}
			}
		})
	}
}

// project is one compose file brought up under a project name of its own.
type project struct {
	t       *testing.T
	e       *imagetest.Engine
	compose string
	name    string
	files   []string
	env     []string
	blocks  []string
	dests   map[string]*imagetest.Destination
	net     string
}

func (p *project) run(args ...string) (string, error) {
	cmd := exec.Command(p.compose, append(append([]string{"--ansi", "never", "-p", p.name}, p.files...), args...)...)
	cmd.Env = p.env
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (p *project) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// container is the id of a service's container, found by the labels
// docker-compose gives it (asking the engine, not docker-compose: this runs
// in polling loops, and each run of docker-compose, a Python program, costs
// over a second of CPU).
func (p *project) container(svc string) string {
	p.t.Helper()
	ids := p.e.Containers(p.t, "com.docker.compose.project="+p.name, "com.docker.compose.service="+svc, "com.docker.compose.oneoff=False")
	if len(ids) != 1 {
		p.t.Fatalf("%s has %d containers (%v), want one", svc, len(ids), ids)
	}
	return ids[0]
}

func runFile(t *testing.T, e *imagetest.Engine, compose, path string) {
	f := load(t, path)
	p := &project{t: t, e: e, compose: compose, name: imagetest.Name("compose"), dests: map[string]*imagetest.Destination{}}
	var gw string
	p.net, gw = e.Network(t)
	p.env = append(os.Environ(), "DOCKER_HOST="+e.Host, "CLOUDBLOCK_TEST_NETWORK="+p.net, "BALENA_DEVICE_UUID="+p.name)
	p.files = []string{"-f", path}
	for name := range f.Services {
		if svc, ok := strings.CutPrefix(name, "cloud-block-"); ok {
			p.blocks = append(p.blocks, svc)
		}
	}
	slices.Sort(p.blocks)
	for _, svc := range p.blocks {
		d := imagetest.StartDestination(t, svc, gw)
		p.dests[svc] = d
		for k, v := range d.Env {
			p.env = append(p.env, k+"="+v)
		}
		p.files = append(p.files, "-f", filepath.Join(root, "testenv", "composetest", "overrides", svc+".yml"))
	}
	p.files = append(p.files, "-f", filepath.Join(root, "testenv", "composetest", "overrides", "device.yml"))
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.run("logs", "--no-color", "--tail", "40")
			t.Logf("--- docker-compose logs:\n%s", out)
		}
		// Containers, the project's volumes and the broker's image built for it.
		if out, err := p.run("down", "-v", "--rmi", "local", "--remove-orphans"); err != nil {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
	})

	start := time.Now()
	p.must("up", "-d")
	first := map[string]time.Duration{}
	imagetest.WaitFor(t, 3*time.Minute, "a reading at every destination", func() error {
		for _, svc := range p.blocks {
			if _, ok := first[svc]; !ok && len(readingsOf(t, p.dests[svc])) > 0 {
				first[svc] = time.Since(start)
			}
		}
		if len(first) < len(p.blocks) {
			return fmt.Errorf("readings at %d of %d", len(first), len(p.blocks))
		}
		return nil
	})
	for _, svc := range p.blocks {
		t.Logf("%s: %s: first reading delivered %.1f s after up", filepath.Base(path), svc, first[svc].Seconds())
	}
	for _, svc := range p.blocks {
		p.waitHealthy("cloud-block-" + svc)
	}

	// A crash: each block's process killed from outside (`docker kill` is a
	// stop by hand, which the restart policy leaves stopped).
	seen := map[string]int{}
	for _, svc := range p.blocks {
		id := p.container("cloud-block-" + svc)
		before := e.Container(t, id)
		seen[svc] = maxSeq(readingsOf(t, p.dests[svc]))
		if err := syscall.Kill(before.State.Pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", svc, err)
		}
		imagetest.WaitFor(t, time.Minute, svc+" restarted by the engine", func() error {
			c := e.Container(t, id)
			if c.RestartCount <= before.RestartCount || !c.State.Running {
				return fmt.Errorf("restarts %d, %s", c.RestartCount, c.State.Status)
			}
			return nil
		})
	}
	// Readings published after the restart arrive, and none is missing.
	for _, svc := range p.blocks {
		waitReadings(t, p.dests[svc], 3*time.Minute, func(r readings) error {
			if m := maxSeq(r); m < seen[svc]+2 {
				return fmt.Errorf("latest seq %d, want %d", m, seen[svc]+2)
			}
			return r.gaps()
		})
	}

	// The clouds go down; the blocks hold what arrives meanwhile. Then down
	// and up: the volumes stay, and the backlog is delivered.
	for _, svc := range p.blocks {
		p.dests[svc].Down()
	}
	for _, svc := range p.blocks {
		p.waitBacklog("cloud-block-" + svc)
	}
	p.must("stop")
	acked := p.sensorAcknowledged()
	p.removeAnonymousVolumes()
	p.must("down")
	for _, svc := range p.blocks {
		vol := p.name + "_" + svc + "-data"
		if _, _, err := e.Try("volume", "inspect", vol); err != nil {
			t.Fatalf("volume %s is gone after down: %v", vol, err)
		}
	}
	for _, svc := range p.blocks {
		p.dests[svc].Up()
	}
	p.must("up", "-d")
	for _, svc := range p.blocks {
		waitReadings(t, p.dests[svc], 3*time.Minute, func(r readings) error {
			boot := r.boots()[0]
			if m := r.maxOf(boot); m < acked {
				return fmt.Errorf("the first run's readings up to %d, want %d (what the broker acknowledged to the sensor)", m, acked)
			}
			return r.gaps()
		})
		// What the sensor published before the block's first connection
		// ever is not the block's: the broker had no session for it.
		r := readingsOf(t, p.dests[svc])
		t.Logf("%s: %s: the first run's readings %d..%d of the sensor's %d delivered", filepath.Base(path), svc, r.minOf(r.boots()[0]), r.maxOf(r.boots()[0]), acked)
	}
}

// removeAnonymousVolumes removes, when the test ends, the volumes the
// containers' images declare and the file does not name (Mosquitto's
// /mosquitto/log): `down` without -v leaves them behind.
func (p *project) removeAnonymousVolumes() {
	p.t.Helper()
	var names []string
	for _, id := range p.e.Containers(p.t, "com.docker.compose.project="+p.name) {
		for _, m := range p.e.Container(p.t, id).Mounts {
			if m.Type == "volume" && !strings.HasPrefix(m.Name, p.name+"_") {
				names = append(names, m.Name)
			}
		}
	}
	p.t.Cleanup(func() {
		for _, n := range names {
			p.e.Try("volume", "rm", n)
		}
	})
}

// waitHealthy waits until the engine reports a service's container healthy
// (the image's HEALTHCHECK: every 30 s).
func (p *project) waitHealthy(svc string) {
	p.t.Helper()
	id := p.container(svc)
	imagetest.WaitFor(p.t, 3*time.Minute, svc+" healthy", func() error {
		c := p.e.Container(p.t, id)
		if c.State.Health == nil || c.State.Health.Status != "healthy" {
			return fmt.Errorf("%+v", c.State.Health)
		}
		return nil
	})
}

// waitBacklog waits until a block's /ready (on the test network) counts
// undelivered messages in its buffer.
func (p *project) waitBacklog(svc string) {
	p.t.Helper()
	c := p.e.Container(p.t, p.container(svc))
	ip := c.NetworkSettings.Networks[p.net].IPAddress
	imagetest.WaitFor(p.t, 2*time.Minute, svc+" holding a backlog", func() error { return imagetest.Backlog(ip) })
}

var stopping = regexp.MustCompile(`"msg":"stopping".*"acknowledged":(\d+)`)

// sensorAcknowledged is what the stopped sensor says the broker acknowledged.
func (p *project) sensorAcknowledged() int {
	p.t.Helper()
	m := stopping.FindStringSubmatch(p.must("logs", "--no-color", "sensor"))
	if m == nil {
		p.t.Fatalf("the sensor logged no \"stopping\" line")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// readings are the sensor's readings at a destination: seqs by boot.
type readings map[int64]map[int]bool

func readingsOf(t *testing.T, d *imagetest.Destination) readings {
	r := readings{}
	for _, b := range d.Payloads(t) {
		var x struct {
			Seq  int   `json:"seq"`
			Boot int64 `json:"boot"`
		}
		if err := json.Unmarshal(b, &x); err != nil || x.Seq == 0 {
			t.Fatalf("%s: not a sensor reading: %q", d.Service, b)
		}
		if r[x.Boot] == nil {
			r[x.Boot] = map[int]bool{}
		}
		r[x.Boot][x.Seq] = true
	}
	return r
}

func waitReadings(t *testing.T, d *imagetest.Destination, timeout time.Duration, cond func(readings) error) {
	t.Helper()
	imagetest.WaitFor(t, timeout, "readings at "+d.Service, func() error { return cond(readingsOf(t, d)) })
}

func (r readings) boots() []int64 {
	var b []int64
	for k := range r {
		b = append(b, k)
	}
	slices.Sort(b)
	return b
}

func (r readings) maxOf(boot int64) int {
	m := 0
	for s := range r[boot] {
		m = max(m, s)
	}
	return m
}

func (r readings) minOf(boot int64) int {
	m := r.maxOf(boot)
	for s := range r[boot] {
		m = min(m, s)
	}
	return m
}

// maxSeq is the latest seq of the latest boot.
func maxSeq(r readings) int {
	b := r.boots()
	if len(b) == 0 {
		return 0
	}
	return r.maxOf(b[len(b)-1])
}

// gaps reports a reading missing between the first and the last of a boot
// (those the sensor published before the block's first connection ever are
// not the block's to keep: the broker had no session for it yet).
func (r readings) gaps() error {
	for boot, seqs := range r {
		lo := r.minOf(boot)
		for s := lo; s <= r.maxOf(boot); s++ {
			if !seqs[s] {
				return fmt.Errorf("boot %d: reading %d missing (have %d..%d)", boot, s, lo, r.maxOf(boot))
			}
		}
	}
	return nil
}
