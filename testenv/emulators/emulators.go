// Package emulators starts the cloud emulators the integration tests need as
// local servers on 127.0.0.1, each on a port of its own, and stops them when
// the test ends.
//
// Every emulator has Stop and Start to simulate an outage: Start brings it
// back on the same port, so clients configured before the outage reconnect
// without being told anything. What survives such a restart differs:
//
//	S3 (gofakes3, in-process)   buckets and objects survive
//	Versity (versitygw, POSIX)  buckets and objects survive (they are files)
//	Azurite (in-memory)         everything is lost
//	GCS (fake-gcs-server)       everything is lost
//	PubSub (pstest-server)      everything is lost
//
// A real cloud keeps its buckets, containers and topics through an outage, so
// for the in-memory emulators Start re-creates the buckets, containers, topics
// and subscriptions that were made through this package's helpers. Objects and
// messages are not re-created: a test must read back what it needs before it
// stops such an emulator.
//
// Start and Stop call t.Fatal on failure, so call them from the test's
// goroutine. Binaries built by scripts/build-tools.sh (`make tools`) live in
// .cache/bin; a test whose emulator binary is missing is skipped, naming the
// command that builds it.
package emulators

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// RepoRoot is the root of the monorepo, found from this source file so the
// paths work from any package's tests whatever their working directory.
var RepoRoot = func() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("emulators: cannot locate source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// toolBin returns the path of a tool built by the set-up, failing the test
// when it has not been built: a test that skipped would let CI pass
// without having run.
func toolBin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RepoRoot, ".cache", "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is not built (%s missing): run `make tools`", name, p)
	}
	return p
}

// process is an emulator run as a child process on a fixed port, so it can
// be stopped and started again at the same address.
type process struct {
	t      testing.TB
	port   int
	spec   func(port int) procs.Spec
	logDir string

	mu sync.Mutex
	p  *procs.Proc
	// stopFast skips the graceful SIGTERM wait for emulators that keep
	// nothing on disk: a kill is what an outage looks like anyway.
	stopFast bool
}

// startProcess picks a free port, starts the process and registers cleanup.
func startProcess(t testing.TB, stopFast bool, spec func(port int) procs.Spec) *process {
	t.Helper()
	ps := &process{t: t, spec: spec, logDir: t.TempDir(), stopFast: stopFast}
	// FreePort closes its probe listener before the emulator binds, so another
	// process may take the port in between; try again on a new port then.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		ps.port = procs.FreePort(t)
		ps.p, err = procs.StartNoCleanup(spec(ps.port), ps.logDir)
		if err == nil || !portTaken(ps.port) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		if ps.p == nil {
			return
		}
		ps.stopLocked()
		if t.Failed() {
			procs.DumpLog(t, ps.p)
		}
	})
	return ps
}

func portTaken(port int) bool {
	l, err := net.Listen("tcp", procs.Addr(port))
	if err != nil {
		return true
	}
	l.Close()
	return false
}

func (ps *process) addr() string { return procs.Addr(ps.port) }

// Stop ends the process; a no-op when it is stopped already.
func (ps *process) Stop() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.stopLocked()
}

func (ps *process) stopLocked() {
	if ps.p == nil {
		return
	}
	if ps.stopFast {
		select {
		case <-ps.p.Done():
		default:
			ps.p.Kill()
		}
	} else {
		ps.p.Stop()
	}
}

// Start runs the process again on the same port; a no-op while it runs.
func (ps *process) Start() {
	ps.t.Helper()
	ps.restart()
}

// restart is Start reporting whether it started a new process.
func (ps *process) restart() bool {
	ps.t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.p != nil {
		select {
		case <-ps.p.Done():
		default:
			return false
		}
	}
	// The old process may still hold the port for a moment after exiting
	// (its children closing sockets), so wait for it to be free.
	deadline := time.Now().Add(10 * time.Second)
	for portTaken(ps.port) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	p, err := procs.StartNoCleanup(ps.spec(ps.port), ps.logDir)
	if err != nil {
		ps.t.Fatalf("restart on port %d: %v", ps.port, err)
	}
	ps.p = p
	return true
}

// Log returns what the current run of the process printed.
func (ps *process) Log() string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.p == nil {
		return ""
	}
	return ps.p.Log()
}

func httpURL(addr string) string { return fmt.Sprintf("http://%s", addr) }

func mkdirAll(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
