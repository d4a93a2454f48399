package stsfake

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

const aud = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x"

type pki struct {
	roots  *x509.CertPool
	server tls.Certificate
	device tls.Certificate
	devCAs *x509.CertPool
}

func newPKI(t *testing.T) pki {
	ca, dev := harness.NewCA(t, "ca"), harness.NewCA(t, "fleet")
	var p pki
	p.roots, p.devCAs = x509.NewCertPool(), x509.NewCertPool()
	p.roots.AppendCertsFromPEM(ca.PEM)
	p.devCAs.AppendCertsFromPEM(dev.PEM)
	var err error
	if p.server, err = tls.X509KeyPair(ca.Leaf(t, "sts")); err != nil {
		t.Fatal(err)
	}
	if p.device, err = tls.X509KeyPair(dev.Leaf(t, "device-1")); err != nil {
		t.Fatal(err)
	}
	return p
}

func client(p pki, cert *tls.Certificate) *http.Client {
	tc := &tls.Config{RootCAs: p.roots}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
}

func exchange(c *http.Client, u, subject, subjectType string) (int, string, error) {
	resp, err := c.PostForm(u, url.Values{"grant_type": {grantType}, "requested_token_type": {accessToken},
		"audience": {aud}, "scope": {"https://www.googleapis.com/auth/pubsub"}, "subject_token_type": {subjectType}, "subject_token": {subject}})
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &body)
	return resp.StatusCode, body.AccessToken, nil
}

func chain(c tls.Certificate) string {
	b, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(c.Certificate[0])})
	return string(b)
}

func TestX509ExchangeAndGate(t *testing.T) {
	p := newPKI(t)
	s, err := Start(Options{Kind: X509, Audience: aud, Lifetime: 2 * time.Second, Cert: p.server, DeviceCAs: p.devCAs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// No client certificate: the handshake fails.
	if _, _, err := exchange(client(p, nil), s.URL, chain(p.device), TokenTypeMTLS); err == nil {
		t.Error("an exchange without a client certificate was served")
	}
	// A subject token that is not the certificate presented.
	other := newPKI(t).device
	if code, _, err := exchange(client(p, &p.device), s.URL, chain(other), TokenTypeMTLS); err != nil || code != 400 {
		t.Errorf("another certificate's chain: %d %v, want 400", code, err)
	}
	code, tok, err := exchange(client(p, &p.device), s.URL, chain(p.device), TokenTypeMTLS)
	if err != nil || code != 200 || !strings.HasPrefix(tok, "ya29.") {
		t.Fatalf("exchange: %d %q %v", code, tok, err)
	}
	now := time.Now()
	if v := s.Check(tok, now, []string{"https://www.googleapis.com/auth/pubsub"}); !v.OK {
		t.Errorf("fresh token: %+v", v)
	}
	if v := s.Check(tok, now.Add(3*time.Second), nil); v.OK || v.Reason != "expired" {
		t.Errorf("token after its lifetime: %+v", v)
	}
	if v := s.Check(tok, now, []string{"https://www.googleapis.com/auth/devstorage.read_write"}); v.OK || v.Reason != "scope" {
		t.Errorf("token for another scope: %+v", v)
	}

	// The gate in front of an HTTP upstream.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream") }))
	defer up.Close()
	g, err := StartGate(s, strings.TrimPrefix(up.URL, "http://"), p.server, false, "https://www.googleapis.com/auth/pubsub")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	get := func(auth string) int {
		req, _ := http.NewRequest("GET", "https://"+g.Addr+"/x", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client(p, nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("Bearer " + tok); c != 200 {
		t.Errorf("live token: %d", c)
	}
	if c := get(""); c != 401 {
		t.Errorf("no token: %d", c)
	}
	if c := get("Bearer ya29.forged"); c != 401 {
		t.Errorf("unknown token: %d", c)
	}
	st := g.Stats()
	if st.Accepted != 1 || st.Refused["missing"] != 1 || st.Refused["unknown"] != 1 || st.Tokens != 1 {
		t.Errorf("gate stats %+v", st)
	}

	// Outages: refused connections, then 503, then up on the same URL.
	if err := s.SetOutage(Refuse); err != nil {
		t.Fatal(err)
	}
	if _, _, err := exchange(client(p, &p.device), s.URL, chain(p.device), TokenTypeMTLS); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("during a Refuse outage: %v", err)
	}
	if err := s.SetOutage(Unavailable); err != nil {
		t.Fatal(err)
	}
	if code, _, err := exchange(client(p, &p.device), s.URL, chain(p.device), TokenTypeMTLS); err != nil || code != 503 {
		t.Errorf("during an Unavailable outage: %d %v", code, err)
	}
	if err := s.SetOutage(Up); err != nil {
		t.Fatal(err)
	}
	if code, _, err := exchange(client(p, &p.device), s.URL, chain(p.device), TokenTypeMTLS); err != nil || code != 200 {
		t.Errorf("after the outage: %d %v", code, err)
	}
	if st := s.Stats(); st.Issued != 2 || st.Refused != 1 || st.Outaged != 1 || st.Subjects["x509:device-1"] != 2 {
		t.Errorf("STS stats %+v", st)
	}
}

func TestFileSubjectTokens(t *testing.T) {
	p := newPKI(t)
	s, err := Start(Options{Kind: File, Audience: aud, Lifetime: time.Second, Cert: p.server})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := client(p, nil)
	if code, _, _ := exchange(c, s.URL, "subject-1", TokenTypeJWT); code != 400 {
		t.Errorf("unknown subject token: %d", code)
	}
	s.Allow("subject-1")
	if code, tok, _ := exchange(c, s.URL, "subject-1", TokenTypeJWT); code != 200 || tok == "" {
		t.Errorf("allowed subject token: %d", code)
	}
	if code, _, _ := exchange(c, s.URL, "subject-1", TokenTypeMTLS); code != 400 {
		t.Errorf("wrong subject token type: %d", code)
	}
	s.Revoke("subject-1")
	if code, _, _ := exchange(c, s.URL, "subject-1", TokenTypeJWT); code != 400 {
		t.Errorf("revoked subject token: %d", code)
	}
}

// A token that expired on its way is "late"; one kept past LateGrace is
// "expired", as is one long gone.
func TestGateRefusalReasons(t *testing.T) {
	for _, c := range []struct {
		v    Verdict
		want string
	}{
		{Verdict{Reason: "expired", Left: 0}, "late"},
		{Verdict{Reason: "expired", Left: -LateGrace / 2}, "late"},
		{Verdict{Reason: "expired", Left: -LateGrace}, "expired"},
		{Verdict{Reason: "expired", Left: -time.Hour}, "expired"},
		{Verdict{Reason: "unknown"}, "unknown"},
		{Verdict{Reason: "scope", Left: time.Second}, "scope"},
		{Verdict{Reason: "missing"}, "missing"},
	} {
		if got := refusal(c.v); got != c.want {
			t.Errorf("refusal(%+v) = %q, want %q", c.v, got, c.want)
		}
	}
}
