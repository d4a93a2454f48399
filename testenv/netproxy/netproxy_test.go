package netproxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// echo serves line echo on a free port.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes a line on c and reads the answer within d.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err == nil && line != "ping\n" {
		return errors.New("wrong answer " + line)
	}
	return err
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func TestModes(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	old, oldR := dial(t, p.Addr())
	if err := roundTrip(old, oldR, 2*time.Second); err != nil {
		t.Fatalf("pass: %v", err)
	}

	// Hang: the old connection stalls, a new one is accepted but unanswered.
	if err := p.SetMode(Hang); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(old, oldR, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("hang, existing connection: %v, want a timeout", err)
	}
	hung, hungR := dial(t, p.Addr())
	if err := roundTrip(hung, hungR, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("hang, new connection: %v, want a timeout", err)
	}

	// Healed: new connections work; the black-holed ones stay dead.
	if err := p.SetMode(Pass); err != nil {
		t.Fatal(err)
	}
	fresh, freshR := dial(t, p.Addr())
	if err := roundTrip(fresh, freshR, 2*time.Second); err != nil {
		t.Fatalf("pass after hang: %v", err)
	}
	if err := roundTrip(old, oldR, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a stalled connection came back: %v", err)
	}

	// Refuse: connects are refused and open connections closed.
	if err := p.SetMode(Refuse); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("refuse: dial got %v, want connection refused", err)
	}
	if err := roundTrip(fresh, freshR, 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("refuse: open connection answered %v, want it closed", err)
	}

	// And back on the same address.
	if err := p.SetMode(Pass); err != nil {
		t.Fatal(err)
	}
	again, againR := dial(t, p.Addr())
	if err := roundTrip(again, againR, 2*time.Second); err != nil {
		t.Fatalf("pass after refuse: %v", err)
	}
	st := p.Stats()
	if st.Accepted != 4 || st.Stalled != 2 || st.Forwarded == 0 {
		t.Errorf("stats %+v", st)
	}
}

// A dead upstream: the client's connection is closed, not left hanging.
func TestUpstreamDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, r := dial(t, p.Addr())
	if err := roundTrip(c, r, 2*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("got %v, want the connection closed", err)
	}
	if p.Stats().DialFails != 1 {
		t.Errorf("stats %+v", p.Stats())
	}
}
