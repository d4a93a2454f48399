package run_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
)

// probeService's sink does what PROBE_MODE says; its errors carry the
// secret PROBE_TOKEN, as an SDK's message might, to prove check masks it.
var probeService = run.Service{
	Name: "probe",
	Vars: []config.Var{
		{Name: "PROBE_MODE", Default: "ok", Doc: "What the fake destination does."},
		{Name: "PROBE_TOKEN", Secret: true, Doc: "Its credential."},
	},
	New: func(l *config.Loader, info run.Info) (sink.Sink, error) {
		s := &probeSink{mode: l.Enum("PROBE_MODE", "ok", "warn", "denied", "connect-denied", "down", "nocheck"), token: l.String("PROBE_TOKEN")}
		if s.mode == "nocheck" {
			return plainSink{s}, nil
		}
		return s, nil
	},
}

type probeSink struct {
	mode, token string
	connected   bool
}

func (p *probeSink) Connect(ctx context.Context) error {
	switch p.mode {
	case "down":
		return fmt.Errorf("dial tcp 127.0.0.1:1: connection refused (signed with %s)", p.token)
	case "connect-denied":
		return &sink.AuthError{Err: fmt.Errorf("403 Forbidden: the key %s may not read the bucket", p.token)}
	}
	p.connected = true
	return nil
}

func (p *probeSink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	if !p.connected {
		return nil, errors.New("Check before Connect")
	}
	fs := []sink.Finding{{Text: fmt.Sprintf("queue answered (write %v)", opt.Write)}}
	switch p.mode {
	case "warn":
		fs = append(fs, sink.Finding{Warn: true, Text: "may not read the queue's attributes"})
	case "denied":
		return fs, &sink.AuthError{Err: fmt.Errorf("InvalidClientTokenId: token\n%s is not valid", p.token)}
	}
	return fs, nil
}

func (p *probeSink) Limits() sink.Limits                                    { return sink.Limits{} }
func (p *probeSink) WriteBatch(ctx context.Context, b []sink.Message) error { return nil }
func (p *probeSink) Close(ctx context.Context) error                        { return nil }

// plainSink hides probeSink's Check: a destination without one.
type plainSink struct{ s *probeSink }

func (p plainSink) Connect(ctx context.Context) error                      { return p.s.Connect(ctx) }
func (p plainSink) Limits() sink.Limits                                    { return sink.Limits{} }
func (p plainSink) WriteBatch(ctx context.Context, b []sink.Message) error { return nil }
func (p plainSink) Close(ctx context.Context) error                        { return nil }

// fakeBroker speaks just enough MQTT 3.1.1 for check: CONNACK (refused
// when a password is wanted and not given), SUBACK (0x80 for denied
// topics), PINGRESP. It records who connected.
type fakeBroker struct {
	ln       net.Listener
	password string
	deny     map[string]bool

	mu      sync.Mutex
	clients []*packets.ConnectPacket
}

func startBroker(t *testing.T, password string, deny ...string) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{ln: ln, password: password, deny: map[string]bool{}}
	for _, d := range deny {
		b.deny[d] = true
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *fakeBroker) url() string { return "mqtt://" + b.ln.Addr().String() }

func (b *fakeBroker) serve(c net.Conn) {
	defer c.Close()
	for {
		p, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packets.ConnectPacket:
			b.mu.Lock()
			b.clients = append(b.clients, p)
			b.mu.Unlock()
			ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
			if b.password != "" && string(p.Password) != b.password {
				ack.ReturnCode = packets.ErrRefusedNotAuthorised
			}
			if ack.Write(c) != nil || ack.ReturnCode != packets.Accepted {
				return
			}
		case *packets.SubscribePacket:
			sa := packets.NewControlPacket(packets.Suback).(*packets.SubackPacket)
			sa.MessageID = p.MessageID
			for i, topic := range p.Topics {
				code := p.Qoss[i]
				if b.deny[topic] {
					code = 0x80
				}
				sa.ReturnCodes = append(sa.ReturnCodes, code)
			}
			if sa.Write(c) != nil {
				return
			}
		case *packets.PingreqPacket:
			if packets.NewControlPacket(packets.Pingresp).Write(c) != nil {
				return
			}
		case *packets.DisconnectPacket:
			return
		}
	}
}

func (b *fakeBroker) connects() []*packets.ConnectPacket {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*packets.ConnectPacket(nil), b.clients...)
}

