package mqtt

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// bufferedConn reads through a buffer. paho decodes each packet with
// several small reads straight from the connection (the type byte, each
// byte of the remaining length, then the body): three or more syscalls per
// message. Reading ahead makes it about one per burst, half the block's CPU
// per message (make bench). Writes are left alone: PUBACKs are small and
// coalescing them gains nothing measurable.
//
// It also reads the CONNACK's session-present flag as paho reads it (paho
// does not tell it on reconnects), for recognising redeliveries.
//
// And it reads the packets paho writes, to tell the tracker which PUBACKs
// reached the connection (see redeliver.go).
type bufferedConn struct {
	net.Conn
	r       *bufio.Reader
	connack func(sessionPresent bool) error // until the first 4 bytes are seen
	head    []byte

	track *tracker
	gen   uint64
	out   packetScanner
}

func (c *bufferedConn) Write(p []byte) (int, error) {
	if c.track != nil {
		acks := false
		if !c.out.feed(p, func(id uint16) { c.track.pubackWritten(c.gen, id); acks = true }) {
			c.track.unreadable(c.gen)
			acks = true
		}
		if acks {
			if err := c.track.flushJournal(); err != nil {
				return 0, err // paho drops the connection; the broker sends the message again
			}
		}
	}
	return c.Conn.Write(p)
}

// packetScanner follows a stream of MQTT packets written in any pieces and
// reports each PUBACK's packet id.
type packetScanner struct {
	typ    byte
	lenBuf []byte // remaining-length bytes read so far, while in the header
	inHead bool   // the type byte was read, the length not yet complete
	left   int    // body bytes of the current packet still to come
	body   []byte // a PUBACK's body so far
	bad    bool
}

// feed reads p; false once the stream could not be read as packets.
func (s *packetScanner) feed(p []byte, puback func(id uint16)) bool {
	for len(p) > 0 && !s.bad {
		switch {
		case s.left > 0:
			k := min(s.left, len(p))
			if s.typ == 0x40 {
				s.body = append(s.body, p[:k]...)
			}
			s.left -= k
			p = p[k:]
			if s.left == 0 && s.typ == 0x40 {
				if len(s.body) == 2 {
					puback(uint16(s.body[0])<<8 | uint16(s.body[1]))
				}
				s.body = s.body[:0]
			}
		case !s.inHead:
			s.typ, s.inHead, s.lenBuf = p[0], true, s.lenBuf[:0]
			p = p[1:]
		default:
			s.lenBuf = append(s.lenBuf, p[0])
			p = p[1:]
			if p0 := s.lenBuf[len(s.lenBuf)-1]; p0&0x80 == 0 {
				n, mult := 0, 1
				for _, b := range s.lenBuf {
					n += int(b&0x7f) * mult
					mult *= 128
				}
				s.inHead, s.left = false, n
				if s.typ == 0x40 && n != 2 {
					s.bad = true // a PUBACK is always 2 bytes long
				}
			} else if len(s.lenBuf) == 4 {
				s.bad = true
			}
		}
	}
	return !s.bad
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.connack != nil && n > 0 {
		c.head = append(c.head, p[:min(n, 4-len(c.head))]...)
		if len(c.head) == 4 {
			// MQTT 3.1.1 CONNACK: 0x20, length 2, flags (bit 0: session
			// present), return code (0: accepted).
			var cerr error
			if c.head[0] == 0x20 && c.head[1] == 2 && c.head[3] == 0 {
				cerr = c.connack(c.head[2]&1 == 1)
			}
			c.connack, c.head = nil, nil
			if cerr != nil {
				return n, cerr
			}
		}
	}
	return n, err
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 16<<10) }

// openConnection dials the broker like paho does for every scheme we accept,
// and buffers reads; track (if set) learns the CONNACK's session-present
// flag and the PUBACKs written, as connection gen.
func openConnection(u *url.URL, o paho.ClientOptions, track *tracker, gen uint64) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	switch u.Scheme {
	case "tcp", "mqtt":
		conn, err = d.Dial("tcp", u.Host)
	case "ssl", "tls", "mqtts", "tcps":
		cfg := o.TLSConfig
		if cfg == nil {
			cfg = &tls.Config{}
		}
		td := &tls.Dialer{NetDialer: d, Config: cfg}
		conn, err = td.Dial("tcp", u.Host)
	case "ws", "wss":
		c := *u
		c.User = nil
		var cfg *tls.Config
		if u.Scheme == "wss" {
			cfg = o.TLSConfig
		}
		conn, err = paho.NewWebsocket(c.String(), cfg, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	default:
		return nil, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	c := &bufferedConn{Conn: conn, r: newReader(conn), track: track, gen: gen}
	if track != nil {
		c.connack = func(present bool) error { return track.connack(gen, present) }
	}
	return c, nil
}
