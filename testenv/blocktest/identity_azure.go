package blocktest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/entrafake"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
	"github.com/cloud-block/cloud-block/testenv/stsfake"
)

// The keyless Azure identities end to end: the block authenticates to
// Microsoft Entra (testenv/entrafake) with a device certificate or a
// federated token file, gets access tokens that live a few seconds, and
// writes with them. The scenario azure-identity streams for a minute (ten
// at the Full scale) with the token endpoint away for a while in the
// middle: nothing is lost, /ready names the identity endpoint meanwhile,
// tokens are refreshed without a restart, and none reaches the logs.
//
// What checks the tokens: for Blob, Azurite (--oauth basic: HTTPS only,
// issuer, audience, nbf and exp, not the signature) behind a proxy of the
// test's that verifies each bearer token's signature with the fake Entra's
// key, its issuer, audience and expiry, and refuses any other request as
// Azure would (401 InvalidAuthenticationInfo).
func init() {
	// The identities' own variables, invalid one at a time (the config
	// scenario), for the services' main targets.
	for _, tg := range targets {
		var p string
		switch tg.name {
		case "azure-blob":
			p = "AZURE_BLOB_"
		case "azure-eh":
			p = "AZURE_EH_"
		default:
			continue
		}
		tg.badVars[p+"CLIENT_CERTIFICATE"] = bad(strings.ToLower(p) + "BadCert-not-pem-0123456789")
		tg.badVars[p+"CLIENT_CERTIFICATE_PATH"] = bad("/no/such/device-cert.pem")
		tg.badVars[p+"CLIENT_CERTIFICATE_PASSWORD"] = bad(strings.ToLower(p) + "BadPfxPassword-0123456789")
		tg.badVars[p+"FEDERATED_TOKEN_FILE"] = bad("/no/such/federated-token")
		tg.badVars[p+"AUTHORITY_HOST"] = bad("ftp://login.example.com/")
		tg.badVars[p+"CA_FILE"] = bad("/no/such/ca.pem")
	}
	scenarios = append(scenarios, scenario{name: "azure-identity", kind: "azure-identity", run: azureIdentity})
	Small.Scenarios = append(Small.Scenarios, "azure-identity")
	for _, kind := range []string{"cert", "federated"} {
		targets = append(targets, &target{
			name: "azure-blob-" + kind, pkg: "services/azure-blob", open: openBlobIdentity(kind), batch: 200, dupFree: true,
			env:  map[string]string{"BATCH_MAX_WAIT": "200ms"},
			only: []string{"azure-identity"},
		}, &target{
			name: "azure-eh-" + kind, pkg: "services/azure-eh", open: openEHIdentity(kind), batch: 200, limit: ehLimit,
			env:  map[string]string{"AZURE_EH_TRANSPORT": "amqp"},
			only: []string{"azure-identity"},
		})
	}
}

// identityLifetime is how long the fake Entra's access tokens live.
const identityLifetime = 3 * time.Second

// identityBackend is a backend whose destination takes Entra tokens.
type identityBackend interface {
	backend
	entra() *entrafake.Server
	checked() (ok, refused int, tokens []string, reasons []string)
	// expiredRefused sends an expired token to the destination and says
	// how it was refused, failing the test if it was not.
	expiredRefused(t testing.TB, token string) string
	// rotated is how many federated tokens were written to the file.
	rotated() int
}

// --- azure-blob on Azurite over HTTPS, with OAuth ----------------------------

type blobIdentity struct {
	*azureDevice
	spec    procs.Spec
	dir     string
	azurite string // Azurite's host:port
	check   *tokenChecker
	c       *azblob.Client // shared key, straight to Azurite
	ctr     string
	objCache

	proc *procs.Proc
}

const identityClient = "5a1e0c1d-0000-4000-8000-00000000b10b"