const probeToken = "probe-token-6f1d2c9a"

func runCheck(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	all := map[string]string{"BUFFER_DIR": t.TempDir(), "BALENA_DEVICE_UUID": "dev-1", "PROBE_TOKEN": probeToken}
	for k, v := range env {
		all[k] = v
	}
	var out, errOut bytes.Buffer
	code := run.Run(context.Background(), probeService, append([]string{"check"}, args...), vaulttest.Lookup(all), &out, &errOut)
	for _, s := range []string{probeToken, "mqtt-secret-password"} {
		if strings.Contains(out.String()+errOut.String(), s) {
			t.Errorf("secret %q printed:\n%s%s", s, out.String(), errOut.String())
		}
	}
	return code, out.String(), errOut.String()
}

// wantLines checks that every output line matches one pattern, in order.
func wantLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(patterns) {
		t.Errorf("%d lines, want %d:\n%s", len(lines), len(patterns), out)
		return
	}
	for i, p := range patterns {
		if !regexp.MustCompile(`^` + p + `$`).MatchString(lines[i]) {
			t.Errorf("line %d: %q\nwant %s", i+1, lines[i], p)
		}
	}
}

func TestCheckOK(t *testing.T) {
	b := startBroker(t, "")
	code, out, _ := runCheck(t, map[string]string{"LOCAL_MQTT_HOST": b.url(), "LOCAL_MQTT_INPUT_TOPIC": "a/#,b"})
	if code != run.ExitOK {
		t.Errorf("exit %d, want 0", code)
	}
	wantLines(t, out,
		`ok config: valid \(device dev-1, buffer /.* writable\)`,
		`ok mqtt: connected to mqtt://127\.0\.0\.1:\d+ anonymously and subscribed to a/#, b`,
		`ok probe: queue answered \(write false\)`,
		`result: ok \(exit 0\)`)
	// A client id of its own (never the service's: that would close the
	// running service's connection) and a clean session.
	cs := b.connects()
	if len(cs) != 1 {
		t.Fatalf("%d connections, want 1", len(cs))
	}
	if id := cs[0].ClientIdentifier; !strings.HasPrefix(id, "cloud-block-probe-dev-1-check-") {
		t.Errorf("client id %q: want the service's with a -check- suffix", id)
	}
	if !cs[0].CleanSession {
		t.Error("check connected with a persistent session: the broker would keep it")
	}
	// Two checks do not share an id.
	runCheck(t, map[string]string{"LOCAL_MQTT_HOST": b.url()})
	if cs = b.connects(); len(cs) != 2 || cs[0].ClientIdentifier == cs[1].ClientIdentifier {
		t.Errorf("two checks: client ids %q", cs)
	}
}

func TestCheckWriteAndWarnings(t *testing.T) {
	b := startBroker(t, "")
	code, out, _ := runCheck(t, map[string]string{"LOCAL_MQTT_HOST": b.url(), "PROBE_MODE": "warn"}, "--write")
	if code != run.ExitOK {
		t.Errorf("exit %d, want 0: a warning fails nothing", code)
	}
	wantLines(t, out, `ok config: .*`, `ok mqtt: .*`,
		`ok probe: queue answered \(write true\)`,
		`warn probe: may not read the queue's attributes`,
		`result: ok, 1 warning \(exit 0\)`)
}

func TestCheckWithoutChecker(t *testing.T) {
	b := startBroker(t, "")
	code, out, _ := runCheck(t, map[string]string{"LOCAL_MQTT_HOST": b.url(), "PROBE_MODE": "nocheck"})
	if code != run.ExitOK {
		t.Errorf("exit %d", code)
	}
	wantLines(t, out, `ok config: .*`, `ok mqtt: .*`,
		`ok probe: connected \(this destination checks no more than start-up does\)`, `result: ok \(exit 0\)`)
}

