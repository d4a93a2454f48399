package checktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// mqttUser is the user the broker knows; anonymous clients stay allowed.
const mqttUser = "block"

// dest is one destination's emulator, as a check sees it.
type dest struct {
	env     map[string]string // a valid configuration of the destination
	secrets []string          // values no output may show
	// wrong is env with a wrong secret, for an emulator that checks it
	// (nil: it takes any credential).
	wrong map[string]string
	// bad is a variable with a value start-up refuses, and what it says.
	bad        [2]string
	badMessage string
	// objects lists what an object store holds (nil: not one), to see
	// that check --write left nothing behind.
	objects     func(t *testing.T) []string
	stop, start func()
}

// target is a service and how to start its destination.
type target struct {
	name string
	open func(t *testing.T) *dest
}

var targets = []target{
	{"aws-sqs", openSQS},
	{"aws-s3", openS3},
	{"azure-eh", openEH},
	{"azure-blob", openBlob},
	{"gcp-pubsub", openPubSub},
	{"gcp-storage", openGCS},
}

// TestCheck runs each binary's check against Mosquitto and its emulator,
// the six at once (each has a broker and an emulator of its own; most of a
// check is waiting on connections).
func TestCheck(t *testing.T) {
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			checkTarget(t, tg)
		})
	}
}

// rig is a binary, a broker that checks the block's password, and a
// destination.
type rig struct {
	t      *testing.T
	name   string
	bin    string
	broker *harness.Mosquitto
	env    map[string]string
	d      *dest
	// secrets no output may show: the destination's, the broker password,
	// and the wrong values tried.
	secrets []string
}

func newRig(t *testing.T, tg target) *rig {
	r := &rig{t: t, name: tg.name, bin: harness.Build(t, "services/"+tg.name)}
	pass := "mqttPW-" + randHex(8)
	r.broker = harness.StartMosquitto(t, harness.MosquittoOptions{Extra: "password_file " + passwordFile(t, mqttUser, pass) + "\n"})
	r.d = tg.open(t)
	r.env = map[string]string{
		"LOCAL_MQTT_HOST":     r.broker.URL(),
		"LOCAL_MQTT_USERNAME": mqttUser,
		"LOCAL_MQTT_PASSWORD": pass,
		"BUFFER_DIR":          t.TempDir(),
		"BALENA_DEVICE_UUID":  "check-device",
		// The AWS SDK must not ask the EC2 metadata address for credentials.
		"AWS_EC2_METADATA_DISABLED": "true",
	}
	for k, v := range r.d.env {
		r.env[k] = v
	}
	r.secrets = append([]string{pass}, r.d.secrets...)
	return r
}