func openBlobIdentity(kind string) func(t *testing.T) backend {
	return func(t *testing.T) backend {
		b := &blobIdentity{dir: t.TempDir(), ctr: "identity"}
		b.azureDevice = newAzureDevice(t, kind, "AZURE_BLOB_", "azure-blob", b.dir)
		b.env0["AZURE_BLOB_CONTAINER_NAME"] = b.ctr
		b.startAzurite(t)
		b.check = startTokenChecker(t, b.f, b.azurite, "https://storage.azure.com")
		b.c = b.client(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := b.c.CreateContainer(ctx, b.ctr, nil); err != nil {
			t.Fatalf("create container: %v", err)
		}
		return b
	}
}

// azureDevice is the device's side of a keyless Azure identity against a
// fake Entra of its own: the service principal's variables, and what must
// never be shown (the device key's lines, every federated token written).
// Its stop and start are the token endpoint's outage.
type azureDevice struct {
	f    *entrafake.Server
	env0 map[string]string

	mu        sync.Mutex
	secret    []string
	rotations int // federated token files written
}

// newAzureDevice starts the fake Entra and registers the device's
// certificate (kind "cert") or a federated issuer whose tokens it writes to
// a file in dir (kind "federated") for the service of the variables'
// prefix.
func newAzureDevice(t *testing.T, kind, prefix, service, dir string) *azureDevice {
	f := entrafake.Start(t, entrafake.Options{Lifetime: identityLifetime})
	d := &azureDevice{f: f, env0: map[string]string{
		prefix + "TENANT_ID": f.Tenant, prefix + "CLIENT_ID": identityClient,
		prefix + "AUTHORITY_HOST": f.URL, prefix + "CA_FILE": f.CAFile,
	}}
	switch kind {
	case "cert":
		pemText, cert := entrafake.ClientCertificate(t, "blocktest-device")
		f.AddCertificate(identityClient, cert)
		d.env0[prefix+"CLIENT_CERTIFICATE"] = pemText
		// The key's lines must never show.
		for _, l := range strings.Split(pemText[strings.Index(pemText, "PRIVATE KEY"):], "\n")[1:] {
			if len(l) >= 32 {
				d.secret = append(d.secret, l)
			}
		}
	default:
		iss := entrafake.NewIssuer(t, "https://oidc.blocktest.example/cluster")
		subject := "system:serviceaccount:blocktest:" + service
		f.AddFederated(identityClient, iss, subject)
		file := filepath.Join(dir, "federated-token")
		d.env0[prefix+"FEDERATED_TOKEN_FILE"] = file
		d.rotateFederated(t, iss, subject, file)
	}
	return d
}

func (d *azureDevice) entra() *entrafake.Server { return d.f }

func (d *azureDevice) secrets() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.secret...)
}

func (d *azureDevice) rotated() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rotations
}

// stop and start are the token endpoint's outage: the destination stays.
func (d *azureDevice) stop(t testing.TB)  { d.f.Down() }
func (d *azureDevice) start(t testing.TB) { d.f.Up(t) }

// federatedLifetime is how long the federated tokens in the file live, and
// federatedRotate how often the file is rewritten (as kubelet rotates a
// projected service account token), so a credential that kept an old one
// would be refused within the run. The lifetime is longer than a token
// request's retries while Entra is away (azcore re-sends the same
// assertion for some seconds): with real tokens of an hour, one read
// seconds before it is sent is valid.
const (
	federatedLifetime = 30 * time.Second
	federatedRotate   = 4 * time.Second
)

// rotateFederated writes a fresh federated token to file now and every
// federatedRotate until the test ends (atomically: a new file renamed over).
func (d *azureDevice) rotateFederated(t *testing.T, iss *entrafake.Issuer, subject, file string) {
	write := func() {
		tok := iss.Token(subject, federatedLifetime)
		d.mu.Lock()
		d.secret = append(d.secret, tok)
		d.rotations++
		d.mu.Unlock()
		tmp := file + ".new"
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			t.Errorf("writing the federated token: %v", err)
		} else if err := os.Rename(tmp, file); err != nil {
			t.Errorf("writing the federated token: %v", err)
		}
	}
	write()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(federatedRotate)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				write()
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// startAzurite runs Azurite over HTTPS (the fake Entra's certificate) with
// OAuth checks on.
func (b *blobIdentity) startAzurite(t *testing.T) {
	bin := filepath.Join(harness.RepoRoot(), "testenv", "node", "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("azurite is not installed (%s missing): run `make setup`", bin)
	}
	port := procs.FreePort(t)
	b.azurite = procs.Addr(port)
	b.spec = procs.Spec{
		Name: "azurite-blob-oauth", Path: bin, Dir: b.dir,
		Args: []string{"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port), "--inMemoryPersistence",
			"--disableTelemetry", "--skipApiVersionCheck", "--oauth", "basic", "--cert", b.f.CertFile, "--key", b.f.KeyFile},
		Ready: procs.TCPReady(b.azurite), Timeout: 60 * time.Second,
	}
	p, err := procs.StartNoCleanup(b.spec, b.dir)
	if err != nil {
		t.Fatal(err)
	}
	b.proc = p
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			procs.DumpLog(t, p)
		}
	})
}