func TestCheckFailures(t *testing.T) {
	up := startBroker(t, "")
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "mqtt://" + ln.Addr().String()
	ln.Close()
	locked := startBroker(t, "the-right-password")
	acl := startBroker(t, "", "secret/#")

	for _, c := range []struct {
		name  string
		env   map[string]string
		code  int
		lines []string
	}{
		{"destination unreachable", map[string]string{"LOCAL_MQTT_HOST": up.url(), "PROBE_MODE": "down"}, run.ExitUnreachable,
			[]string{`ok config: .*`, `ok mqtt: .*`,
				`unreachable probe: dial tcp 127\.0\.0\.1:1: connection refused \(signed with \(secret not shown\)\)`,
				`result: unreachable \(exit 3\)`}},
		{"destination refuses in Connect", map[string]string{"LOCAL_MQTT_HOST": up.url(), "PROBE_MODE": "connect-denied"}, run.ExitDenied,
			[]string{`ok config: .*`, `ok mqtt: .*`,
				`denied probe: authentication: 403 Forbidden: the key \(secret not shown\) may not read the bucket`,
				`result: denied \(exit 4\)`}},
		{"destination refuses in Check", map[string]string{"LOCAL_MQTT_HOST": up.url(), "PROBE_MODE": "denied"}, run.ExitDenied,
			[]string{`ok config: .*`, `ok mqtt: .*`, `ok probe: queue answered \(write false\)`,
				// The SDK's two lines on one.
				`denied probe: authentication: InvalidClientTokenId: token; \(secret not shown\) is not valid`,
				`result: denied \(exit 4\)`}},
		{"broker down", map[string]string{"LOCAL_MQTT_HOST": down}, run.ExitUnreachable,
			[]string{`ok config: .*`,
				`unreachable mqtt: cannot connect to mqtt://127\.0\.0\.1:\d+ anonymously: .*connection refused.*`,
				`ok probe: .*`, `result: unreachable \(exit 3\)`}},
		{"broker refuses the password", map[string]string{"LOCAL_MQTT_HOST": locked.url(), "LOCAL_MQTT_USERNAME": "block", "LOCAL_MQTT_PASSWORD": "mqtt-secret-password"}, run.ExitDenied,
			[]string{`ok config: .*`,
				`denied mqtt: mqtt://127\.0\.0\.1:\d+ refused the connection as user "block": not Authorized`,
				`ok probe: .*`, `result: denied \(exit 4\)`}},
		{"broker refuses the subscription", map[string]string{"LOCAL_MQTT_HOST": acl.url(), "LOCAL_MQTT_INPUT_TOPIC": "public/#,secret/#"}, run.ExitDenied,
			[]string{`ok config: .*`,
				`denied mqtt: connected to mqtt://127\.0\.0\.1:\d+ anonymously, but the broker refused the subscription to secret/# \(check its ACL\)`,
				`ok probe: .*`, `result: denied \(exit 4\)`}},
		// A denial is the more definite finding: it wins over an outage.
		{"denied and unreachable", map[string]string{"LOCAL_MQTT_HOST": down, "PROBE_MODE": "connect-denied"}, run.ExitDenied,
			[]string{`ok config: .*`, `unreachable mqtt: .*`, `denied probe: .*`, `result: denied \(exit 4\)`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, _ := runCheck(t, c.env)
			if code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			wantLines(t, out, c.lines...)
		})
	}
}

// Configuration problems are named as start-up names them, all of them,
// and nothing is contacted.
func TestCheckConfiguration(t *testing.T) {
	b := startBroker(t, "")
	code, out, _ := runCheck(t, map[string]string{"LOCAL_MQTT_HOST": b.url(), "PROBE_MODE": "sideways",
		"PROBE_TOKEN": probeToken, "BUFFER_FULL_POLICY": "panic", "LOCAL_MQTT_PASSWORD": "mqtt-secret-password"})
	if code != run.ExitConfig {
		t.Errorf("exit %d, want %d", code, run.ExitConfig)
	}
	wantLines(t, out,
		`config: LOCAL_MQTT_PASSWORD=\(secret value not shown\) is invalid: want a password only together with LOCAL_MQTT_USERNAME`,
		`config: BUFFER_FULL_POLICY="panic" is invalid: want one of block, drop_oldest`,
		`config: PROBE_MODE="sideways" is invalid: want one of ok, warn, denied, connect-denied, down, nocheck`,
		`result: configuration error \(exit 2\)`)
	if n := len(b.connects()); n != 0 {
		t.Errorf("the broker was contacted %d times with a bad configuration", n)
	}
	// Start-up's own text, line for line.
	var startOut, startErr bytes.Buffer
	env := map[string]string{"LOCAL_MQTT_HOST": b.url(), "BUFFER_DIR": t.TempDir(), "PROBE_MODE": "sideways", "BUFFER_FULL_POLICY": "panic"}
	run.Run(context.Background(), probeService, nil, vaulttest.Lookup(env), &startOut, &startErr)
	_, out, _ = runCheck(t, env)
	for _, l := range strings.Split(strings.TrimSpace(startErr.String()), "\n")[1:] {
		if want := "config: " + strings.TrimPrefix(l, "  - "); !strings.Contains(out, want+"\n") {
			t.Errorf("start-up says %q; check does not:\n%s", l, out)
		}
	}

	var o, e bytes.Buffer
	if code := run.Run(context.Background(), probeService, []string{"check", "--sideways"}, vaulttest.Lookup(nil), &o, &e); code != run.ExitConfig ||
		!strings.Contains(e.String(), `unknown argument "--sideways"`) {
		t.Errorf("unknown argument: exit %d, %q", code, e.String())
	}
}

