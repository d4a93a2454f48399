package imagetest

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// TestServiceImages proves, for each service's image `make images` built:
// it holds only the binary (for the tag's platform) and the CA bundle, runs
// as 65532 with a read-only root file system and only /data writable, says
// its version, checks its broker and cloud (check), stays healthy while its
// cloud is down (having reached it or not) and delivers what it kept once
// the cloud returns, drains on SIGTERM within the compose files'
// stop_grace_period, and the arm64 and arm/v7 images run the same way
// under qemu-user.
func TestServiceImages(t *testing.T) {
	e := Open(t)
	for _, svc := range Services {
		t.Run(svc, func(t *testing.T) {
			t.Parallel()
			bin := "cloud-block-" + svc
			for _, p := range Platforms {
				t.Run("contents-"+p.Suffix, func(t *testing.T) {
					img := e.Image(svc, p.Suffix)
					info := checkImageConfig(t, e, img, p.Arch, p.Variant, bin)
					if info.Config.Healthcheck == nil || !slices.Equal(info.Config.Healthcheck.Test, []string{"CMD", "/" + bin, "healthcheck"}) {
						t.Errorf("healthcheck %+v, want the binary's healthcheck subcommand", info.Config.Healthcheck)
					}
					if _, ok := info.Config.Volumes["/data"]; !ok {
						t.Errorf("volumes %v, want /data", info.Config.Volumes)
					}
					checkFiles(t, e, img, p.Arch, bin, true)
					t.Logf("%s: %.1f MB", img, float64(info.Size)/1e6)
				})
			}
			t.Run("commands", func(t *testing.T) {
				for _, p := range Platforms {
					// Under qemu-user for arm64 and arm/v7.
					out, _, err := e.Try("run", "--rm", "--network", "none", e.Image(svc, p.Suffix), "version")
					if want := bin + " " + e.Tag; err != nil || out != want {
						t.Errorf("%s: version: %q (%v), want %q", p.Suffix, out, err, want)
					}
				}
				img := e.Image(svc, "")
				// Nothing serves the endpoint: the healthcheck fails, naming it.
				out, _, err := e.Try("run", "--rm", "--network", "none", img, "healthcheck")
				if exitCode(err) != 1 || !strings.Contains(out, "127.0.0.1:8080") {
					t.Errorf("healthcheck without the service: exit %d, %q; want exit 1 naming 127.0.0.1:8080", exitCode(err), out)
				}
				// Unconfigured: exit 2, naming what is missing (compose: restart: always
				// tries again until the dashboard's variables are set).
				_, errOut, err := e.Try("run", "--rm", "--network", "none", img)
				if exitCode(err) != 2 || !strings.Contains(errOut, "configuration error") {
					t.Errorf("no variables: exit %d, stderr %q; want exit 2 and the configuration error", exitCode(err), errOut)
				}
			})
			t.Run("run", func(t *testing.T) { runBlock(t, e, svc) })
			for _, p := range Platforms[1:] {
				t.Run("qemu-"+p.Suffix, func(t *testing.T) { runEmulated(t, e, svc, p.Suffix) })
			}
		})
	}
}

// TestSensorImage: the example sensor's image holds only its binary, runs as
// 65532, and publishes on every platform.
func TestSensorImage(t *testing.T) {
	e := Open(t)
	net, gw := e.Network(t)
	b := StartBroker(t, gw)
	for _, p := range Platforms {
		t.Run(p.Suffix, func(t *testing.T) {
			img := e.Image("sensor", p.Suffix)
			checkImageConfig(t, e, img, p.Arch, p.Variant, "sensor")
			checkFiles(t, e, img, p.Arch, "sensor", false)
			topic := "sensor-" + p.Suffix
			got := subscribe(t, b, topic)
			out, errOut, err := e.Try("run", "--rm", "--name", Name("sensor"), "--network", net, "--read-only",
				"-e", "MQTT_HOST="+b.URL, "-e", "MQTT_TOPIC="+topic, "-e", "INTERVAL=100ms", "-e", "COUNT=5", img)
			if err != nil {
				t.Fatalf("sensor: %v\n%s\n%s", err, out, errOut)
			}
			WaitFor(t, 30*time.Second, "the sensor's 5 readings at the broker", func() error {
				if n := got.Load(); n < 5 {
					return fmt.Errorf("%d readings", n)
				}
				return nil
			})
		})
	}
}

