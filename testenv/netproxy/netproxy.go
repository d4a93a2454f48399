// Package netproxy is a TCP proxy a test puts between a client (the block)
// and a server (a cloud emulator) to cut the network in the ways real
// networks fail, which stopping the server cannot show:
//
//   - Pass forwards bytes both ways.
//   - Hang accepts new connections but never forwards on them, and stalls
//     every existing connection: a black hole, as when a NAT or a mobile
//     link drops its state. Nothing is refused or reset, so only the
//     client's own timeouts can notice. A connection stalled once stays
//     stalled (its peer state is gone); new connections after the cut
//     heals work again.
//   - Refuse closes the listener (connects get ECONNREFUSED, as from a
//     stopped server) and closes every open connection.
//
// Besides, SetShape makes the link slow and lossy, as a cellular or
// satellite link is (see Shape): every byte arrives Latency late in each
// direction, a new connection takes a round trip to open, and lost
// segments arrive a retransmission timeout late, holding up what follows,
// as TCP recovers them.
//
// The listening address never changes, so the client is configured once.
package netproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with connections.
type Mode int

const (
	Pass Mode = iota
	Hang
	Refuse
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Hang:
		return "hang"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Stats count what the proxy did since it started.
type Stats struct {
	Accepted  int64 // client connections accepted
	Forwarded int64 // bytes forwarded, both directions
	Stalled   int64 // connections black-holed by Hang
	DialFails int64 // upstream dials that failed (the client's connection is closed)
	Segments  int64 // 1,460-byte segments forwarded on shaped connections
	Lost      int64 // of those, segments lost and recovered a retransmission timeout late
}

// Shape is a slow, lossy link. A proxy in userspace cannot drop bytes of a
// TCP stream (TCP would resend them), so it does what the loss does to
// the stream: each lost segment's bytes, and every byte behind them in
// that direction, arrive a retransmission timeout later.
type Shape struct {
	// Latency is added to every byte in each direction (a round trip takes
	// two of it more), and a new connection waits a round trip before its
	// first byte is forwarded, as a TCP handshake over the link would.
	Latency time.Duration
	// Loss is the chance that a segment of 1,460 bytes (a full Ethernet
	// frame's TCP payload) is lost, from 0 to 1.
	Loss float64
}

// SegmentBytes is the size loss is counted in.
const SegmentBytes = 1460

// MinRTO is Linux's floor for the retransmission timeout.
const MinRTO = 200 * time.Millisecond

// RTO is how late a lost segment arrives: a round trip, and MinRTO.
func (s Shape) RTO() time.Duration { return 2*s.Latency + MinRTO }

func (s Shape) zero() bool { return s.Latency == 0 && s.Loss == 0 }

// Proxy forwards 127.0.0.1:port to an upstream address.
type Proxy struct {
	addr     string
	upstream string

	mu     sync.Mutex
	mode   Mode
	ln     net.Listener // nil while refusing or closed
	conns  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup

	shape Shape // guarded by mu

	accepted, forwarded, stalled, dialFails, segments, lost atomic.Int64
}

// link is one client connection and its upstream connection (nil while
// hung from the start).
type link struct {
	client, server net.Conn
	stall          chan struct{} // closed when the link is black-holed
	stallOnce      sync.Once
	done           chan struct{} // closed when the link is closed
	doneOnce       sync.Once
}

func (l *link) blackhole() { l.stallOnce.Do(func() { close(l.stall) }) }

func (l *link) close() {
	l.doneOnce.Do(func() {
		close(l.done)
		l.client.Close()
		if l.server != nil {
			l.server.Close()
		}
	})
}

// New starts a proxy in Pass mode on a free port of 127.0.0.1.
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{addr: ln.Addr().String(), upstream: upstream, conns: map[*link]struct{}{}}
	p.serve(ln)
	return p, nil
}

// Addr is the host:port clients connect to.
func (p *Proxy) Addr() string { return p.addr }

// Upstream is the address connections are forwarded to.
func (p *Proxy) Upstream() string { return p.upstream }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	return Stats{Accepted: p.accepted.Load(), Forwarded: p.forwarded.Load(), Stalled: p.stalled.Load(), DialFails: p.dialFails.Load(),
		Segments: p.segments.Load(), Lost: p.lost.Load()}
}

// SetShape makes connections opened from now on slow and lossy (the zero
// Shape: a plain link again); ones already open keep the shape they had
// when they opened, shaped or not, and a shaped one takes each new value.
func (p *Proxy) SetShape(s Shape) error {
	if s.Latency < 0 || s.Loss < 0 || s.Loss > 1 {
		return fmt.Errorf("netproxy: shape %+v: want a latency of 0 or more and a loss from 0 to 1", s)
	}
	p.mu.Lock()
	p.shape = s
	p.mu.Unlock()
	return nil
}

func (p *Proxy) currentShape() Shape {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shape
}