// The vault is checked like a destination: the variables it gave, a
// refusal (denied); its secrets are masked too. (No answer is unreachable:
// the vault's retries make that case take half a minute.)
func TestCheckVault(t *testing.T) {
	b := startBroker(t, "")
	v := vaulttest.New(t)
	v.SetSecret("PROBE_TOKEN", probeToken)
	env := v.Env()
	env["LOCAL_MQTT_HOST"] = b.url()
	env["PROBE_MODE"] = "down" // its error holds the token from the vault

	code, out, _ := runCheck(t, withoutToken(env))
	if code != run.ExitUnreachable {
		t.Errorf("exit %d", code)
	}
	wantLines(t, out, `ok config: .*`, `ok vault: read from Azure Key Vault https://127\.0\.0\.1:\d+/: PROBE_TOKEN`,
		`ok mqtt: .*`, `unreachable probe: .*\(secret not shown\).*`, `result: unreachable \(exit 3\)`)
	if strings.Contains(out, v.ClientSecret) {
		t.Error("the vault's client secret printed")
	}

	v.Forbid("PROBE_TOKEN")
	code, out, _ = runCheck(t, withoutToken(env))
	if code != run.ExitDenied {
		t.Errorf("forbidden: exit %d", code)
	}
	wantLines(t, out, `denied vault: Azure Key Vault .*: forbidden: .*`, `result: denied \(exit 4\)`)
}

// withoutToken marks PROBE_TOKEN unset: runCheck sets it by default.
func withoutToken(env map[string]string) map[string]string {
	env["PROBE_TOKEN"] = ""
	return env
}

// help lists every command Run dispatches and every exit code.
func TestHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run.Run(context.Background(), probeService, []string{"help"}, vaulttest.Lookup(nil), &out, &errOut); code != run.ExitOK {
		t.Fatalf("help: exit %d", code)
	}
	for _, cmd := range []string{"check [--write]", "deadletter list", "deadletter show", "deadletter replay", "deadletter purge", "spool stats", "spool peek", "spool export", "spool import", "healthcheck", "env", "version", "help"} {
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(cmd) + ` `).MatchString(out.String()) {
			t.Errorf("help does not list %q:\n%s", cmd, out.String())
		}
		// Each is a command Run knows (an unknown one is a usage error).
		// (check with an argument it refuses: it would contact a broker.)
		name, _, _ := strings.Cut(cmd, " ")
		args := []string{name}
		if name == "check" {
			args = append(args, "--refused")
		}
		var o, e bytes.Buffer
		if code := run.Run(context.Background(), probeService, args, vaulttest.Lookup(map[string]string{"HTTP_LISTEN": "127.0.0.1:1", "BUFFER_DIR": t.TempDir()}), &o, &e); strings.Contains(e.String(), "unknown command") {
			t.Errorf("help lists %s, which Run does not know (exit %d)", name, code)
		}
	}
	for _, code := range []int{run.ExitOK, run.ExitFatal, run.ExitConfig, run.ExitUnreachable, run.ExitDenied} {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^  %d  \S`, code)).MatchString(out.String()) {
			t.Errorf("help does not explain exit code %d", code)
		}
	}
	errOut.Reset()
	run.Run(context.Background(), probeService, []string{"bogus"}, vaulttest.Lookup(nil), &out, &errOut)
	if !strings.Contains(errOut.String(), "commands: check, deadletter, spool, healthcheck, env, version, help") {
		t.Errorf("unknown command: %q", errOut.String())
	}
}
