// Package procs starts the local processes tests need (brokers, emulators,
// the block itself) on 127.0.0.1, waits until they are ready, and stops them
// by PID when the test ends.
package procs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is a started process.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
}

// Spec describes a process to start.
type Spec struct {
	Name string   // for logs
	Path string   // executable
	Args []string // arguments
	Env  []string // added to the environment (KEY=VALUE)
	Dir  string   // working directory ("" = current)
	// Ready reports nil once the process serves; polled until Timeout.
	Ready   func() error
	Timeout time.Duration // default 30s
}

// Start launches spec, waits until Ready succeeds, and registers cleanup
// that stops the process. Its output goes to a log file in the test's temp
// dir, printed if the test fails.
func Start(t testing.TB, spec Spec) *Proc {
	t.Helper()
	p, err := StartNoCleanup(spec, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			DumpLog(t, p)
		}
	})
	return p
}

// StartNoCleanup is Start for callers that manage the lifetime themselves
// (restarts during a test).
func StartNoCleanup(spec Spec, logDir string) (*Proc, error) {
	logPath := filepath.Join(logDir, fmt.Sprintf("%s-%d.log", sanitize(spec.Name), time.Now().UnixNano()))
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Proc{Name: spec.Name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	if spec.Ready == nil {
		return p, nil
	}
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		err := spec.Ready()
		if err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s exited before it was ready (%v): %s", spec.Name, p.err, tail(log, 2000))
		default:
		}
		if time.Now().After(deadline) {
			p.Stop()
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s not ready after %s: %v\n%s", spec.Name, timeout, err, tail(log, 2000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// ExitCode returns the exit code once Done is closed (-1 if killed by a signal).
func (p *Proc) ExitCode() int {
	<-p.done
	if p.Cmd.ProcessState == nil {
		return -1
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.Cmd.Process.Pid, sig)
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM, waits up to 10 s, then SIGKILL.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Log returns what the process printed so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// DumpLog prints the tail of the process's log into the test output.
func DumpLog(t testing.TB, p *Proc) {
	t.Logf("--- %s log (%s), last lines:\n%s", p.Name, p.LogPath, tail([]byte(p.Log()), 6000))
}

// TCPReady returns a Ready func that succeeds once addr accepts connections.
func TCPReady(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// WaitFor polls cond until it returns nil or the deadline passes: at once,
// then 10 ms later, the interval growing by half each time up to
// waitForMaxInterval. A condition that holds within a few polls is seen as
// soon as before; one that takes seconds (a block delivering, an emulator
// starting) is asked ten times a second, not a hundred. Many conditions
// are HTTP requests to a block (/metrics, /ready) or reads of a whole
// emulator, and ten rigs wait at once on two cores.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for wait := 10 * time.Millisecond; ; wait = min(wait*3/2, waitForMaxInterval) {
		if last = cond(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(wait):
		}
	}
}

// waitForMaxInterval is the longest WaitFor waits between two polls: what a
// wait may add to a latency the tests report (first delivery after an
// outage, /ready after a restart).
const waitForMaxInterval = 100 * time.Millisecond

// Addr formats 127.0.0.1:port.
func Addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// LockFile takes an exclusive flock on path (created if need be), waiting
// for another process that holds it, and returns its release: for files
// that test processes running at once build into the same place.
func LockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
