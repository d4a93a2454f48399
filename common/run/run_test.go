package run

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run/runtest"
	"github.com/cloud-block/cloud-block/common/sink"
)

// testService has one required and one secret variable of its own.
var testService = Service{
	Name: "test",
	Vars: []config.Var{
		{Name: "TEST_ENDPOINT", Required: true, Doc: "Where to send."},
		{Name: "TEST_TOKEN", Secret: true, Doc: "Access token."},
	},
	New: func(l *config.Loader, info Info) (sink.Sink, error) {
		l.URL("TEST_ENDPOINT", "https")
		if tok := l.String("TEST_TOKEN"); tok != "" && !strings.HasPrefix(tok, "tok-") {
			l.Fail("TEST_TOKEN", tok, "a token starting with tok-")
		}
		return nil, nil
	},
}

func run(t *testing.T, env map[string]string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	lookup := func(n string) (string, bool) { v, ok := env[n]; return v, ok }
	code := Run(context.Background(), testService, nil, lookup, &out, &errOut)
	return code, out.String(), errOut.String()
}

// A bad value for every variable (runtest's for the common ones, the test
// service's own here); a new variable without an entry fails the test.
func badValues() map[string]string {
	bad := runtest.BadCommon()
	bad["TEST_ENDPOINT"] = "http://plain"
	bad["TEST_TOKEN"] = "very-secret-token"
	return bad
}

func TestEveryBadValueNamedAndSecretsHidden(t *testing.T) {
	bad := badValues()
	secrets := append([]string{"very-secret-token"}, runtest.BadSecrets...)
	for _, v := range testService.AllVars() {
		if _, ok := bad[v.Name]; !ok {
			t.Errorf("no bad value for %s in this test: add one", v.Name)
		}
	}
	// Each alone: exit 2, the message names it, no secret printed.
	for name, value := range bad {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"TEST_ENDPOINT": "https://ok", "BUFFER_DIR": t.TempDir(), name: value}
			if name == "LOCAL_MQTT_PASSWORD" {
				delete(env, "LOCAL_MQTT_USERNAME")
			}
			code, out, errOut := run(t, env)
			if code != ExitConfig {
				t.Fatalf("exit %d, want %d; stderr: %s", code, ExitConfig, errOut)
			}
			if !strings.Contains(errOut, name) {
				t.Errorf("stderr does not name %s:\n%s", name, errOut)
			}
			for _, s := range secrets {
				if strings.Contains(errOut+out, s) {
					t.Errorf("secret %q printed:\n%s\n%s", s, errOut, out)
				}
			}
		})
	}
	// All at once: every problem is reported in one go.
	env := bad
	code, _, errOut := run(t, env)
	if code != ExitConfig {
		t.Fatalf("exit %d", code)
	}
	for name := range bad {
		if name == "LOCAL_MQTT_PASSWORD" || name == "LOCAL_MQTT_CERT" {
			continue // reported as a pair with USERNAME/KEY when all are bad
		}
		if !strings.Contains(errOut, name) {
			t.Errorf("joint report misses %s", name)
		}
	}
}

func TestErrorTexts(t *testing.T) {
	cases := map[string]struct {
		env  map[string]string
		want string
	}{
		"missing": {map[string]string{}, "TEST_ENDPOINT is not set: required: Where to send."},
		"enum": {map[string]string{"BUFFER_FULL_POLICY": "panic"},
			`BUFFER_FULL_POLICY="panic" is invalid: want one of block, drop_oldest`},
		"size": {map[string]string{"BUFFER_MAX_BYTES": "100"},
			`BUFFER_MAX_BYTES="100" is invalid: want a size such as 262144, 256KiB or 64MiB, from 1MiB to 1024GiB`},
		"alias": {map[string]string{"MQTT_INPUT_TOPIC": "a/+b"},
			`MQTT_INPUT_TOPIC="a/+b" is invalid: want comma-separated MQTT topic filters, '+' and '#' as whole levels ("a/+b": '+' must be a whole level)`},
		"relation": {map[string]string{"RETRY_INITIAL_BACKOFF": "2m", "RETRY_MAX_BACKOFF": "1m"},
			`RETRY_MAX_BACKOFF="1m" is invalid: want a duration such as 500ms, 30s or 5m, from 2m0s to 24h0m0s`},
		"secret": {map[string]string{"TEST_TOKEN": "abc"},
			`TEST_TOKEN=(secret value not shown) is invalid: want a token starting with tok-`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"TEST_ENDPOINT": "https://ok", "BUFFER_DIR": t.TempDir()}
			if name == "missing" {
				delete(env, "TEST_ENDPOINT")
			}
			for k, v := range c.env {
				env[k] = v
			}
			code, _, errOut := run(t, env)
			if code != ExitConfig || !strings.Contains(errOut, "  - "+c.want+"\n") {
				t.Errorf("exit %d, stderr:\n%s\nwant line: %s", code, errOut, c.want)
			}
		})
	}
}

func TestSubcommands(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Run(context.Background(), testService, []string{"env"}, config.Env, &out, &errOut); code != 0 || !strings.Contains(out.String(), "`TEST_ENDPOINT`") {
		t.Errorf("env: %d %s", code, out.String())
	}
	if code := Run(context.Background(), testService, []string{"bogus"}, config.Env, &out, &errOut); code != ExitConfig {
		t.Errorf("unknown command exit %d", code)
	}
	lookup := func(n string) (string, bool) {
		if n == "HTTP_LISTEN" {
			return "127.0.0.1:1", true
		}
		return "", false
	}
	if code := Run(context.Background(), testService, []string{"healthcheck"}, lookup, &out, &errOut); code != ExitFatal {
		t.Errorf("healthcheck against nothing: exit %d", code)
	}
}
