// Package entrafake is an in-process Microsoft Entra token endpoint for
// tests of the keyless identities, driven by the real azidentity SDK: the
// OpenID configuration (/{tenant}/v2.0/.well-known/openid-configuration)
// and the token endpoint (/{tenant}/oauth2/v2.0/token, client credentials
// grant), over HTTPS with a certificate for 127.0.0.1 that CAFile trusts.
//
// It checks what Entra checks of a confidential client's proof:
//   - a client certificate: the client assertion is a JWT whose signature
//     verifies with the public key of the certificate registered for the
//     client (AddCertificate), whose x5t / x5t#S256 header is that
//     certificate's thumbprint, iss and sub the client id, aud the token
//     endpoint, and which has not expired;
//   - a federated credential (AddFederated): the assertion is the token the
//     workload read from its file, a JWT signed by the registered issuer's
//     key (Issuer), with that issuer, subject and the audience
//     api://AzureADTokenExchange, unexpired.
//
// Access tokens are RS256 JWTs signed by the fake's own key (Verify checks
// them), valid for Options.Lifetime: seconds, so that clients must refresh
// them. Their claims are those Azure's services check: iss
// https://sts.windows.net/{tenant}/, aud the scope's resource, nbf, exp,
// iat, appid, tid. Every issue and refusal is recorded (never a token), and
// Down/Up take the endpoint away and back on the same address.
package entrafake

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// FederatedAudience is the audience Entra requires of a federated token.
const FederatedAudience = "api://AzureADTokenExchange"

// Options configure the fake; the zero value is valid.
type Options struct {
	Tenant   string        // default "11111111-2222-3333-4444-555555555555"
	Lifetime time.Duration // access tokens' lifetime (expires_in); default 5s
}

// Server is a running fake Entra.
type Server struct {
	Tenant   string
	Lifetime time.Duration
	// URL is the authority host, "https://127.0.0.1:<port>/".
	URL string
	// CAFile is a PEM file of the certificate the fake serves (a CA for
	// 127.0.0.1), and CertFile/KeyFile the pair, which an emulator may serve
	// too so that one CA file trusts both.
	CAFile, CertFile, KeyFile string
	// PublicKeyFile is the PEM public key the access tokens are signed with.
	PublicKeyFile string

	addr    string
	tlsConf *tls.Config
	key     *rsa.PrivateKey

	mu        sync.Mutex
	srv       *http.Server
	certs     map[string]*x509.Certificate // client id -> registered certificate
	federated map[string]federation        // client id -> trusted issuer and subject
	issued    []Issue
	refused   []Refusal
}

type federation struct {
	issuer  *Issuer
	subject string
}

// Issue is one access token issued.
type Issue struct {
	Client, Kind, Audience string // Kind: "certificate" or "federated"
	At, Expires            time.Time
	// Token is the access token itself, for a test to look for where it
	// must not be (logs) and to match with what a destination saw.
	Token string
}

// Refusal is one token request refused, and why.
type Refusal struct {
	Client, Reason string
	At             time.Time
}

// Start runs the fake until the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Tenant == "" {
		o.Tenant = "11111111-2222-3333-4444-555555555555"
	}
	if o.Lifetime == 0 {
		o.Lifetime = 5 * time.Second
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Tenant: o.Tenant, Lifetime: o.Lifetime, key: key,
		certs: map[string]*x509.Certificate{}, federated: map[string]federation{}}
	dir := t.TempDir()
	s.CAFile, s.CertFile, s.KeyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	s.PublicKeyFile = filepath.Join(dir, "token-key.pem")
	cert := selfSigned(t, s.CertFile, s.KeyFile)
	if err := os.WriteFile(s.CAFile, mustRead(t, s.CertFile), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.PublicKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
	s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	s.URL = "https://" + s.addr + "/"
	s.serve(ln)
	t.Cleanup(s.Down)
	return s
}