// client reads back with the shared key, straight from Azurite.
func (b *blobIdentity) client(t *testing.T) *azblob.Client {
	cred, err := azblob.NewSharedKeyCredential(emulators.AzuriteAccountName, emulators.AzuriteAccountKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := azblob.NewClientWithSharedKeyCredential("https://"+b.azurite+"/"+emulators.AzuriteAccountName+"/", cred,
		&azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: trusting(t, b.f.CAFile)}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func trusting(t testing.TB, caFile string) *http.Client {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mustReadFile(t, caFile)) {
		t.Fatalf("%s: no certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}
}

func mustReadFile(t testing.TB, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *blobIdentity) env(addr string) map[string]string {
	env := map[string]string{"AZURE_BLOB_ENDPOINT": "https://" + addr + "/" + emulators.AzuriteAccountName + "/"}
	for k, v := range b.env0 {
		env[k] = v
	}
	return env
}

func (b *blobIdentity) upstream() string { return b.check.addr }
func (b *blobIdentity) checked() (int, int, []string, []string) {
	return b.check.stats()
}

// late is how many requests the checker refused as late (tokenChecker).
func (b *blobIdentity) late() int {
	b.check.mu.Lock()
	defer b.check.mu.Unlock()
	return b.check.late
}

func (b *blobIdentity) expiredRefused(t testing.TB, token string) string {
	var out []string
	for _, where := range []struct{ name, addr string }{{"Azurite", b.azurite}, {"the checker", b.check.addr}} {
		req, err := http.NewRequest(http.MethodGet, "https://"+where.addr+"/"+emulators.AzuriteAccountName+"/"+b.ctr+"?restype=container", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("x-ms-version", "2021-12-02")
		resp, err := trusting(t, b.f.CAFile).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", where.name, err)
		}
		resp.Body.Close()
		code := resp.Header.Get("x-ms-error-code")
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s took an expired token: %s %s", where.name, resp.Status, code)
		}
		out = append(out, fmt.Sprintf("%s %d %s", where.name, resp.StatusCode, code))
	}
	b.check.forget() // the control's refusal is not the block's
	return strings.Join(out, ", ")
}

func (b *blobIdentity) read(t testing.TB) []msg { return readBlobs(t, b.c, b.ctr, &b.objCache) }

// --- the token checker in front of the destination ----------------------------

// tokenChecker is an HTTPS reverse proxy that lets a request through only
// with a bearer token the fake Entra issued (signature, issuer, audience,
// unexpired), as Azure checks it, and counts the tokens it saw.
type tokenChecker struct {
	addr string

	mu       sync.Mutex
	ok, bad  int
	late     int // refused: expired less than stsfake.LateGrace before
	seen     map[string]bool
	tokens   []string
	reasons  []string
	audience string
}

func startTokenChecker(t *testing.T, f *entrafake.Server, upstream, audience string) *tokenChecker {
	c := &tokenChecker{seen: map[string]bool{}, audience: audience}
	up := &url.URL{Scheme: "https", Host: upstream}
	rp := httputil.NewSingleHostReverseProxy(up)
	rp.Transport = trusting(t, f.CAFile).Transport
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := c.verify(f, r.Header.Get("Authorization")); err != nil {
			w.Header().Set("x-ms-error-code", "InvalidAuthenticationInfo")
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InvalidAuthenticationInfo</Code><Message>%s</Message></Error>", err)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

func (c *tokenChecker) verify(f *entrafake.Server, auth string) error {
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	var err error
	switch {
	case !ok:
		err = fmt.Errorf("no bearer token")
	default:
		var aud string
		if aud, err = f.Verify(tok); err == nil && aud != c.audience {
			err = fmt.Errorf("audience %s, want %s", aud, c.audience)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A token used to its last moment may expire on its way: refused, as
	// Azure would, and sent again by the block with a new one (as the GCP
	// gate counts it, stsfake.LateGrace); one kept longer is a failure.
	var expired *entrafake.ExpiredError
	if errors.As(err, &expired) && time.Since(expired.At) < stsfake.LateGrace {
		c.late++
		return err
	}
	if err != nil {
		c.bad++
		c.reasons = append(c.reasons, err.Error())
		return err
	}
	c.ok++
	if !c.seen[tok] {
		c.seen[tok] = true
		c.tokens = append(c.tokens, tok)
	}
	return nil
}

// forget drops the last refusal.
func (c *tokenChecker) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad > 0 {
		c.bad--
		c.reasons = c.reasons[:len(c.reasons)-1]
	}
}

func (c *tokenChecker) stats() (ok, refused int, tokens, reasons []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.bad, append([]string(nil), c.tokens...), append([]string(nil), c.reasons...)
}

// --- the scenario -----------------------------------------------------------

// identityRun is how long azure-identity streams: a minute, ten at the Full
// scale; BLOCKTEST_IDENTITY_TIME sets it.
func identityRun(sc Scale) time.Duration {
	d := time.Minute
	if sc.Messages >= Full.Messages {
		d = 10 * time.Minute
	}
	return envDuration("BLOCKTEST_IDENTITY_TIME", d)
}

func azureIdentity(t *testing.T, tg *target, sc Scale) {
	if !strings.HasPrefix(tg.pkg, "services/azure-") || tg.only == nil {
		t.Skip("the keyless Azure identity targets only")
	}
	d := identityRun(sc)
	const rate = 20.0
	n := int(rate * d.Seconds())
	r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Persistence: true},
		env: map[string]string{"READY_MAX_UNSENT_AGE": readyAge.String()}})
	ib, ok := r.be.(identityBackend)
	if !ok {
		t.Fatalf("target %s has no identity backend", tg.name)
	}
	f := ib.entra()
	r.start()
	pid := r.block.PID()
	s := &stream{pub: harness.NewPublisher(t, r.broker, "cloud-input", outageSize)}
	began := time.Now()
	from, to, done := s.publish(n, rate)

	// The token endpoint away mid-run, long enough for every token to
	// expire and for /ready to fail.
	outage := max(sc.Outage, 2*identityLifetime+readyAge+2*time.Second)
	time.Sleep(time.Until(began.Add(d/2 - outage/2)))
	issuedBefore := len(f.Issued())
	f.Down()
	downAt := time.Now()
	body := r.waitReady(503, outage+readyAge+30*time.Second, "no token from Microsoft Entra", f.URL)
	spooled := r.metric("cloudblock_spool_messages")
	if spooled <= 0 {
		t.Errorf("cloudblock_spool_messages = %v while the token endpoint is away, want the messages held", spooled)
	}
	r.checkLive()
	time.Sleep(time.Until(downAt.Add(outage)))
	f.Up(t)
	upAt := time.Now()
	r.waitMetric("cloudblock_spool_messages", 2*time.Minute, func(v float64) bool { return v < spooled })
	recovered := time.Since(upAt)
	<-done
	tl, _ := r.waitRange(from, to, outageSize, 3*time.Minute, true)
	r.waitReady(200, time.Minute)
	if r.block.PID() != pid || r.block.Starts != 1 {
		t.Errorf("the block restarted (pid %d -> %d, %d starts): tokens must be refreshed in the running process", pid, r.block.PID(), r.block.Starts)
	}

	issued, refused := f.Issued(), f.Refused()
	okReqs, badReqs, tokens, reasons := ib.checked()
	for _, tok := range tokens {
		r.addSecret(tok)
		if strings.Contains(body, tok) {
			t.Errorf("/ready shows an access token")
		}
	}
	// Each token lives identityLifetime: a run of d needs about d/lifetime.
	if want := int((d - outage) / identityLifetime / 2); len(tokens) < want {
		t.Errorf("the destination saw %d distinct tokens in %s, want at least %d (tokens live %s)", len(tokens), d, want, identityLifetime)
	}
	if len(refused) > 0 {
		t.Errorf("the fake Entra refused %d token requests, e.g. %s", len(refused), refused[0].Reason)
	}
	if badReqs > 0 {
		t.Errorf("%d requests reached the destination without a valid token (e.g. %s)", badReqs, reasons[0])
	}
	control := ""
	for _, sec := range r.be.secrets() { // the federated tokens written since the start
		r.addSecret(sec)
	}
	if d, ok := ib.(interface{ detached() int }); ok {
		control += fmt.Sprintf("%d links detached by the event hub as their claim expired, each attached again with a fresh token; ", d.detached())
	}
	if n := ib.rotated(); n > 0 {
		control += fmt.Sprintf("federated token file rewritten %d times (every %s, tokens of %s); ", n, federatedRotate, federatedLifetime)
	}
	// Negative controls: the first token, long expired, is refused by the
	// destination itself (Azurite checks exp) and by the checker.
	if len(tokens) > 0 {
		control += "an expired access token: " + ib.expiredRefused(t, tokens[0])
	}
	reason := strings.TrimSpace(body)
	var rd struct{ Reasons []string }
	if json.Unmarshal([]byte(body), &rd) == nil && len(rd.Reasons) > 0 {
		reason = rd.Reasons[0]
	}
	note := fmt.Sprintf("%s of %.0f msg/s with %s tokens (%s): %d issued (%d before the outage), %d distinct seen by the destination over %d requests, %d refused there; token endpoint away %s: %.0f held, first delivery %s after it was back; %s; /ready said %.400s",
		d, rate, identityLifetime, strings.TrimPrefix(tg.name, "azure-"), len(issued), issuedBefore, len(tokens), okReqs, badReqs,
		outage, spooled, recovered.Round(100*time.Millisecond), control, reason)
	if l, ok := ib.(interface{ late() int }); ok && l.late() > 0 {
		note = fmt.Sprintf("%d refused as late (expired under %s before arriving, sent again); %s", l.late(), stsfake.LateGrace, note)
	}
	t.Logf("%s azure-identity: %s; %s", tg.name, tl, note)
	r.report("azure-identity", tl, 0, note)
}
