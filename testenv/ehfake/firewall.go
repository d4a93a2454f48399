package ehfake

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Firewall stands in front of the fake and lets through only connections
// that do not begin with the AMQP protocol header. Azure serves AMQP on
// port 5671 and WebSockets on 443; the fake serves both on one port (the
// SDK derives both addresses from one emulator endpoint), so blocking AMQP
// by its first bytes is how a test closes "port 5671" and leaves "443" open.
type Firewall struct {
	ln       net.Listener
	upstream string
	drop     bool

	blocked, passed atomic.Int64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewFirewall listens on a free 127.0.0.1 port and forwards to upstream.
// An AMQP connection is reset at once (drop false: like a refused port),
// or held open and never answered (drop true: like a firewall that drops
// packets, so the client waits for its timeout). It closes when the test
// ends.
func NewFirewall(t testing.TB, upstream string, drop bool) *Firewall {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Firewall{ln: ln, upstream: upstream, drop: drop, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.Close)
	return f
}

// Addr is the firewall's host:port, to put in the connection string.
func (f *Firewall) Addr() string { return f.ln.Addr().String() }

// Blocked counts the AMQP connections refused or dropped.
func (f *Firewall) Blocked() int64 { return f.blocked.Load() }

// Passed counts the connections let through.
func (f *Firewall) Passed() int64 { return f.passed.Load() }

// Close stops listening and closes every connection.
func (f *Firewall) Close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.ln.Close()
	f.wg.Wait()
}

func (f *Firewall) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Firewall) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *Firewall) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(c) {
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(c)
			f.serve(c)
		}()
	}
}

func (f *Firewall) serve(c net.Conn) {
	head := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, head); err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	if bytes.Equal(head, []byte("AMQP")) {
		f.blocked.Add(1)
		if f.drop {
			io.Copy(io.Discard, c) // never answer; until the client gives up
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, as from a refused port
		}
		return
	}
	up, err := net.Dial("tcp", f.upstream)
	if err != nil {
		return
	}
	if !f.track(up) {
		return
	}
	defer f.untrack(up)
	f.passed.Add(1)
	if _, err := up.Write(head); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}