func mustRead(t testing.TB, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// selfSigned writes a certificate for 127.0.0.1 and localhost that is its
// own CA, and its key.
func selfSigned(t testing.TB, certFile, keyFile string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "entrafake test CA"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kp := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	if err := os.WriteFile(certFile, cp, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kp, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

func (s *Server) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.handle), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(tls.NewListener(ln, s.tlsConf))
}

// Down takes the endpoint away: connections are refused until Up.
func (s *Server) Down() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Up serves again on the same address.
func (s *Server) Up(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	up := s.srv != nil
	s.mu.Unlock()
	if up {
		return
	}
	var ln net.Listener
	var err error
	// The port was ours a moment ago; another listener may take a moment to let go.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ln, err = net.Listen("tcp", s.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("entrafake: listening again on %s: %v", s.addr, err)
	}
	s.serve(ln)
}

// AddCertificate registers a client's certificate (its public part, as an
// app registration holds it).
func (s *Server) AddCertificate(client string, cert *x509.Certificate) {
	s.mu.Lock()
	s.certs[client] = cert
	s.mu.Unlock()
}

// AddFederated registers a federated credential of a client: tokens of
// issuer with this subject are accepted as its proof.
func (s *Server) AddFederated(client string, issuer *Issuer, subject string) {
	s.mu.Lock()
	s.federated[client] = federation{issuer: issuer, subject: subject}
	s.mu.Unlock()
}

// Issued returns the access tokens issued so far.
func (s *Server) Issued() []Issue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Issue(nil), s.issued...)
}

