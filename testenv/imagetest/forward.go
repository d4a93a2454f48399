package imagetest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Forwarder takes TCP connections on one address and forwards each to
// upstream. The emulators listen on 127.0.0.1, which a container cannot
// reach; a Forwarder on the test network's bridge address hands them to the
// containers of that network alone. Down is an outage of what it forwards:
// new connections are refused and open ones cut; Up ends it on the same address.
type Forwarder struct {
	t        testing.TB
	addr     string
	upstream string

	mu    sync.Mutex
	ln    net.Listener // nil while down
	conns map[net.Conn]struct{}
}

// Forward listens on a free port of host and forwards to upstream until the
// test ends.
func Forward(t testing.TB, host, upstream string) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("forwarder on %s: %v", host, err)
	}
	f := &Forwarder{t: t, addr: ln.Addr().String(), upstream: upstream, conns: map[net.Conn]struct{}{}}
	f.serve(ln)
	t.Cleanup(f.Down)
	return f
}

// Addr is host:port, for the containers.
func (f *Forwarder) Addr() string { return f.addr }

// Down closes the listener and every forwarded connection.
func (f *Forwarder) Down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// Up listens again on the same address.
func (f *Forwarder) Up() {
	f.t.Helper()
	var ln net.Listener
	var err error
	// The port was the forwarder's a moment ago: nobody else asks for it,
	// but the kernel may take a moment to release it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ln, err = net.Listen("tcp", f.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		f.t.Fatalf("forwarder back on %s: %v", f.addr, err)
	}
	f.serve(ln)
}

func (f *Forwarder) serve(ln net.Listener) {
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.pipe(c)
		}
	}()
}

func (f *Forwarder) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", f.upstream, 10*time.Second)
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	if f.ln == nil { // went down meanwhile
		f.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	f.conns[c], f.conns[u] = struct{}{}, struct{}{}
	f.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		// The other way may still carry an answer: end only this one.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}
	go half(u, c)
	go half(c, u)
	wg.Wait()
	c.Close()
	u.Close()
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, u)
	f.mu.Unlock()
}
