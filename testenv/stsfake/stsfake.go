// Package stsfake is a test stand-in for Google's security token service
// (STS, the token_url of an external_account credential: workload identity
// federation) and a gate in front of an emulator that lets through only
// requests carrying an access token the STS issued and that has not expired.
//
// The emulators (pstest, fake-gcs-server) take any request, and the client
// libraries send none when pointed at them as emulators; with the gate in
// front, reached as an ordinary endpoint over TLS, the client libraries
// fetch tokens from the STS and send them, and the gate proves it.
//
// What the STS checks, as Google's does: an RFC 8693 token exchange
// (grant_type, requested_token_type, the pool provider as audience, a
// scope). For an X.509 source it requires mutual TLS with a certificate
// chaining to the device CA, and the subject token (the certificate chain,
// base64 DER in a JSON array) must begin with the certificate presented;
// for a file source the subject token must be one the test allowed (the
// file's content). It issues opaque access tokens with a short lifetime,
// and can be taken down: refusing connections or answering 503.
package stsfake

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// discardLog drops the servers' own logs (handshakes refused on purpose).
var discardLog = log.New(io.Discard, "", 0)

// Kind is the credential source the STS accepts.
type Kind int

const (
	// X509 requires mutual TLS and the certificate chain as subject token.
	X509 Kind = iota
	// File requires a subject token the test allowed (a token file's content).
	File
)

// Subject token types (RFC 8693 and Google's).
const (
	TokenTypeMTLS = "urn:ietf:params:oauth:token-type:mtls"
	TokenTypeJWT  = "urn:ietf:params:oauth:token-type:jwt"

	grantType   = "urn:ietf:params:oauth:grant-type:token-exchange"
	accessToken = "urn:ietf:params:oauth:token-type:access_token"
)

// Outage modes.
type Outage int

const (
	Up          Outage = iota
	Refuse             // the listener is closed: connection refused
	Unavailable        // HTTP 503 to every request
)

// Options configure an STS.
type Options struct {
	Kind     Kind
	Audience string
	// Lifetime of the access tokens, in whole seconds (at least 1 s).
	Lifetime time.Duration
	// Cert is the STS's server certificate (for 127.0.0.1).
	Cert tls.Certificate
	// DeviceCAs verify the devices' certificates (X509).
	DeviceCAs *x509.CertPool
}

type issued struct {
	expiry  time.Time
	scopes  []string
	subject string
}

// STS is a running fake token endpoint.
type STS struct {
	URL  string // https://127.0.0.1:PORT/v1/token: the token_url
	opts Options
	addr string
	tc   *tls.Config

	mu       sync.Mutex
	srv      *http.Server // the current one: a closed server cannot serve again
	outage   Outage
	tokens   map[string]issued
	subjects map[string]bool // File: allowed subject tokens
	stats    Stats
}

// Stats count what the STS did.
type Stats struct {
	Issued   int // access tokens issued
	Refused  int // exchanges refused (a bad request, an unknown subject)
	Outaged  int // requests answered 503 during an Unavailable outage
	Subjects map[string]int
}

// Start listens on a free port of 127.0.0.1 and serves.
func Start(opts Options) (*STS, error) {
	if opts.Lifetime < time.Second {
		return nil, errors.New("stsfake: a lifetime of at least 1s")
	}
	s := &STS{opts: opts, tokens: map[string]issued{}, subjects: map[string]bool{}}
	s.stats.Subjects = map[string]int{}
	tc := &tls.Config{Certificates: []tls.Certificate{opts.Cert}, MinVersion: tls.VersionTLS12}
	if opts.Kind == X509 {
		// As sts.mtls.googleapis.com: no exchange without a device certificate.
		tc.ClientAuth, tc.ClientCAs = tls.RequireAndVerifyClientCert, opts.DeviceCAs
	}
	s.tc = tc
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	s.URL = "https://" + s.addr + "/v1/token"
	s.serve(ln)
	return s, nil
}

func (s *STS) serve(ln net.Listener) {
	s.srv = &http.Server{Handler: http.HandlerFunc(s.exchange), ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}
	go s.srv.Serve(tls.NewListener(ln, s.tc))
}

// Close stops the STS.
func (s *STS) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv.Close()
}

// SetOutage takes the STS down (Refuse, Unavailable) or brings it up.
func (s *STS) SetOutage(o Outage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o == s.outage {
		return nil
	}
	if s.outage == Refuse {
		// The same address again: the token_url does not change.
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("stsfake: listening again on %s: %w", s.addr, err)
		}
		s.serve(ln)
	}
	if o == Refuse {
		// The listener and every open connection: a client's kept-alive
		// connection must not outlive the outage.
		s.srv.Close()
	}
	s.outage = o
	return nil
}