// Refused returns the token requests refused so far.
func (s *Server) Refused() []Refusal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Refusal(nil), s.refused...)
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case len(parts) == 4 && parts[0] == s.Tenant && parts[1] == "v2.0" && parts[2] == ".well-known" && parts[3] == "openid-configuration":
		base := strings.TrimSuffix(s.URL, "/") + "/" + s.Tenant
		json.NewEncoder(w).Encode(map[string]any{
			"token_endpoint":         base + "/oauth2/v2.0/token",
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer":                 base + "/v2.0",
			"jwks_uri":               base + "/discovery/v2.0/keys",
		})
	case len(parts) == 4 && parts[0] == s.Tenant && parts[1] == "oauth2" && parts[3] == "token" && r.Method == http.MethodPost:
		s.token(w, r)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"invalid_request","error_description":"AADSTS90002: no such endpoint %s"}`, r.URL.Path)
	}
}

// token answers a client credentials grant with a client assertion.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.refuse(w, "", http.StatusBadRequest, "invalid_request", "AADSTS900144: the request body is not a form")
		return
	}
	f := r.PostForm
	client := f.Get("client_id")
	switch {
	case f.Get("grant_type") != "client_credentials":
		s.refuse(w, client, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: only client_credentials is served")
		return
	case f.Get("client_secret") != "":
		s.refuse(w, client, http.StatusUnauthorized, "invalid_client", "AADSTS7000218: client secrets are not accepted by this fake")
		return
	case f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
		s.refuse(w, client, http.StatusBadRequest, "invalid_request", "AADSTS900144: client_assertion_type must be jwt-bearer")
		return
	}
	scope := f.Get("scope")
	resource, ok := strings.CutSuffix(strings.Fields(scope + " x")[0], "/.default")
	if !ok {
		s.refuse(w, client, http.StatusBadRequest, "invalid_scope", "AADSTS70011: the scope must end in /.default")
		return
	}
	s.mu.Lock()
	cert, fed := s.certs[client], s.federated[client]
	s.mu.Unlock()
	endpoint := strings.TrimSuffix(s.URL, "/") + r.URL.Path
	var kind string
	var err error
	switch {
	case cert != nil:
		kind, err = "certificate", checkCertAssertion(f.Get("client_assertion"), cert, client, endpoint)
	case fed.issuer != nil:
		kind, err = "federated", fed.issuer.check(f.Get("client_assertion"), fed.subject)
	default:
		s.refuse(w, client, http.StatusBadRequest, "unauthorized_client", "AADSTS700016: application "+client+" was not found in the directory")
		return
	}
	if err != nil {
		s.refuse(w, client, http.StatusUnauthorized, "invalid_client", "AADSTS700027: client assertion failed: "+err.Error())
		return
	}
	now := time.Now()
	// Services allow for clock skew; the token's exp is a second past
	// expires_in, so a token the client uses to its last moment is still
	// valid when the request arrives.
	exp := now.Add(s.Lifetime).Add(time.Second)
	tok, err := signJWT(s.key, "RS256", map[string]any{"typ": "JWT", "kid": "entrafake"}, map[string]any{
		"aud": resource,
		"iss": "https://sts.windows.net/" + s.Tenant + "/",
		"iat": now.Unix(), "nbf": now.Add(-time.Second).Unix(), "exp": exp.Unix(),
		"appid": client, "tid": s.Tenant, "oid": client, "sub": client, "ver": "1.0",
	})
	if err != nil {
		s.refuse(w, client, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	s.mu.Lock()
	s.issued = append(s.issued, Issue{Client: client, Kind: kind, Audience: resource, At: now, Expires: exp, Token: tok})
	s.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]any{
		"token_type": "Bearer", "expires_in": int(s.Lifetime / time.Second), "ext_expires_in": int(s.Lifetime / time.Second),
		"access_token": tok,
	})
}

func (s *Server) refuse(w http.ResponseWriter, client string, status int, code, desc string) {
	s.mu.Lock()
	s.refused = append(s.refused, Refusal{Client: client, Reason: code + ": " + desc, At: time.Now()})
	s.mu.Unlock()
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc + "\r\nTrace ID: 00000000-0000-0000-0000-000000000000"})
}

// checkCertAssertion verifies a client assertion signed with the key of
// cert.
func checkCertAssertion(assertion string, cert *x509.Certificate, client, endpoint string) error {
	_, claims, err := parseJWT(assertion, func(hdr map[string]any) (crypto.PublicKey, error) {
		sum1, sum256 := sha1.Sum(cert.Raw), sha256.Sum256(cert.Raw)
		// MSAL sends standard base64 (RFC 7515 says base64url): take both.
		is := func(v any, sum []byte) bool {
			return v == base64.RawURLEncoding.EncodeToString(sum) || v == base64.StdEncoding.EncodeToString(sum)
		}
		switch {
		case is(hdr["x5t#S256"], sum256[:]), is(hdr["x5t"], sum1[:]):
		default:
			return nil, errors.New("the assertion's x5t names no certificate registered for the client")
		}
		return cert.PublicKey, nil
	})
	if err != nil {
		return err
	}
	if claims["iss"] != client || claims["sub"] != client {
		return fmt.Errorf("iss and sub must be the client id %s", client)
	}
	if claims["aud"] != endpoint {
		return fmt.Errorf("aud %v is not the token endpoint %s", claims["aud"], endpoint)
	}
	return checkTimes(claims)
}

// checkTimes checks exp and nbf, with a minute's skew as Entra allows.
func checkTimes(claims map[string]any) error {
	exp, ok := claims["exp"].(float64)
	if !ok {
		return errors.New("no exp claim")
	}
	if time.Now().After(time.Unix(int64(exp), 0).Add(time.Minute)) {
		return errors.New("the assertion has expired")
	}
	if nbf, ok := claims["nbf"].(float64); ok && time.Now().Add(time.Minute).Before(time.Unix(int64(nbf), 0)) {
		return errors.New("the assertion is not valid yet")
	}
	return nil
}

// Verify checks an access token the fake issued: signature, issuer and
// ExpiredError is Verify's refusal of a token past its expiry.
type ExpiredError struct{ At time.Time }

func (e *ExpiredError) Error() string {
	return "the token expired at " + e.At.UTC().Format(time.RFC3339)
}

// expiry (no skew allowed); it returns the audience.
func (s *Server) Verify(token string) (audience string, err error) {
	_, claims, err := parseJWT(token, func(hdr map[string]any) (crypto.PublicKey, error) { return &s.key.PublicKey, nil })
	if err != nil {
		return "", err
	}
	if claims["iss"] != "https://sts.windows.net/"+s.Tenant+"/" {
		return "", fmt.Errorf("issuer %v is not the fake's", claims["iss"])
	}
	exp, _ := claims["exp"].(float64)
	if at := time.Unix(int64(exp), 0); time.Now().After(at) {
		return "", &ExpiredError{At: at}
	}
	aud, _ := claims["aud"].(string)
	return aud, nil
}

// --- a federated token issuer (a Kubernetes cluster's, say) -----------------

// Issuer is an OIDC issuer the app registration trusts: it signs the tokens
// a workload finds in its federated token file.
type Issuer struct {
	URL string
	key *rsa.PrivateKey
}

// NewIssuer makes an issuer with a key of its own.
func NewIssuer(t testing.TB, url string) *Issuer {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{URL: url, key: key}
}

// Token signs a token for subject valid for d.
func (i *Issuer) Token(subject string, d time.Duration) string {
	now := time.Now()
	tok, err := signJWT(i.key, "RS256", map[string]any{"typ": "JWT"}, map[string]any{
		"iss": i.URL, "sub": subject, "aud": FederatedAudience,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(d).Unix(),
	})
	if err != nil {
		panic(err)
	}
	return tok
}

func (i *Issuer) check(assertion, subject string) error {
	_, claims, err := parseJWT(assertion, func(map[string]any) (crypto.PublicKey, error) { return &i.key.PublicKey, nil })
	if err != nil {
		return fmt.Errorf("the federated token: %w", err)
	}
	if claims["iss"] != i.URL || claims["sub"] != subject {
		return fmt.Errorf("the federated token's issuer and subject (%v, %v) match no federated credential", claims["iss"], claims["sub"])
	}
	if claims["aud"] != FederatedAudience {
		return fmt.Errorf("the federated token's audience %v is not %s", claims["aud"], FederatedAudience)
	}
	exp, _ := claims["exp"].(float64)
	if time.Now().After(time.Unix(int64(exp), 0)) {
		return errors.New("AADSTS700024: the federated token has expired")
	}
	return nil
}

// --- JWT --------------------------------------------------------------------

func signJWT(key *rsa.PrivateKey, alg string, hdr, claims map[string]any) (string, error) {
	hdr["alg"] = alg
	h, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// parseJWT verifies a JWT signed with RS256 or PS256 by the key keyFor
// returns for its header.
func parseJWT(tok string, keyFor func(hdr map[string]any) (crypto.PublicKey, error)) (hdr, claims map[string]any, err error) {
	p := strings.Split(tok, ".")
	if len(p) != 3 {
		return nil, nil, errors.New("not a JWT")
	}
	h, err1 := base64.RawURLEncoding.DecodeString(p[0])
	c, err2 := base64.RawURLEncoding.DecodeString(p[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(p[2])
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, nil, fmt.Errorf("not a JWT: %w", err)
	}
	if json.Unmarshal(h, &hdr) != nil || json.Unmarshal(c, &claims) != nil {
		return nil, nil, errors.New("not a JWT: header or claims are not JSON")
	}
	pub, err := keyFor(hdr)
	if err != nil {
		return nil, nil, err
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("the key is %T, not RSA", pub)
	}
	sum := sha256.Sum256([]byte(p[0] + "." + p[1]))
	switch hdr["alg"] {
	case "RS256":
		err = rsa.VerifyPKCS1v15(rk, crypto.SHA256, sum[:], sig)
	case "PS256":
		err = rsa.VerifyPSS(rk, crypto.SHA256, sum[:], sig, nil)
	default:
		return nil, nil, fmt.Errorf("alg %v is not RS256 or PS256", hdr["alg"])
	}
	if err != nil {
		return nil, nil, errors.New("the signature does not verify")
	}
	return hdr, claims, nil
}

// ClientCertificate makes a device's self-signed certificate and RSA key,
// as PEM (certificate then key), and the certificate to register.
func ClientCertificate(t testing.TB, name string) (pemText string, cert *x509.Certificate) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})), cert
}