// checkImageConfig checks what every image promises in its configuration:
// the platform of its tag, user 65532 and the binary as its entry point.
func checkImageConfig(t *testing.T, e *Engine, img, arch, variant, bin string) ImageInfo {
	t.Helper()
	info := e.ImageInfo(t, img)
	if info.Os != "linux" || info.Architecture != arch || info.Variant != variant {
		t.Errorf("platform %s/%s/%s, want linux/%s/%s", info.Os, info.Architecture, info.Variant, arch, variant)
	}
	if info.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (not root)", info.Config.User)
	}
	if !slices.Equal(info.Config.Entrypoint, []string{"/" + bin}) {
		t.Errorf("entrypoint %v, want /%s", info.Config.Entrypoint, bin)
	}
	return info
}

// checkFiles: the image holds the binary, built for arch and static, the CA
// bundle when withCA, and /data owned by 65532 when the image has it;
// nothing else.
func checkFiles(t *testing.T, e *Engine, img, arch, bin string, withCA bool) {
	t.Helper()
	files := e.Files(t, img)
	want := []string{bin}
	if withCA {
		want = append(want, "etc/ssl/certs/ca-certificates.crt", "data")
	}
	var got []string
	for name, f := range files {
		switch {
		case f.Type == tar.TypeDir && slices.Contains([]string{"etc", "etc/ssl", "etc/ssl/certs"}, name) && withCA:
		case slices.Contains(want, name):
			got = append(got, name)
		default:
			t.Errorf("%s: holds %s (type %c), which it should not", img, name, f.Type)
		}
	}
	if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("%s: holds %v, want %v", img, got, want)
	}
	f := files[bin]
	if f.Content == nil {
		t.Fatalf("%s: /%s is not a regular file", img, bin)
	}
	x, err := elf.NewFile(f.Content)
	if err != nil {
		t.Fatalf("%s: /%s: %v", img, bin, err)
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM}[arch]
	if x.Machine != machine {
		t.Errorf("%s: /%s is for %v, want %v", img, bin, x.Machine, machine)
	}
	for _, p := range x.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: /%s is dynamically linked: scratch has no loader", img, bin)
		}
	}
	if withCA {
		ca, err := files["etc/ssl/certs/ca-certificates.crt"].Bytes()
		if err != nil {
			t.Fatalf("%s: the CA bundle: %v", img, err)
		}
		if n := bytes.Count(ca, []byte("BEGIN CERTIFICATE")); n < 100 {
			t.Errorf("%s: the CA bundle holds %d certificates", img, n)
		}
		if d := files["data"]; d.Type != tar.TypeDir || d.UID != 65532 || d.GID != 65532 {
			t.Errorf("%s: /data is type %c owned by %d:%d, want a folder of 65532:65532 (a new volume takes its owner)", img, d.Type, d.UID, d.GID)
		}
	}
}

// block is a running block container and what it talks to.
type block struct {
	e                *Engine
	svc, name, image string
	net, vol         string
	dest             *Destination
	broker           *Broker
	pub              *harness.Publisher
}

// startRig starts what a block talks to on a network of the test's own.
func startRig(t *testing.T, e *Engine, svc, image string) *block {
	net, gw := e.Network(t)
	b := &block{e: e, svc: svc, image: image, net: net, name: Name(svc), vol: e.Volume(t)}
	b.broker = StartBroker(t, gw)
	b.dest = StartDestination(t, svc, gw)
	b.pub = harness.NewPublisher(t, b.broker.Mosquitto, "images/"+svc, 64)
	e.RemoveContainer(t, b.name)
	return b
}

// run starts the container as the compose files do (read-only, /data a
// named volume, 30 s to stop), health checked every second.
func (b *block) run(t *testing.T) time.Time {
	args := []string{"run", "-d", "--name", b.name, "--network", b.net, "--read-only", "-v", b.vol + ":/data",
		"--stop-timeout", "30", "--health-interval", "1s",
		"-e", "LOCAL_MQTT_HOST=" + b.broker.URL, "-e", "LOCAL_MQTT_INPUT_TOPIC=" + b.pub.Topic,
		// The object stores' default is a minute; the test's batches need not wait.
		"-e", "BATCH_MAX_WAIT=200ms"}
	for k, v := range b.dest.Env {
		args = append(args, "-e", k+"="+v)
	}
	start := time.Now()
	b.e.Docker(t, append(args, b.image)...)
	return start
}

// waitHealth waits until the engine reports status.
func (b *block) waitHealth(t *testing.T, status string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, b.name+" "+status, func() error {
		c := b.e.Container(t, b.name)
		if c.State.Health == nil {
			return fmt.Errorf("no health state")
		}
		if c.State.Health.Status != status {
			return fmt.Errorf("%s", c.State.Health.Status)
		}
		return nil
	})
}

