package blocktest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/connectproxy"
	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// Networks a device may sit behind (README "Networks"): an HTTPS proxy,
// a firewall that lets only port 443 out, and MQTT over WebSockets to the
// local broker.
func init() {
	targets = append(targets, &target{
		// Event Hubs with AZURE_EH_TRANSPORT=websockets: AMQP over WebSockets
		// (on the fake's one port, which serves both).
		name: "azure-eh-ws", pkg: "services/azure-eh", open: openEH, batch: 200, limit: ehLimit,
		env:  map[string]string{"AZURE_EH_TRANSPORT": "websockets"},
		only: []string{"bytes", "crash", "outage", "network"},
	})
	scenarios = append(scenarios,
		scenario{name: "proxy", kind: "network", run: throughProxy},
		scenario{name: "amqp-blocked", kind: "network", run: amqpBlocked},
		scenario{name: "mqtt-websockets", kind: "network", run: mqttWebSockets, fileOnly: true},
	)
	// About 40 s for all targets at once: make test runs them.
	Small.Scenarios = append(Small.Scenarios, "network")
}

// proxyHost names a destination's endpoint under the proxy's domain.
var proxyHost = map[string]string{
	"aws-sqs": "sqs", "aws-s3": "s3", "azure-eh": "eh", "azure-blob": "blob", "gcp-pubsub": "pubsub", "gcp-storage": "gcs",
}

