package netproxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// A shaped link: a connection's first answer takes the handshake's round
// trip and its own; every round trip after takes two latencies at least.
func TestShapeLatency(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const lat = 100 * time.Millisecond
	if err := p.SetShape(Shape{Latency: lat}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, r := dial(t, p.Addr())
	if err := roundTrip(c, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 4*lat {
		t.Errorf("first round trip %s, want at least %s (handshake and request)", d, 4*lat)
	}
	for range 3 {
		start = time.Now()
		if err := roundTrip(c, r, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 2*lat {
			t.Errorf("round trip %s, want at least %s", d, 2*lat)
		}
	}
	// A connection opened before the shape stays plain; after, plain again.
	if err := p.SetShape(Shape{}); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.SetShape(Shape{Latency: -1}); err == nil {
		t.Error("a negative latency taken")
	}
	if err := p.SetShape(Shape{Loss: 1.5}); err == nil {
		t.Error("a loss of 1.5 taken")
	}
}

// Loss delays, never drops or reorders: 4 MiB each way arrive intact
// with a third of the segments lost.
func TestShapeLossKeepsTheStream(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.SetShape(Shape{Latency: time.Millisecond, Loss: 0.3}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Lines of random hex, so the echo server answers each.
	raw := make([]byte, 2<<20)
	rand.Read(raw)
	var sent bytes.Buffer
	for i := 0; i < len(raw); i += 1000 {
		sent.WriteString(hexLine(raw[i:min(i+1000, len(raw))]))
	}
	want := sent.Bytes()
	go func() {
		c.Write(want)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes back, want the %d sent, in order", len(got), len(want))
	}
	st := p.Stats()
	if st.Lost == 0 || st.Segments < int64(2*len(want)/SegmentBytes) {
		t.Errorf("stats %+v: want segments counted both ways and some lost", st)
	}
	t.Logf("%d bytes each way; %d segments, %d lost", len(want), st.Segments, st.Lost)
}

// With every segment lost each chunk comes a timeout late.
func TestShapeLossDelays(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	sh := Shape{Loss: 1}
	if err := p.SetShape(sh); err != nil {
		t.Fatal(err)
	}
	c, r := dial(t, p.Addr())
	start := time.Now()
	if err := roundTrip(c, r, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 2*sh.RTO() {
		t.Errorf("round trip %s with every segment lost, want at least two timeouts (%s)", d, 2*sh.RTO())
	}
}

func hexLine(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b)+1)
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&0xf])
	}
	return string(append(out, '\n'))
}
