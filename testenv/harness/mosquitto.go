// Package harness runs the real pieces for end-to-end tests: Mosquitto, a
// cloud-block binary, and an MQTT publisher that keeps count.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// Mosquitto is a broker started for a test.
type Mosquitto struct {
	t    testing.TB
	Port int
	dir  string
	conf string
	proc *procs.Proc
}

// MosquittoOptions tune the broker.
type MosquittoOptions struct {
	// MaxInflight is max_inflight_messages (0: 100, what the compose files use).
	MaxInflight int
	// Persistence keeps sessions and queued messages across broker restarts.
	Persistence bool
	// Extra lines for mosquitto.conf (TLS listeners, ...).
	Extra string
}

// MosquittoPath finds the broker binary (installed by `make setup`).
func MosquittoPath(t testing.TB) string {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Fatal("mosquitto not found: run `make setup` (installs Debian's mosquitto)")
	return ""
}

// StartMosquitto starts a broker on a free 127.0.0.1 port.
func StartMosquitto(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, Port: procs.FreePort(t), dir: t.TempDir()}
	if o.MaxInflight == 0 {
		o.MaxInflight = 100
	}
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
max_inflight_messages %d
max_queued_messages 0
max_queued_bytes 0
log_dest stdout
# Run as root, it would drop to the mosquitto user, which cannot write the
# test's private temp dir: persistence would silently fail.
user root
log_type error
log_type warning
`, m.Port, o.MaxInflight)
	if dir := os.Getenv("HARNESS_MOSQUITTO_VERBOSE"); dir != "" {
		// Debugging aid: every packet, logged to a file that outlives the test.
		conf += fmt.Sprintf("log_type all\nlog_dest file %s/mosquitto-%d.log\n", dir, m.Port)
	}
	if o.Persistence {
		conf += fmt.Sprintf("persistence true\npersistence_location %s/\nautosave_interval 1\n", m.dir)
	}
	conf += o.Extra
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() {
		m.Stop()
		if dir := os.Getenv("HARNESS_MOSQUITTO_VERBOSE"); dir != "" {
			t.Logf("mosquitto log: %s/mosquitto-%d.log", dir, m.Port)
		}
	})
	return m
}

// URL is the broker's address for LOCAL_MQTT_HOST.
func (m *Mosquitto) URL() string { return fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port) }

// Addr is host:port.
func (m *Mosquitto) Addr() string { return procs.Addr(m.Port) }

// Start (re)starts the broker on its port.
func (m *Mosquitto) Start() {
	m.t.Helper()
	p, err := procs.StartNoCleanup(procs.Spec{
		Name: "mosquitto", Path: MosquittoPath(m.t), Args: []string{"-c", m.conf},
		Ready: procs.TCPReady(m.Addr()),
	}, m.dir)
	if err != nil {
		m.t.Fatal(err)
	}
	m.proc = p
}

// Stop stops the broker (SIGTERM; it saves persistence if enabled).
func (m *Mosquitto) Stop() {
	if m.proc != nil {
		m.proc.Stop()
		m.proc = nil
	}
}