// throughProxy: the block reaches its destination only through an HTTPS
// proxy that wants a password (HTTPS_PROXY=http://user:pass@host:port).
// The destination's endpoint is a name only the proxy resolves
// (<service>.proxytest), so a client that goes around the proxy cannot
// reach it at all; and the proxy inspects TLS with a CA the block trusts
// through SSL_CERT_FILE, so endpoints are https:// (wss:// for Event Hubs,
// which therefore takes WebSockets on its own under auto) as in the cloud.
// Pub/Sub's emulator is plain gRPC, tunnelled all the same.
//
// It checks that everything is delivered, that every tunnel went to the
// destination's name (nothing refused: no call to anywhere else, such as a
// token endpoint), and that the password is in no log, /metrics or
// /ready. Then `check` runs twice: with the lower-case https_proxy it
// passes through the proxy; with NO_PROXY naming the domain it goes
// around the proxy, cannot resolve the name and says unreachable.
func throughProxy(t *testing.T, tg *target, sc Scale) {
	short := proxyHost[strings.TrimPrefix(tg.pkg, "services/")]
	if short == "" {
		t.Skip("the test destination has no network")
	}
	pass := "proxyPW-" + randHex(8)
	p, err := connectproxy.New(connectproxy.Options{User: "device", Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	r := newRig(t, tg, rigOpts{})
	r.addSecret(pass)
	_, port, _ := net.SplitHostPort(r.proxy.Addr())
	host := short + ".proxytest:" + port
	env := r.be.env(host)
	if a := env["AZURE_BLOB_STORAGE_ACCOUNT"]; a != "" {
		// The account in the host name, as in Azure (<account>.blob.core.
		// windows.net): Azurite takes it from there for any host that is not
		// an IP address or localhost.
		host = a + "." + host
		env = r.be.env(host)
		env["AZURE_BLOB_ENDPOINT"] = "https://" + host + "/"
	}
	for k, v := range env {
		v = strings.ReplaceAll(v, "http://"+host, "https://"+host)
		if k == "STORAGE_EMULATOR_HOST" {
			v = "https://" + host
		}
		// Event Hubs as in Azure: TLS (amqps, wss), not the emulator's plain AMQP.
		v = strings.ReplaceAll(v, ";UseDevelopmentEmulator=true", "")
		r.block.Env[k] = v
	}
	ca := harness.WriteFile(t, t.TempDir(), "proxy-ca.pem", p.CAPEM())
	r.block.Env["SSL_CERT_FILE"] = ca
	// The AWS SDK reads its own bundle instead, when set (as on machines
	// whose environment names the system's bundle).
	r.block.Env["AWS_CA_BUNDLE"] = ca
	r.block.Env["HTTPS_PROXY"] = p.URL()
	// Hosts that are not the destination: the proxy must still be used.
	r.block.Env["NO_PROXY"] = "localhost,mqtt,.internal.example"
	r.start()

	n := 300
	pub := harness.NewPublisher(t, r.broker, "cloud-input", 100)
	pub.Publish(0, n, 0)
	tl, _ := r.waitAll(n, 100, 3*time.Minute, true)
	r.snapshot()
	tunnels := p.Tunnels()
	opened, firsts := proxyReport(t, tunnels, host)
	if opened == 0 {
		t.Errorf("no tunnel to %s: the block did not use the proxy", host)
	}

	// check, with the lower-case variable, through the proxy.
	env = copyEnv(r.block.Env)
	delete(env, "HTTPS_PROXY")
	env["https_proxy"] = p.URL()
	env["BUFFER_DIR"] = t.TempDir()
	out, code := runCheck(t, r.block.Bin, env)
	checkTunnels := p.Tunnels()[len(tunnels):]
	if code != 0 {
		t.Errorf("check through the proxy (https_proxy) exited %d:\n%s", code, out)
	}
	if n, _ := proxyReport(t, checkTunnels, host); n == 0 {
		t.Errorf("check made no tunnel to %s:\n%s", host, out)
	}
	// check with NO_PROXY naming the domain: around the proxy, unreachable.
	env["NO_PROXY"] = ".proxytest"
	before := len(p.Tunnels())
	out2, code2 := runCheck(t, r.block.Bin, env)
	if code2 != 3 {
		t.Errorf("check with NO_PROXY=.proxytest exited %d, want 3 (unreachable: the name resolves only in the proxy):\n%s", code2, out2)
	}
	if extra := p.Tunnels()[before:]; len(extra) > 0 {
		t.Errorf("check with NO_PROXY=.proxytest still used the proxy: %+v", extra)
	}
	for _, o := range []string{out, out2} {
		if strings.Contains(o, pass) {
			t.Error("the proxy password appears in check's output")
		}
	}
	note := fmt.Sprintf("via an HTTPS proxy with a password: %d tunnels to %s (%s); check through https_proxy: exit %d, with NO_PROXY=.proxytest: exit %d",
		opened, strings.Split(host, ":")[0], strings.Join(firsts, "; "), code, code2)
	t.Logf("%s: %s", tg.name, note)
	r.report("proxy", tl, 0, note)
}

// proxyReport fails the test for any tunnel refused or to another host, and
// returns how many went to host and the distinct first lines seen in them.
func proxyReport(t *testing.T, tunnels []connectproxy.Tunnel, host string) (int, []string) {
	t.Helper()
	n := 0
	seen := map[string]bool{}
	for _, tn := range tunnels {
		switch {
		case tn.Refused != "":
			t.Errorf("the proxy refused a tunnel to %s: %s", tn.Target, tn.Refused)
		case tn.Target != host:
			t.Errorf("a tunnel to %s, not the destination %s", tn.Target, host)
		default:
			n++
			first := tn.First
			if first == "" {
				continue // a connection opened and left unused
			}
			if tn.TLS {
				first = "TLS, then " + first
			}
			f, _, _ := strings.Cut(first, " HTTP/")
			if f, _, _ = strings.Cut(f, "?"); f != "" {
				seen[f] = true
			}
		}
	}
	var firsts []string
	for f := range seen {
		firsts = append(firsts, f)
	}
	sort.Strings(firsts)
	if len(firsts) > 4 {
		firsts = append(firsts[:4], "...")
	}
	return n, firsts
}

func copyEnv(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// runCheck runs `<bin> check` with exactly env, and returns its output and
// exit code.
func runCheck(t *testing.T, bin string, env map[string]string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "check")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	return string(out), 0
}

// amqpBlocked: Event Hubs behind a firewall that lets WebSockets through
// and blocks AMQP (ehfake.Firewall: the fake serves both on one port, as
// the SDK derives both addresses from one emulator endpoint), once
// refusing AMQP and once dropping it. With the default AZURE_EH_TRANSPORT
// (auto) the block falls back to WebSockets and delivers everything; the
// time from start to the first delivery is the fallback's cost.
func amqpBlocked(t *testing.T, tg *target, sc Scale) {
	if tg.name != "azure-eh" {
		t.Skip("AMQP's fallback to WebSockets is Event Hubs' (and its default transport)")
	}
	for _, mode := range []struct {
		name string
		drop bool
	}{{"refused", false}, {"dropped", true}} {
		t.Run(mode.name, func(t *testing.T) {
			r := newRig(t, tg, rigOpts{})
			fw := ehfake.NewFirewall(t, r.proxy.Addr(), mode.drop)
			for k, v := range r.be.env(fw.Addr()) {
				r.block.Env[k] = v
			}
			start := time.Now()
			r.start()
			n := 500
			pub := harness.NewPublisher(t, r.broker, "cloud-input", 100)
			pub.Publish(0, n, 0)
			var first time.Duration
			if err := waitCond(2*time.Minute, func() bool { return len(r.be.read(t)) > 0 }); err != nil {
				t.Fatalf("nothing delivered: %v", err)
			}
			first = time.Since(start)
			tl, _ := r.waitAll(n, 100, 3*time.Minute, true)
			if fw.Blocked() == 0 || fw.Passed() == 0 {
				t.Errorf("firewall: %d AMQP connections blocked, %d let through; want both", fw.Blocked(), fw.Passed())
			}
			if !r.logContains(`"transport":"websockets"`, 10*time.Second) {
				t.Error(`the block never logged "transport":"websockets"`)
			}
			note := fmt.Sprintf("AMQP %s by a firewall, transport auto: %d AMQP connections blocked, WebSockets let through; first delivery %s after start",
				mode.name, fw.Blocked(), first.Round(100*time.Millisecond))
			t.Logf("%s: %s", tg.name, note)
			r.report("amqp-blocked-"+mode.name, tl, 0, note)
		})
	}
}

// mqttWebSockets: the block subscribes over MQTT over WebSockets to
// Mosquitto's websockets listeners: ws:// with a password, and wss:// with
// the security scenario's TLS (a CA, a client certificate and key the
// broker requires) and a password. The publisher uses the plain listener.
// It is common/mqtt's code, the same under every destination.
func mqttWebSockets(t *testing.T, tg *target, sc Scale) {
	ca := harness.NewCA(t, "ws-ca")
	dir := t.TempDir()
	serverCert, serverKey := ca.Leaf(t, "127.0.0.1")
	clientCert, clientKey := ca.Leaf(t, "cloud-block")
	keyFile := harness.WriteFile(t, dir, "client.key", clientKey)
	wsPort, wssPort := procs.FreePort(t), procs.FreePort(t)
	extra := fmt.Sprintf("listener %d 127.0.0.1\nprotocol websockets\n"+
		"listener %d 127.0.0.1\nprotocol websockets\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\n",
		wsPort, wssPort, harness.WriteFile(t, dir, "ca.pem", ca.PEM), harness.WriteFile(t, dir, "server.pem", serverCert),
		harness.WriteFile(t, dir, "server.key", serverKey))
	for _, c := range []struct {
		name string
		env  map[string]string
	}{
		{"ws", map[string]string{"LOCAL_MQTT_HOST": fmt.Sprintf("ws://127.0.0.1:%d", wsPort)}},
		{"wss", map[string]string{
			"LOCAL_MQTT_HOST": fmt.Sprintf("wss://127.0.0.1:%d/mqtt", wssPort),
			"LOCAL_MQTT_CA":   strings.ReplaceAll(string(ca.PEM), "\n", `\n`),
			"LOCAL_MQTT_CERT": harness.WriteFile(t, dir, "client.pem", clientCert),
			"LOCAL_MQTT_KEY":  keyFile,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Extra: extra, Persistence: true}, env: c.env})
			r.start()
			n := 1000
			pub := harness.NewPublisher(t, r.broker, "cloud-input", 100)
			pub.Publish(0, n, 0)
			tl, _ := r.waitAll(n, 100, 2*time.Minute, true)
			// A broker restart: the block reconnects over WebSockets and
			// what was published meanwhile arrives too.
			r.broker.Stop()
			r.broker.Start()
			if err := waitCond(time.Minute, func() bool { return r.metric("cloudblock_mqtt_connected") == 1 }); err != nil {
				t.Fatalf("no reconnect over %s: %v", c.name, err)
			}
			pub2 := harness.NewPublisher(t, r.broker, "cloud-input", 100)
			pub2.Publish(n, 2*n, 0)
			tl2, _ := r.waitRange(n, 2*n, 100, 2*time.Minute, true)
			tl.Published += tl2.Published
			tl.Distinct += tl2.Distinct
			tl.Copies += tl2.Copies
			tl.Lost += tl2.Lost
			note := fmt.Sprintf("MQTT over WebSockets (%s) to Mosquitto's websockets listener, a broker restart in between", c.env["LOCAL_MQTT_HOST"][:strings.Index(c.env["LOCAL_MQTT_HOST"], ":")])
			r.report("mqtt-websockets-"+c.name, tl, 0, note)
		})
	}
}
