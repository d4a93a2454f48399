// Package connectproxy is an HTTP CONNECT proxy for tests, standing in for
// the corporate HTTPS proxy a device may have to use. It records every
// tunnel, so a test can prove that each destination went through it.
//
// It resolves only names under its domain (default "proxytest": a CONNECT
// to sqs.proxytest:4566 goes to 127.0.0.1:4566) and refuses everything
// else. Give the block endpoints under that domain: a client that goes
// around the proxy cannot even resolve them. (Go's ProxyFromEnvironment
// never proxies localhost or loopback addresses, so endpoints such as
// 127.0.0.1:4566 would prove nothing.)
//
// It may require credentials (Basic Proxy-Authorization), and it inspects
// TLS the way a TLS-inspecting corporate proxy does: a tunnel whose client
// starts a TLS handshake is answered with a certificate for the name asked,
// issued by the proxy's own CA (CAPEM; give it to the client, e.g. through
// SSL_CERT_FILE), and carried on in plain text to the target, so plain-text
// test servers stand in for HTTPS endpoints. Other tunnels (plain gRPC, ws://)
// pass through as bytes.
package connectproxy

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Options configure a proxy; the zero value is valid.
type Options struct {
	// Domain is the suffix of the names the proxy resolves, to 127.0.0.1
	// (default "proxytest").
	Domain string
	// User and Password, if User is set, are required of every client.
	User, Password string
}

// Tunnel is one CONNECT the proxy answered, or refused.
type Tunnel struct {
	Target  string // host:port, as the client asked
	Refused string // why it was refused ("" if it was opened)
	TLS     bool   // the client started TLS inside: the proxy inspected it
	SNI     string // the server name the client asked for in TLS
	// First is the first line the client sent inside the tunnel, after TLS
	// if any ("POST / HTTP/1.1", "GET /$servicebus/websocket HTTP/1.1",
	// "PRI * HTTP/2.0" for plain gRPC).
	First     string
	Up, Down  int64 // bytes client to target, and back
	Opened    time.Time
	ProxyUser string // the user the client authenticated as
}

// Host is the target without its port.
func (t Tunnel) Host() string {
	h, _, err := net.SplitHostPort(t.Target)
	if err != nil {
		return t.Target
	}
	return h
}

// Proxy is a running proxy.
type Proxy struct {
	opts  Options
	ln    net.Listener
	caPEM []byte
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey

	mu      sync.Mutex
	tunnels []*Tunnel
	certs   map[string]*tls.Certificate
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// New starts a proxy on a free 127.0.0.1 port. Close stops it.
func New(opts Options) (*Proxy, error) {
	if opts.Domain == "" {
		opts.Domain = "proxytest"
	}
	p := &Proxy{opts: opts, certs: map[string]*tls.Certificate{}, conns: map[net.Conn]struct{}{}}
	if err := p.newCA(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.ln = ln
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's URL for HTTPS_PROXY, with the credentials if any.
func (p *Proxy) URL() string {
	u := url.URL{Scheme: "http", Host: p.Addr()}
	if p.opts.User != "" {
		u.User = url.UserPassword(p.opts.User, p.opts.Password)
	}
	return u.String()
}

// CAPEM is the certificate of the CA that signs the certificates the proxy
// shows inside TLS tunnels.
func (p *Proxy) CAPEM() []byte { return p.caPEM }

// Tunnels returns a copy of every tunnel so far, in order of opening.
func (p *Proxy) Tunnels() []Tunnel {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Tunnel, len(p.tunnels))
	for i, t := range p.tunnels {
		out[i] = *t
	}
	return out
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.untrack(c)
			p.serve(c)
		}()
	}
}

func (p *Proxy) record(t *Tunnel) {
	p.mu.Lock()
	p.tunnels = append(p.tunnels, t)
	p.mu.Unlock()
}

func (p *Proxy) update(fn func()) {
	p.mu.Lock()
	fn()
	p.mu.Unlock()
}

func refuse(c net.Conn, status int, extra string) {
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n", status, http.StatusText(status), extra)
}

// serve answers one client connection: one CONNECT, then the tunnel.
func (p *Proxy) serve(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	t := &Tunnel{Target: req.Host, Opened: time.Now()}
	if req.Method != http.MethodConnect {
		t.Target = req.URL.String()
		t.Refused = "not a CONNECT: " + req.Method + " (plain-HTTP forwarding is not offered)"
		p.record(t)
		refuse(c, http.StatusMethodNotAllowed, "")
		return
	}
	if p.opts.User != "" {
		user, pass, ok := basicAuth(req.Header.Get("Proxy-Authorization"))
		if !ok || user != p.opts.User || pass != p.opts.Password {
			t.Refused = "no or wrong proxy credentials"
			p.record(t)
			refuse(c, http.StatusProxyAuthRequired, "Proxy-Authenticate: Basic realm=\"connectproxy\"\r\n")
			return
		}
		t.ProxyUser = user
	}
	host, port, err := net.SplitHostPort(req.Host)
	if err != nil || !strings.HasSuffix(strings.ToLower(host), "."+p.opts.Domain) {
		t.Refused = "not under ." + p.opts.Domain
		p.record(t)
		refuse(c, http.StatusForbidden, "")
		return
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 10*time.Second)
	if err != nil {
		t.Refused = "target unreachable: " + err.Error()
		p.record(t)
		refuse(c, http.StatusBadGateway, "")
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	p.record(t)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	var client io.ReadWriter = &bufConn{Conn: c, r: br}
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	if first[0] == 0x16 { // a TLS handshake record: inspect it
		tc := tls.Server(client.(net.Conn), &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" {
				name = host
			}
			p.update(func() { t.TLS, t.SNI = true, hello.ServerName })
			return p.cert(name)
		}})
		if err := tc.Handshake(); err != nil {
			p.update(func() { t.Refused = "TLS handshake with the client failed: " + err.Error() })
			return
		}
		client = tc
	}
	p.pipe(t, client, up)
}

// pipe carries the tunnel both ways until either side ends, noting the
// first line the client sent and the bytes.
func (p *Proxy) pipe(t *Tunnel, client io.ReadWriter, up net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		buf := make([]byte, 32<<10)
		firstSeen := false
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if !firstSeen {
					firstSeen = true
					line, _, _ := bytes.Cut(buf[:n], []byte("\r\n"))
					p.update(func() { t.First = string(line[:min(len(line), 200)]) })
				}
				p.update(func() { t.Up += int64(n) })
				if _, werr := up.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		up.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				p.update(func() { t.Down += int64(n) })
				if _, werr := client.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if cw, ok := client.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// bufConn is a net.Conn whose reads come through the proxy's reader, which
// may hold the first bytes of the TLS handshake already.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bufConn) CloseWrite() error {
	if tc, ok := b.Conn.(*net.TCPConn); ok {
		return tc.CloseWrite()
	}
	return nil
}

func basicAuth(h string) (user, pass string, ok bool) {
	const prefix = "Basic "
	if !strings.HasPrefix(h, prefix) {
		return "", "", false
	}
	b, err := base64.StdEncoding.DecodeString(h[len(prefix):])
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(b), ":")
}

// newCA makes the proxy's CA.
func (p *Proxy) newCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "connectproxy test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caKey = key
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return nil
}

// cert returns a certificate for name signed by the proxy's CA.
func (p *Proxy) cert(name string) (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.certs[name]; ok {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(name); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	p.certs[name] = c
	return c, nil
}
