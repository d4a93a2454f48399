// Package iotfake is an in-process AWS IoT Core credentials provider for
// tests: https://127.0.0.1:<port>/role-aliases/<alias>/credentials over
// mutual TLS (a client certificate signed by the fake's own CA is
// required), issuing temporary credentials that expire after a TTL of the
// test's choosing, with an outage switch and a count of what it issued.
//
// Verify puts a SigV4 check in front of an emulator (the SQS fake, gofakes3,
// which take any key): a request passes only when signed with credentials
// the fake issued, unexpired, and their session token. So a block that does
// not refresh in time, or signs with anything else, really fails.
package iotfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fake is the credentials endpoint. Its methods are safe for concurrent use.
type Fake struct {
	// URL is https://127.0.0.1:<port>; Host is its host:port.
	URL, Host string
	// CA is the PEM of the CA that signed the fake's server certificate and
	// the device certificates it accepts.
	CA string
	// Alias is the only role alias the fake knows.
	Alias string

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	srv   *httptest.Server

	mu      sync.Mutex
	ttl     time.Duration
	down    bool
	issued  map[string]issued // by access key id
	fetches int               // credentials issued
	refused int               // requests refused (bad alias, thing), not counting failed handshakes
	downHit int               // connections closed while down
}

type issued struct {
	secret, token string
	expires       time.Time
}

// New starts a fake for role alias alias whose credentials last ttl (AWS
// allows 900 s to 12 h; tests use seconds). It stops when the test ends.
func New(t testing.TB, alias string, ttl time.Duration) *Fake {
	t.Helper()
	f := &Fake{Alias: alias, ttl: ttl, issued: map[string]issued{}}
	f.ca, f.caKey, f.CA = newCA(t, "iotfake test CA")
	serverCert := f.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "credentials.iot.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	pool := x509.NewCertPool()
	pool.AddCert(f.ca)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Listener.Close()
	f.srv.Listener = &switchListener{Listener: ln, f: f}
	f.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}
	f.srv.StartTLS()
	f.URL = f.srv.URL
	f.Host = strings.TrimPrefix(f.URL, "https://")
	t.Cleanup(f.srv.Close)
	return f
}

// DeviceCert returns a certificate for thing (its common name, as AWS IoT
// attaches a thing to a certificate) signed by the fake's CA, and its key,
// both PEM.
func (f *Fake) DeviceCert(t testing.TB, thing string) (certPEM, keyPEM string) {
	t.Helper()
	c := f.sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: thing},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return pemCert(c.Certificate[0]), pemKey(t, c.PrivateKey.(*ecdsa.PrivateKey))
}

// StrangerCert returns a client certificate for thing signed by another
// CA: the fake refuses it in the handshake.
func StrangerCert(t testing.TB, thing string) (certPEM, keyPEM string) {
	t.Helper()
	other := &Fake{}
	other.ca, other.caKey, _ = newCA(t, "stranger CA")
	return other.DeviceCert(t, thing)
}

// SetTTL changes the lifetime of credentials issued from now on.
func (f *Fake) SetTTL(d time.Duration) {
	f.mu.Lock()
	f.ttl = d
	f.mu.Unlock()
}

// SetDown starts or ends an outage: while down, every connection is closed
// as soon as it is accepted (open ones too), so no credentials are issued.
func (f *Fake) SetDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
	if down {
		f.srv.CloseClientConnections()
	}
}

// Fetches is how many sets of credentials the fake has issued.
func (f *Fake) Fetches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches
}

// Refused is how many requests the fake answered with an error (an unknown
// role alias, a thing not the certificate's), and DownHits how many
// connections it closed while down.
func (f *Fake) Refused() (refused, downHits int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused, f.downHit
}

// Secrets are every secret key and session token issued so far, for a
// test to check none shows in logs.
func (f *Fake) Secrets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.issued {
		out = append(out, c.secret, c.token)
	}
	return out
}

// lookup returns the issued credentials of an access key id.
func (f *Fake) lookup(akid string) (issued, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.issued[akid]
	return c, ok
}

// serve answers GET /role-aliases/<alias>/credentials as AWS IoT does.
func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	alias, ok := strings.CutPrefix(r.URL.Path, "/role-aliases/")
	alias, ok2 := strings.CutSuffix(alias, "/credentials")
	if r.Method != http.MethodGet || !ok || !ok2 {
		f.refuse(w, http.StatusNotFound, "no such resource")
		return
	}
	if alias != f.Alias {
		f.refuse(w, http.StatusNotFound, "Role alias does not exist")
		return
	}
	// The handshake verified the certificate; a thing named must be the
	// certificate's.
	if thing := r.Header.Get("x-amzn-iot-thingname"); thing != "" && thing != r.TLS.PeerCertificates[0].Subject.CommonName {
		f.refuse(w, http.StatusForbidden, "Access Denied")
		return
	}
	f.mu.Lock()
	c := issued{secret: "iotSecret-" + randHex(16), token: "iotToken-" + randHex(24), expires: time.Now().Add(f.ttl).Truncate(time.Second)}
	akid := "ASIAIOTFAKE" + strings.ToUpper(randHex(5))
	f.issued[akid] = c
	f.fetches++
	f.mu.Unlock()
	var out struct {
		Credentials struct {
			AccessKeyID     string `json:"accessKeyId"`
			SecretAccessKey string `json:"secretAccessKey"`
			SessionToken    string `json:"sessionToken"`
			Expiration      string `json:"expiration"`
		} `json:"credentials"`
	}
	out.Credentials.AccessKeyID, out.Credentials.SecretAccessKey, out.Credentials.SessionToken = akid, c.secret, c.token
	out.Credentials.Expiration = c.expires.UTC().Format(time.RFC3339)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (f *Fake) refuse(w http.ResponseWriter, status int, msg string) {
	f.mu.Lock()
	f.refused++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// switchListener closes what it accepts while the fake is down.
type switchListener struct {
	net.Listener
	f *Fake
}

func (l *switchListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.f.mu.Lock()
		down := l.f.down
		if down {
			l.f.downHit++
		}
		l.f.mu.Unlock()
		if !down {
			return c, nil
		}
		c.Close()
	}
}

// --- certificates ------------------------------------------------------------

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key, pemCert(der)
}

// sign issues a leaf certificate of tmpl's subject, names and usage.
func (f *Fake) sign(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca, &key.PublicKey, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func pemKey(t testing.TB, k *ecdsa.PrivateKey) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