// SetMode switches the mode; it returns once the change is in effect (in
// Refuse, the port refuses; from Refuse, it listens again).
func (p *Proxy) SetMode(m Mode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("netproxy: closed")
	}
	prev := p.mode
	p.mode = m
	switch m {
	case Hang:
		for l := range p.conns {
			if l.server != nil {
				p.stalled.Add(1)
			}
			l.blackhole()
		}
	case Refuse:
		if p.ln != nil {
			p.ln.Close()
			p.ln = nil
		}
		for l := range p.conns {
			l.close()
		}
	}
	if prev == Refuse && m != Refuse {
		// The port was ours a moment ago; rebinding it only fails if another
		// process grabbed it meanwhile, which a retry cannot fix for long.
		var ln net.Listener
		var err error
		for deadline := time.Now().Add(5 * time.Second); ; {
			if ln, err = net.Listen("tcp", p.addr); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			p.mode = Refuse
			return fmt.Errorf("netproxy: listening again on %s: %w", p.addr, err)
		}
		p.serve(ln)
	}
	return nil
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for l := range p.conns {
		l.close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// serve accepts on ln until it is closed. Caller holds mu or owns p.
func (p *Proxy) serve(ln net.Listener) {
	p.ln = ln
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed (Refuse or Close)
			}
			p.accepted.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.handle(c)
			}()
		}
	}()
}

func (p *Proxy) handle(c net.Conn) {
	l := &link{client: c, stall: make(chan struct{}), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.mode == Refuse {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[l] = struct{}{}
	hung := p.mode == Hang
	shaped := !p.shape.zero()
	handshake := 2 * p.shape.Latency
	p.mu.Unlock()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.conns, l)
		p.mu.Unlock()
	}()
	if hung {
		// Accepted, never answered: the client's bytes sit in the kernel's
		// buffers until it gives up.
		l.blackhole()
		p.stalled.Add(1)
		<-l.done
		return
	}
	if shaped && handshake > 0 {
		// The client's SYN and the server's SYN-ACK cross the link.
		t := time.NewTimer(handshake)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return
		}
	}
	s, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		p.dialFails.Add(1)
		return
	}
	p.mu.Lock()
	if _, ok := p.conns[l]; !ok || p.mode == Refuse {
		p.mu.Unlock()
		s.Close()
		return
	}
	l.server = s
	if p.mode == Hang {
		l.blackhole()
		p.stalled.Add(1)
	}
	p.mu.Unlock()
	pipe := p.pipe
	if shaped {
		pipe = p.shapedPipe
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(l, s, c) }()
	go func() { defer wg.Done(); pipe(l, c, s) }()
	wg.Wait()
}

// pipe copies src to dst until either ends or the link is black-holed,
// after which it forwards nothing more and waits for the link to close.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-l.stall:
			<-l.done
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.close()
				return
			}
			p.forwarded.Add(int64(n))
		}
		if err != nil {
			select {
			case <-l.stall:
				<-l.done
				return
			default:
			}
			if errors.Is(err, io.EOF) {
				// Pass the half-close on, as TCP would.
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				return
			}
			l.close()
			return
		}
	}
}

// chunk is what shapedPipe read, due at the far end at due; nil data with
// eof set passes on the end of the stream.
type chunk struct {
	data []byte
	due  time.Time
	eof  bool
}

// shapedPipe is pipe over a slow, lossy link: a reader stamps each chunk
// with when it is due at dst, in order (a late one holds up what follows,
// as in TCP), and a writer hands it over then. Reading goes on meanwhile,
// so the link's latency does not limit its throughput.
func (p *Proxy) shapedPipe(l *link, dst, src net.Conn) {
	q := make(chan chunk, 256)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.deliver(l, dst, q)
	}()
	defer wg.Wait()
	defer close(q)
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	var last time.Time
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			sh := p.currentShape()
			due := time.Now().Add(sh.Latency)
			segs := (n + SegmentBytes - 1) / SegmentBytes
			p.segments.Add(int64(segs))
			if sh.Loss > 0 {
				lostSegs := 0
				for range segs {
					if rng.Float64() < sh.Loss {
						lostSegs++
					}
				}
				if lostSegs > 0 {
					// Recovered together, a timeout late.
					p.lost.Add(int64(lostSegs))
					due = due.Add(sh.RTO())
				}
			}
			if due.Before(last) {
				due = last
			}
			last = due
			select {
			case q <- chunk{data: bytes.Clone(buf[:n]), due: due}:
			case <-l.done:
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				select {
				case q <- chunk{due: last, eof: true}:
				case <-l.done:
				}
				return
			}
			l.close()
			return
		}
	}
}

// deliver writes the chunks of q to dst each at its time.
func (p *Proxy) deliver(l *link, dst net.Conn, q <-chan chunk) {
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for c := range q {
		if d := time.Until(c.due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-l.done:
				return
			}
		}
		select {
		case <-l.stall:
			<-l.done
			return
		default:
		}
		if c.eof {
			// Pass the half-close on, as TCP would.
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
		if _, err := dst.Write(c.data); err != nil {
			l.close()
			return
		}
		p.forwarded.Add(int64(len(c.data)))
	}
}