// Allow makes tok a valid subject token (File); Revoke ends it.
func (s *STS) Allow(tok string) {
	s.mu.Lock()
	s.subjects[tok] = true
	s.mu.Unlock()
}

// Revoke makes tok invalid from now on.
func (s *STS) Revoke(tok string) {
	s.mu.Lock()
	delete(s.subjects, tok)
	s.mu.Unlock()
}

// Stats returns a copy of the counters.
func (s *STS) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Subjects = map[string]int{}
	for k, v := range s.stats.Subjects {
		st.Subjects[k] = v
	}
	return st
}

// Tokens returns every access token issued so far (for secret scans).
func (s *STS) Tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokens))
	for t := range s.tokens {
		out = append(out, t)
	}
	return out
}

// Verdict is what the STS says of an access token at a moment.
type Verdict struct {
	OK     bool
	Reason string        // why not: "unknown", "expired", "scope"
	Left   time.Duration // lifetime left
	Scopes []string
}

// Check judges tok at now; with anyScope, it must hold one of them.
func (s *STS) Check(tok string, now time.Time, anyScope []string) Verdict {
	s.mu.Lock()
	is, ok := s.tokens[tok]
	s.mu.Unlock()
	if !ok {
		return Verdict{Reason: "unknown"}
	}
	v := Verdict{Left: is.expiry.Sub(now), Scopes: is.scopes}
	if v.Left <= 0 {
		v.Reason = "expired"
		return v
	}
	if len(anyScope) > 0 && !overlaps(is.scopes, anyScope) {
		v.Reason = "scope"
		return v
	}
	v.OK = true
	return v
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// exchange is the token endpoint.
func (s *STS) exchange(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := s.outage == Unavailable
	if out {
		s.stats.Outaged++
	}
	s.mu.Unlock()
	if out {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the fake STS is in an outage")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1/token" {
		http.NotFound(w, r)
		return
	}
	subject, err := s.verify(r)
	if err != nil {
		s.mu.Lock()
		s.stats.Refused++
		s.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "invalid_grant", err.Error())
		return
	}
	b := make([]byte, 24)
	rand.Read(b)
	tok := "ya29.stsfake." + hex.EncodeToString(b)
	lifetime := s.opts.Lifetime.Truncate(time.Second)
	s.mu.Lock()
	s.tokens[tok] = issued{expiry: time.Now().Add(lifetime), scopes: strings.Fields(r.PostForm.Get("scope")), subject: subject}
	s.stats.Issued++
	s.stats.Subjects[subject]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "issued_token_type": accessToken, "token_type": "Bearer",
		"expires_in": int(lifetime / time.Second),
	})
}

// verify checks an exchange and returns who asked (a certificate's
// subject, or "file"). Its errors never quote a token.
func (s *STS) verify(r *http.Request) (string, error) {
	if err := r.ParseForm(); err != nil {
		return "", errors.New("the body is not a form")
	}
	f := r.PostForm
	switch {
	case f.Get("grant_type") != grantType:
		return "", fmt.Errorf("grant_type must be %s", grantType)
	case f.Get("requested_token_type") != accessToken:
		return "", fmt.Errorf("requested_token_type must be %s", accessToken)
	case f.Get("audience") != s.opts.Audience:
		return "", fmt.Errorf("unknown audience %q", f.Get("audience"))
	case strings.TrimSpace(f.Get("scope")) == "":
		return "", errors.New("a scope is required")
	}
	subject := f.Get("subject_token")
	switch s.opts.Kind {
	case X509:
		if t := f.Get("subject_token_type"); t != TokenTypeMTLS {
			return "", fmt.Errorf("subject_token_type must be %s, got %q", TokenTypeMTLS, t)
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return "", errors.New("no client certificate")
		}
		var chain []string
		if err := json.Unmarshal([]byte(subject), &chain); err != nil || len(chain) == 0 {
			return "", errors.New("the subject token must be a JSON array of base64 DER certificates")
		}
		leaf, err := base64.StdEncoding.DecodeString(chain[0])
		if err != nil || !bytes.Equal(leaf, r.TLS.PeerCertificates[0].Raw) {
			return "", errors.New("the subject token's first certificate is not the one presented")
		}
		return "x509:" + r.TLS.PeerCertificates[0].Subject.CommonName, nil
	default:
		switch t := f.Get("subject_token_type"); t {
		case TokenTypeJWT, "urn:ietf:params:oauth:token-type:id_token":
		default:
			return "", fmt.Errorf("subject_token_type must be %s, got %q", TokenTypeJWT, t)
		}
		s.mu.Lock()
		ok := s.subjects[subject]
		s.mu.Unlock()
		if !ok {
			return "", errors.New("the subject token is not valid (unknown, revoked or expired)")
		}
		return "file", nil
	}
}

func oauthError(w http.ResponseWriter, code int, kind, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": kind, "error_description": desc})
}
