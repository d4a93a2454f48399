package blocktest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/stsfake"
)

// GCP without a service-account key: workload identity federation
// (an external_account credential) through Google's own auth library,
// against a fake STS (testenv/stsfake) that issues tokens living a few
// seconds, and a gate in front of the emulator that lets through only
// requests carrying a live token the STS issued. The block reaches the
// gate as an ordinary API endpoint (GCP_PUBSUB_ENDPOINT, GCP_STORAGE_ENDPOINT)
// over TLS, not as an emulator: the client libraries send no credentials
// to an emulator.
func init() {
	for _, v := range []struct {
		svc  string
		open func(*testing.T) backend
		kind stsfake.Kind
	}{
		{"gcp-pubsub", openPubSub, stsfake.X509},
		{"gcp-pubsub", openPubSub, stsfake.File},
		{"gcp-storage", openGCS, stsfake.X509},
		{"gcp-storage", openGCS, stsfake.File},
	} {
		name := v.svc + "-wif-x509"
		if v.kind == stsfake.File {
			name = v.svc + "-wif-file"
		}
		tg := &target{name: name, pkg: "services/" + v.svc, open: openFederated(v.svc, v.open, v.kind), batch: 200,
			shares: sharePubSub, only: []string{"identity"}}
		if v.svc == "gcp-storage" {
			tg.env, tg.shares = map[string]string{"BATCH_MAX_WAIT": "200ms"}, shareGCS
		}
		targets = append(targets, tg)
		federatedTargets[name] = true
	}
	scenarios = append(scenarios, scenario{name: "identity-gcp", kind: "identity", run: federatedIdentity})
	if !slices.Contains(Small.Scenarios, "identity") {
		Small.Scenarios = append(Small.Scenarios, "identity")
	}
	// The variables added for this, in the config scenario of the services.
	for _, tg := range targets {
		switch tg.name {
		case "gcp-pubsub":
			tg.badVars["GCP_PUBSUB_ENDPOINT"] = bad("not a host:port")
			tg.badVars["GOOGLE_API_CERTIFICATE_CONFIG"] = bad("/no/such/certificate_config.json")
		case "gcp-storage":
			tg.badVars["GCP_STORAGE_ENDPOINT"] = bad("ftp://storage.example.com")
			tg.badVars["GOOGLE_API_CERTIFICATE_CONFIG"] = bad("/no/such/certificate_config.json")
		}
	}
}

// federatedTargets are the targets above: identity-gcp skips the others
// before starting anything.
var federatedTargets = map[string]bool{}

const (
	// wifAudience is the workload identity pool provider the STS serves.
	wifAudience = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/devices/providers/fleet"
	// wifLifetime is how long an access token lives. Google's auth library
	// takes a token living less than 225 s for stale: it serves it and asks
	// for the next one in the background, so any lifetime this short makes
	// it exchange about once a request.
	wifLifetime = 10 * time.Second
)

// fedBackend is an emulator behind the gate, with the STS and the files a
// device holds: the external_account JSON, and the certificate and key or
// the subject token file.
type fedBackend struct {
	backend // the emulator: read, stop and start are its own
	svc     string
	kind    stsfake.Kind
	sts     *stsfake.STS
	gate    *stsfake.Gate
	caFile  string // the CA of the STS's and the gate's certificates
	creds   string // the external_account JSON
	token   string // File: the subject token file
	subject string // File: its current content
	keyPEM  string // X509: the device's private key
}