// delivered counts, by index, the test's messages the destination holds.
func (b *block) delivered(t *testing.T) map[int]bool {
	got := map[int]bool{}
	for _, p := range b.dest.Payloads(t) {
		if i := harness.Index(p); i >= 0 {
			got[i] = true
		}
	}
	return got
}

// waitDelivered waits until messages from..to-1 have all arrived.
func (b *block) waitDelivered(t *testing.T, from, to int, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("messages %d..%d at %s", from, to-1, b.svc), func() error {
		got := b.delivered(t)
		var missing []int
		for i := from; i < to; i++ {
			if !got[i] {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d missing, first %d", len(missing), missing[0])
		}
		return nil
	})
}

// firstDelivery publishes a message every 100 ms (indices from 100000 on:
// those before the block subscribed are not its to keep) until one arrives,
// and returns how long after start that was.
func (b *block) firstDelivery(t *testing.T, start time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 100000; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			b.pub.Publish(i, i+1, 0)
		}
	}()
	defer func() { close(stop); <-done }()
	var first time.Duration
	WaitFor(t, timeout, "the first message at "+b.svc, func() error {
		if len(b.delivered(t)) == 0 {
			return fmt.Errorf("none yet")
		}
		first = time.Since(start)
		return nil
	})
	return first
}

// check runs the image's check subcommand against the test's broker and
// cloud, as a user would before deploying, and returns its exit code and
// what it printed.
func (b *block) check(t *testing.T) (int, string) {
	t.Helper()
	args := []string{"run", "--rm", "--network", b.net, "--read-only",
		"-e", "LOCAL_MQTT_HOST=" + b.broker.URL, "-e", "LOCAL_MQTT_INPUT_TOPIC=" + b.pub.Topic}
	for k, v := range b.dest.Env {
		args = append(args, "-e", k+"="+v)
	}
	out, errOut, err := b.e.Try(append(args, b.image, "check")...)
	return exitCode(err), out + errOut
}

// runBlock runs the engine's own platform's image through a block's life.
func runBlock(t *testing.T, e *Engine, svc string) {
	b := startRig(t, e, svc, e.Image(svc, ""))
	if code, out := b.check(t); code != 0 || !strings.Contains(out, "result: ok") {
		t.Errorf("check with the broker and the cloud up: exit %d, want 0:\n%s", code, out)
	}
	start := b.run(t)
	first := b.firstDelivery(t, start, 2*time.Minute)
	t.Logf("%s: first delivery %.1f s after docker run", b.image, first.Seconds())
	b.waitHealth(t, "healthy", time.Minute)

	c := b.e.Container(t, b.name)
	if !c.HostConfig.ReadonlyRootfs {
		t.Fatalf("the container's root file system is not read-only")
	}
	// The process itself, as the host's kernel sees it: user and group 65532.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.State.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"Uid:", "Gid:"} {
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) == 5 && f[0] == key && (f[1] != "65532" || f[2] != "65532" || f[3] != "65532") {
				t.Errorf("the block runs with %s, want 65532", line)
			}
		}
	}

	b.pub.Publish(0, 200, 0)
	b.waitDelivered(t, 0, 200, 2*time.Minute)

	// The cloud goes away: the block keeps what arrives, and stays healthy
	// (it is alive; restarting it would not bring the cloud back).
	b.dest.Down()
	down := time.Now()
	b.pub.Publish(200, 300, 0)
	b.waitBacklog(t)
	b.waitHealthyChecks(t, down)
	if code, out := b.check(t); code != 3 || !strings.Contains(out, "unreachable") {
		t.Errorf("check with the cloud down: exit %d, want 3 (unreachable):\n%s", code, out)
	}
	b.dest.Up()
	b.waitDelivered(t, 200, 300, 2*time.Minute)

	// SIGTERM with messages arriving: the block stops within the compose
	// files' stop_grace_period (30 s), exit 0 rather than Docker's SIGKILL
	// (137); what it had not delivered is delivered after a start.
	b.pub.Publish(300, 1300, 0)
	stopped := time.Now()
	b.e.Docker(t, "stop", "--time", "30", b.name)
	took := time.Since(stopped)
	c = b.e.Container(t, b.name)
	if c.State.ExitCode != 0 || took >= 30*time.Second {
		t.Errorf("docker stop: exit %d after %.1f s; want 0 within the 30 s grace period", c.State.ExitCode, took.Seconds())
	}
	logs := b.e.Docker(t, "logs", "--tail", "5", b.name)
	if !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" line at the end of the log:\n%s", logs)
	}
	t.Logf("%s: docker stop took %.1f s", b.image, took.Seconds())
	b.e.Docker(t, "start", b.name)
	b.waitDelivered(t, 300, 1300, 2*time.Minute)

	// Read-only: the container changed nothing outside its volume, and the
	// spool is on the volume, owned by 65532.
	if diff := b.e.Docker(t, "diff", b.name); diff != "" {
		t.Errorf("docker diff: %s", diff)
	}
	out := b.e.Docker(t, "run", "--rm", "--network", "none", "-v", b.vol+":/data", "--entrypoint", "stat",
		"cloudblock-standin/debian:bookworm", "-c", "%u:%g %n", "/data", "/data/cloud-block/"+svc)
	if want := "65532:65532 /data\n65532:65532 /data/cloud-block/" + svc; out != want {
		t.Errorf("the volume:\n%s\nwant\n%s", out, want)
	}

	// A block that starts while its cloud is down is alive too: the engine
	// reports it healthy (restarting it would not bring the cloud back), it
	// keeps what arrives, and delivers it once the cloud is up.
	b.dest.Down()
	b.name, b.vol = Name(svc), b.e.Volume(t)
	b.e.RemoveContainer(t, b.name)
	b.run(t)
	down = time.Now()
	// Its MQTT session is new: what was published before it subscribed is
	// not its own, so the test publishes once it has received a message.
	b.waitReceiving(t)
	b.pub.Publish(2000, 2100, 0)
	b.waitBacklog(t)
	b.waitHealthyChecks(t, down)
	b.dest.Up()
	b.waitDelivered(t, 2000, 2100, 2*time.Minute)
}

