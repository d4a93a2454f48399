package connectproxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func client(t *testing.T, p *Proxy, proxyURL string) *http.Client {
	t.Helper()
	u, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CAPEM())
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), TLSClientConfig: &tls.Config{RootCAs: roots}}}
}

func TestTunnels(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.URL.Path) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, err := New(Options{User: "u", Password: "pw-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := client(t, p, p.URL())

	// TLS, inspected by the proxy, to the plain-HTTP server.
	resp, err := c.Get("https://svc.proxytest:" + port + "/a")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello /a" {
		t.Fatalf("body %q", body)
	}
	// Outside the domain: refused.
	if _, err := c.Get("https://example.com/"); err == nil {
		t.Fatal("example.com went through")
	}
	// Wrong credentials: refused.
	bad := strings.Replace(p.URL(), "pw-secret", "nope", 1)
	if _, err := client(t, p, bad).Get("https://svc.proxytest:" + port + "/b"); err == nil {
		t.Fatal("wrong credentials went through")
	}
	c.CloseIdleConnections()
	tl := p.Tunnels()
	if len(tl) != 3 {
		t.Fatalf("tunnels %+v", tl)
	}
	if tl[0].Refused != "" || !tl[0].TLS || tl[0].SNI != "svc.proxytest" || tl[0].First != "GET /a HTTP/1.1" || tl[0].ProxyUser != "u" || tl[0].Host() != "svc.proxytest" {
		t.Errorf("first tunnel %+v", tl[0])
	}
	if tl[1].Refused != "not under .proxytest" || tl[2].Refused != "no or wrong proxy credentials" {
		t.Errorf("refusals %+v %+v", tl[1], tl[2])
	}
}