// with is the rig's environment with changes ("" unsets).
func (r *rig) with(kv ...string) map[string]string {
	env := map[string]string{}
	for k, v := range r.env {
		env[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

// run runs the binary with args in exactly env (and a HOME of its own, so
// no SDK reads this machine's configuration), and returns its exit code
// and stdout+stderr. No secret may show in what it printed.
func (r *rig) run(env map[string]string, args ...string) (int, string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Env = []string{"HOME=" + r.t.TempDir()}
	for k, v := range env {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		r.t.Fatalf("%s %s: %v", r.name, strings.Join(args, " "), err)
	}
	for _, s := range r.secrets {
		if len(s) >= 6 && strings.Contains(out.String(), s) {
			r.t.Errorf("%s %s printed a secret (%.4s...):\n%s", r.name, strings.Join(args, " "), s, out.String())
		}
	}
	if len(args) == 0 || args[0] != "env" { // the table is long
		r.t.Logf("$ cloud-block-%s %s\n%s(exit %d)", r.name, strings.Join(args, " "), out.String(), code)
	}
	return code, out.String()
}

// expect runs check with env and args and wants the exit code, a result
// line naming it, and a line matching each pattern.
func (r *rig) expect(what string, env map[string]string, args []string, code int, patterns ...string) string {
	r.t.Helper()
	got, out := r.run(env, append([]string{"check"}, args...)...)
	if got != code {
		r.t.Errorf("%s: exit %d, want %d:\n%s", what, got, code, out)
	}
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^result: .*\(exit %d\)$`, code)).MatchString(out) {
		r.t.Errorf("%s: no result line for exit %d:\n%s", what, code, out)
	}
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)^` + p + `$`).MatchString(out) {
			r.t.Errorf("%s: no line matching %s:\n%s", what, p, out)
		}
	}
	return out
}

func checkTarget(t *testing.T, tg target) {
	r := newRig(t, tg)
	svc := regexp.QuoteMeta(r.name)
	mqttOK := `ok mqtt: connected to mqtt://127\.0\.0\.1:\d+ as user "block" and subscribed to cloud-input`

	t.Run("valid", func(t *testing.T) {
		r.t = t
		out := r.expect("valid", r.env, nil, 0, `ok config: valid \(device check-device, buffer .* writable\)`, mqttOK, `ok `+svc+`: .*`)
		if strings.Contains(out, "warn ") {
			t.Errorf("warnings with a full configuration:\n%s", out)
		}
	})
	t.Run("write", func(t *testing.T) {
		r.t = t
		if r.d.objects != nil {
			r.expect("--write", r.env, []string{"--write"}, 0, mqttOK, `ok `+svc+`: wrote and deleted test (object|blob) cloud-block-check/check-device-\d{8}T\d{6}\.\d{9}Z\.txt.*`)
			if left := r.d.objects(t); len(left) != 0 {
				t.Errorf("check --write left %q", left)
			}
		} else {
			// A queue, topic or hub gets no test message.
			r.expect("--write", r.env, []string{"--write"}, 0, mqttOK, `warn `+svc+`: --write (sends|publishes) no test .*`)
		}
	})
	t.Run("wrong-secret", func(t *testing.T) {
		r.t = t
		if r.d.wrong == nil {
			t.Skipf("the %s emulator takes any credential", r.name)
		}
		env := r.with()
		for k, v := range r.d.wrong {
			env[k] = v
			r.secrets = append(r.secrets, v)
		}
		r.expect("wrong secret", env, nil, 4, mqttOK, `denied `+svc+`: .*`)
	})
	t.Run("wrong-broker-password", func(t *testing.T) {
		r.t = t
		wrong := "wrongPW-" + randHex(6)
		r.secrets = append(r.secrets, wrong)
		r.expect("wrong broker password", r.with("LOCAL_MQTT_PASSWORD", wrong), nil, 4,
			`denied mqtt: mqtt://127\.0\.0\.1:\d+ refused the connection as user "block": .*`, `ok `+svc+`: .*`)
	})
	t.Run("broker-down", func(t *testing.T) {
		r.t = t
		r.broker.Stop()
		defer r.broker.Start()
		r.expect("broker down", r.env, nil, 3, `unreachable mqtt: cannot connect to mqtt://127\.0\.0\.1:\d+ as user "block": .*`, `ok `+svc+`: .*`)
	})
	t.Run("destination-down", func(t *testing.T) {
		r.t = t
		r.d.stop()
		defer r.d.start()
		r.expect("emulator stopped", r.env, nil, 3, mqttOK, `unreachable `+svc+`: .*`)
	})
	t.Run("configuration", func(t *testing.T) {
		r.t = t
		out := r.expect("bad variables", r.with(r.d.bad[0], r.d.bad[1], "BUFFER_FULL_POLICY", "panic"), nil, 2,
			`config: BUFFER_FULL_POLICY="panic" is invalid: want one of block, drop_oldest`, `config: `+regexp.QuoteMeta(r.d.badMessage))
		if strings.Contains(out, "mqtt:") {
			t.Errorf("the broker was checked with a bad configuration:\n%s", out)
		}
		// Start-up says the same, line for line.
		code, start := r.run(r.with(r.d.bad[0], r.d.bad[1], "BUFFER_FULL_POLICY", "panic"))
		if code != 2 {
			t.Errorf("start-up: exit %d", code)
		}
		for _, l := range strings.Split(start, "\n") {
			if p, ok := strings.CutPrefix(l, "  - "); ok && !strings.Contains(out, "config: "+p+"\n") {
				t.Errorf("start-up says %q, check does not:\n%s", p, out)
			}
		}
	})
	t.Run("other-commands", func(t *testing.T) { r.t = t; otherCommands(r) })
}

// otherCommands covers the rest of help's list on the real binary.
func otherCommands(r *rig) {
	t := r.t
	code, out := r.run(nil, "help")
	if code != 0 {
		t.Errorf("help: exit %d", code)
	}
	for _, want := range []string{"\n  check [--write] ", "\n  healthcheck ", "\n  env ", "\n  version ", "\n  help ",
		"\n  0  ok", "\n  1  ", "\n  2  configuration error", "\n  3  check: ", "\n  4  check: "} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
	if code, out := r.run(nil, "version"); code != 0 || !regexp.MustCompile(`^cloud-block-`+regexp.QuoteMeta(r.name)+` \S+\n$`).MatchString(out) {
		t.Errorf("version: exit %d, %q", code, out)
	}
	if code, out := r.run(nil, "env"); code != 0 || !strings.Contains(out, "| `LOCAL_MQTT_HOST` |") || !strings.Contains(out, "| `"+r.d.bad[0]+"`") {
		t.Errorf("env: exit %d:\n%s", code, out)
	}
	if code, out := r.run(nil, "bogus"); code != 2 || !strings.Contains(out, "commands: check, deadletter, spool, healthcheck, env, version, help") {
		t.Errorf("unknown command: exit %d, %q", code, out)
	}
	// healthcheck: nothing listening, then a running block.
	listen := procs.Addr(procs.FreePort(t))
	if code, out := r.run(map[string]string{"HTTP_LISTEN": listen}, "healthcheck"); code != 1 || !strings.Contains(out, "not live") {
		t.Errorf("healthcheck without a block: exit %d, %q", code, out)
	}
	b := harness.NewBlock(t, r.bin, r.broker, r.env)
	b.Start()
	if code, out := r.run(map[string]string{"HTTP_LISTEN": b.HTTP}, "healthcheck"); code != 0 || out != "ok\n" {
		t.Errorf("healthcheck of a running block: exit %d, %q", code, out)
	}
	// A check beside the running block leaves its connection alone (the
	// broker closes the older connection of a client id as it accepts the
	// newer, before the check hears its CONNACK; the unit tests prove the
	// id differs).
	r.expect("beside the block", r.env, nil, 0)
	if c, n := b.Metric("cloudblock_mqtt_connected"), b.Metric("cloudblock_mqtt_reconnects_total"); c != 1 || n != 0 {
		t.Errorf("after a check beside it, the block is connected %v, has reconnected %v times", c, n)
	}
	b.Stop()
}

// passwordFile writes a Mosquitto password file with one user.
func passwordFile(t *testing.T, user, pass string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", path, user, pass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (Debian's mosquitto package): %v: %s", err, out)
	}
	return path
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// randKey is a made-up base64 key of an Azure account's length.
func randKey() string {
	b := make([]byte, 64)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// serviceAccountKey is a made-up Google service account key: the emulators
// take no credentials, but the block holds them and must not print them.
func serviceAccountKey(t *testing.T) (email, oneLine string, secrets []string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	text := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	lines := strings.Split(strings.TrimSpace(text), "\n")
	return "check@test-project.iam.gserviceaccount.com", strings.ReplaceAll(text, "\n", `\n`), lines[1 : len(lines)-1]
}