func openFederated(svc string, open func(*testing.T) backend, kind stsfake.Kind) func(*testing.T) backend {
	return func(t *testing.T) backend {
		inner := open(t)
		dir := t.TempDir()
		ca := harness.NewCA(t, "test CA")
		serverCert := func(name string) tls.Certificate {
			c, k := ca.Leaf(t, name)
			pair, err := tls.X509KeyPair(c, k)
			if err != nil {
				t.Fatal(err)
			}
			return pair
		}
		b := &fedBackend{backend: inner, svc: svc, kind: kind, caFile: filepath.Join(dir, "ca.pem"), creds: filepath.Join(dir, "gcp-credentials.json")}
		writeFile(t, b.caFile, ca.PEM, 0o644)
		opts := stsfake.Options{Kind: kind, Audience: wifAudience, Lifetime: wifLifetime, Cert: serverCert("sts")}
		source := map[string]any{}
		tokenType := stsfake.TokenTypeMTLS
		if kind == stsfake.X509 {
			// The device's certificate, from a CA of the fleet's own: the
			// pool provider's trust store.
			devCA := harness.NewCA(t, "fleet CA")
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(devCA.PEM)
			opts.DeviceCAs = pool
			cert, key := devCA.Leaf(t, "device-1")
			b.keyPEM = string(key)
			certPath, keyPath, config := filepath.Join(dir, "device.pem"), filepath.Join(dir, "device.key"), filepath.Join(dir, "certificate_config.json")
			writeFile(t, certPath, cert, 0o644)
			writeFile(t, keyPath, key, 0o600)
			writeJSONFile(t, config, map[string]any{"cert_configs": map[string]any{"workload": map[string]string{"cert_path": certPath, "key_path": keyPath}}})
			source["certificate"] = map[string]any{"certificate_config_location": config}
		} else {
			b.token, b.subject = filepath.Join(dir, "token"), "subject-"+randHex(16)
			writeFile(t, b.token, []byte(b.subject), 0o600)
			source["file"] = b.token
			tokenType = stsfake.TokenTypeJWT
		}
		sts, err := stsfake.Start(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sts.Close)
		if kind == stsfake.File {
			sts.Allow(b.subject)
		}
		b.sts = sts
		// The scopes each service asks for: Pub/Sub's own, Storage's read-write.
		scopes := []string{"https://www.googleapis.com/auth/pubsub"}
		grpc := svc == "gcp-pubsub"
		if !grpc {
			scopes = []string{"https://www.googleapis.com/auth/devstorage.read_write"}
		}
		g, err := stsfake.StartGate(sts, inner.upstream(), serverCert("gate"), grpc, scopes...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		b.gate = g
		writeJSONFile(t, b.creds, map[string]any{
			"type": "external_account", "audience": wifAudience, "subject_token_type": tokenType,
			"token_url": sts.URL, "credential_source": source, "universe_domain": "googleapis.com",
		})
		return b
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b, 0o644)
}

// env is the emulator's, reached through the gate as an API endpoint with
// the external_account credentials instead of a key.
func (b *fedBackend) env(addr string) map[string]string {
	e := b.backend.env(addr)
	for _, k := range []string{"PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"} {
		// Set empty, so that one in the test's environment cannot win.
		if _, ok := e[k]; ok {
			e[k] = ""
		}
	}
	for k := range e {
		if strings.HasSuffix(k, "_CLIENT_EMAIL") || strings.HasSuffix(k, "_PRIVATE_KEY") {
			delete(e, k)
		}
	}
	if b.svc == "gcp-pubsub" {
		e["GCP_PUBSUB_ENDPOINT"] = addr
	} else {
		e["GCP_STORAGE_ENDPOINT"] = "https://" + addr
	}
	e["GOOGLE_APPLICATION_CREDENTIALS"] = b.creds
	// Go reads the trusted roots from here: the test CA, for the STS and the gate.
	e["SSL_CERT_FILE"] = b.caFile
	return e
}

// upstream is the gate: the rig's proxy goes in front of it.
func (b *fedBackend) upstream() string { return b.gate.Addr }

func (b *fedBackend) secrets() []string {
	s := b.backend.secrets()
	if b.keyPEM != "" {
		// Each line of the key: a log could hold one without the others.
		for _, l := range strings.Split(b.keyPEM, "\n") {
			if len(l) >= 32 && !strings.HasPrefix(l, "-----") {
				s = append(s, l)
			}
		}
	}
	if b.subject != "" {
		s = append(s, b.subject)
	}
	return s
}

// federatedIdentity: messages at a steady rate for a minute (ten at the
// Full scale) while access tokens expire every few seconds, with the STS
// refusing connections for a while mid-run (longer than a token lives). Nothing is
// lost; every request the emulator saw carried a live token the STS issued;
// tokens were refreshed without a restart; during the outage /ready fails
// naming the token endpoint and messages stay in the spool; no token (nor
// the subject token, nor the device's key) appears in the logs, /ready or
// /metrics; check names the identity. With a token file, the file is
// rotated mid-run and the old token revoked 5 s later: the library reads
// it anew.
func federatedIdentity(t *testing.T, tg *target, sc Scale) {
	if !federatedTargets[tg.name] {
		t.Skip("not a GCP workload identity federation target")
	}
	r := newRig(t, tg, rigOpts{env: map[string]string{"READY_MAX_UNSENT_AGE": "2s"}})
	fb := r.be.(*fedBackend)
	run := max(time.Minute, 10*sc.Outage)
	down := max(10*time.Second, sc.Outage)
	const rate = 20
	n := int(rate * run.Seconds())
	r.start()
	began := time.Now()
	s := &stream{pub: harness.NewPublisher(t, r.broker, "cloud-input", outageSize)}
	from, to, done := s.publish(n, rate)

	rotated := ""
	const rotationGrace = 5 * time.Second
	if fb.kind == stsfake.File {
		r.idleUntil(began.Add(run / 4))
		old := fb.subject
		fb.subject = "subject-" + randHex(16)
		fb.sts.Allow(fb.subject)
		tmp := fb.token + ".new"
		writeFile(t, tmp, []byte(fb.subject), 0o600)
		if err := os.Rename(tmp, fb.token); err != nil {
			t.Fatal(err)
		}
		// Revoked a little later, as a rotated token stays valid until it
		// expires: an exchange the block began with the old one just
		// before the rename is not a failure. One that begins after it
		// (a library not reading the file anew) is refused.
		time.AfterFunc(rotationGrace, func() { fb.sts.Revoke(old) })
		r.addSecret(fb.subject)
		rotated = fmt.Sprintf("; the subject token file rotated at a quarter and the old one revoked %s later", rotationGrace)
	}

	// The STS away mid-run: connections refused.
	r.idleUntil(began.Add(run/2 - down/2))
	st0 := fb.sts.Stats()
	if err := fb.sts.SetOutage(stsfake.Refuse); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	body := r.waitReady(503, down+30*time.Second, "oldest undelivered message", "no access token from the token endpoint "+fb.sts.URL)
	r.checkLive()
	if v := r.metric("cloudblock_spool_messages"); v <= 0 {
		t.Errorf("cloudblock_spool_messages = %v while no token can be had, want the messages held", v)
	}
	r.idleUntil(downAt.Add(down))
	held := r.metric("cloudblock_spool_messages")
	if err := fb.sts.SetOutage(stsfake.Up); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	first, _ := drainTimes(r, held, upAt, 2*time.Minute)
	r.await(done)
	tl, _ := r.waitRange(from, to, outageSize, 3*time.Minute, true)
	r.waitReady(200, time.Minute)

	st, gs := fb.sts.Stats(), fb.gate.Stats()
	for _, tok := range fb.sts.Tokens() {
		r.addSecret(tok)
	}
	// Scanned here too, while the block's logs exist (the rig's own scan
	// runs after the test's temporary directories are removed).
	r.snapshot()
	scanned := append(fb.sts.Tokens(), fb.secrets()...)
	logs := r.block.Logs()
	r.mu.Lock()
	seen := append([]string{logs}, r.snaps...)
	r.mu.Unlock()
	for _, sec := range scanned {
		for _, text := range seen {
			if strings.Contains(text, sec) {
				t.Errorf("a token, the subject token or a line of the device key (%.12s...) appears in the block's log, /ready or /metrics", sec)
				break
			}
		}
	}
	// Tokens were had all along: far more than one per lifetime would be
	// too strict on a busy machine, fewer than half of that is no refresh.
	if min := int((run - down) / wifLifetime / 2); gs.Tokens < min {
		t.Errorf("%d distinct tokens were used in %s of tokens living %s, want at least %d", gs.Tokens, run, wifLifetime, min)
	}
	if st.Issued <= st0.Issued {
		t.Errorf("no token issued after the outage (%d before, %d after)", st0.Issued, st.Issued)
	}
	// A token refused as "late" (expired on its way to the gate, see
	// stsfake.LateGrace) is allowed, and shows in the note.
	for _, why := range []string{"missing", "unknown", "scope", "expired"} {
		if c := gs.Refused[why]; c > 0 {
			t.Errorf("the gate refused %d requests whose token was %s", c, why)
		}
	}
	if st.Refused > 0 {
		t.Errorf("the STS refused %d exchanges", st.Refused)
	}
	if fb.kind == stsfake.X509 && st.Subjects["x509:device-1"] != st.Issued {
		t.Errorf("tokens issued by subject: %v, want all to x509:device-1", st.Subjects)
	}

	// check says who the block is.
	identity := "identity: workload identity federation: X.509 certificate "
	if fb.kind == stsfake.File {
		identity = "identity: workload identity federation: subject token file " + fb.token
	}
	out := r.check()
	for _, sec := range scanned {
		if strings.Contains(out, sec) {
			t.Errorf("check printed a token, the subject token or a line of the device key (%.12s...)", sec)
		}
	}
	if !strings.Contains(out, identity) || !strings.Contains(out, "exchanged at "+fb.sts.URL) {
		t.Errorf("check does not name the identity (%q):\n%s", identity, out)
	}
	said := body
	if i := strings.Index(body, "no access token"); i >= 0 {
		said = body[i:]
	}
	note := fmt.Sprintf("%d msg/s for %s, tokens of %s: %d issued, %d distinct used in %d requests, least life left %s, refused %v; none of the %d tokens in %d KiB of logs; STS refused connections for %s mid-run, %v messages held; first delivery %s after it returned%s; /ready said ...%.300s",
		rate, run, wifLifetime, st.Issued, gs.Tokens, gs.Accepted, gs.MinLeft.Round(time.Millisecond), gs.Refused, len(scanned), len(logs)>>10, down, held,
		first.Round(100*time.Millisecond), rotated, strings.TrimSpace(said))
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "identity:") {
			t.Logf("%s check: %s", tg.name, l)
		}
	}
	t.Logf("%s identity-gcp: %s; %s", tg.name, tl, note)
	r.report("identity-gcp", tl, 0, note)
}

// check runs the binary's check subcommand with the block's environment
// and returns what it printed (and fails the test if it did not pass).
func (r *rig) check() string {
	r.t.Helper()
	cmd := exec.Command(r.block.Bin, "check")
	for k, v := range r.block.Env {
		if k != "HTTP_LISTEN" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Env = append(cmd.Env, "HTTP_LISTEN=off")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		r.t.Errorf("check: %v\n%s", err, out.String())
	}
	return out.String()
}