// waitReceiving publishes a message every 100 ms (indices from 200000 on)
// until the block's buffer holds one: it has subscribed.
func (b *block) waitReceiving(t *testing.T) {
	t.Helper()
	ip := b.e.Container(t, b.name).NetworkSettings.Networks[b.net].IPAddress
	i := 200000
	WaitFor(t, time.Minute, "the block receiving", func() error {
		b.pub.Publish(i, i+1, 0)
		i++
		return Backlog(ip)
	})
}

// waitBacklog waits until the block's /ready (on the test network) counts
// undelivered messages in its buffer.
func (b *block) waitBacklog(t *testing.T) {
	t.Helper()
	ip := b.e.Container(t, b.name).NetworkSettings.Networks[b.net].IPAddress
	WaitFor(t, time.Minute, "the block's /ready showing a backlog", func() error { return Backlog(ip) })
}

// waitHealthyChecks waits for five health checks that started after since,
// the engine's last five, and fails the test if one failed.
func (b *block) waitHealthyChecks(t *testing.T, since time.Time) {
	t.Helper()
	WaitFor(t, time.Minute, "five health checks", func() error {
		h := b.e.Container(t, b.name).State.Health
		n := 0
		for _, l := range h.Log {
			if l.Start.After(since) {
				if l.ExitCode != 0 {
					t.Fatalf("unhealthy: %s", l.Output)
				}
				n++
			}
		}
		if n < 5 || h.Status != "healthy" {
			return fmt.Errorf("%d checks, %s", n, h.Status)
		}
		return nil
	})
}

// runEmulated runs an arm image under qemu-user: it starts, becomes
// healthy, delivers, and stops on SIGTERM.
func runEmulated(t *testing.T, e *Engine, svc, suffix string) {
	b := startRig(t, e, svc, e.Image(svc, suffix))
	start := b.run(t)
	first := b.firstDelivery(t, start, 3*time.Minute)
	t.Logf("%s under qemu-user: first delivery %.1f s after docker run", b.image, first.Seconds())
	b.waitHealth(t, "healthy", 2*time.Minute)
	b.pub.Publish(0, 50, 0)
	b.waitDelivered(t, 0, 50, 2*time.Minute)
	b.e.Docker(t, "stop", "--time", "30", b.name)
	if c := b.e.Container(t, b.name); c.State.ExitCode != 0 {
		t.Errorf("docker stop: exit %d, want 0", c.State.ExitCode)
	}
}

// subscribe counts the messages on topic.
func subscribe(t *testing.T, b *Broker, topic string) *atomic.Int64 {
	var n atomic.Int64
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr()).SetClientID(Name("sub")))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	if tok := c.Subscribe(topic, 1, func(paho.Client, paho.Message) { n.Add(1) }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", topic, tok.Error())
	}
	return &n
}

// exitCode is a command's exit code (-1: it did not run).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
