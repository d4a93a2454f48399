package config_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// errLoaded ends the fuzzed service's start-up once its configuration
// loaded: run.Run reports it like a configuration error, so nothing ever
// connects, listens or writes a spool.
var errLoaded = errors.New("fuzz: configuration loaded")

// fuzzService has a secret and a URL of its own beside the common variables.
var fuzzService = run.Service{
	Name: "fuzz",
	Vars: []config.Var{
		{Name: "FUZZ_ENDPOINT", Doc: "A URL."},
		{Name: "FUZZ_TOKEN", Secret: true, Doc: "A secret."},
	},
	New: func(l *config.Loader, _ run.Info) (sink.Sink, error) {
		l.URL("FUZZ_ENDPOINT", "https")
		l.String("FUZZ_TOKEN")
		return nil, errLoaded
	},
}

// secretVars are the variables whose values must never be printed.
var secretVars = func() map[string]bool {
	out := map[string]bool{}
	for _, v := range fuzzService.AllVars() {
		if v.Secret {
			out[v.Name] = true
			for _, a := range v.Aliases {
				out[a] = true
			}
		}
	}
	return out
}()

// parseEnv reads entries "NAME=value" separated by \x1e (values may hold
// newlines). The Key Vault location is dropped: with it, start-up would
// call Azure.
func parseEnv(s, bufDir string) map[string]string {
	env := map[string]string{}
	for _, e := range strings.Split(s, "\x1e") {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "AZURE_VAULT_NAME" || k == "AZURE_VAULT_URL" {
			continue
		}
		// Certificate variables take file paths: a device such as
		// /dev/zero would be read forever.
		for _, special := range []string{"/dev", "/proc", "/sys"} {
			if strings.HasPrefix(strings.TrimSpace(v), special) {
				v = "/nonexistent" + v
			}
		}
		env[k] = v
	}
	// A random BUFFER_DIR would make the start-up check create directories
	// anywhere on this machine.
	env["BUFFER_DIR"] = bufDir
	return env
}

func runWith(env map[string]string) (int, string) {
	var out, errOut bytes.Buffer
	lookup := func(n string) (string, bool) { v, ok := env[n]; return v, ok && v != "" }
	code := run.Run(context.Background(), fuzzService, nil, lookup, &out, &errOut)
	return code, errOut.String() + out.String()
}

// FuzzConfig: sizes, durations and the whole common load path with random
// values never panic; a value either loads or is refused with exit code 2
// and lines that each name a declared variable; secrets are never printed.
func FuzzConfig(f *testing.F) {
	f.Add("64MiB", "1m30s", "BUFFER_MAX_BYTES=2MiB\x1eBATCH_MAX_WAIT=1s\x1eLOCAL_MQTT_HOST=mqtt://broker:1883")
	f.Add("1GiB", "500ms", "LOCAL_MQTT_PASSWORD=hunter2-secret-password\x1eLOCAL_MQTT_USERNAME=u")
	f.Add("12 parsecs", "forever", "LOCAL_MQTT_PASSWORD=hunter2-secret-password")
	f.Add("9223372036854775807KiB", "-5ms", "BUFFER_FULL_POLICY=panic\x1eRETRY_MAX_BACKOFF=1ms\x1eRETRY_INITIAL_BACKOFF=1s")
	f.Add("", "", "LOCAL_MQTT_HOST=mqtts://h:1\x1eLOCAL_MQTT_KEY=-----BEGIN PRIVATE KEY-----\\nc2VjcmV0\\n-----END PRIVATE KEY-----")
	f.Add(" 10 kb ", "1h0m0.5s", "LOCAL_MQTT_INPUT_TOPIC=a/+/b,#\x1eMQTT_INPUT_TOPIC=x\x1eHTTP_LISTEN=off")
	f.Add("0B", "0s", "FUZZ_TOKEN=very-secret-token\x1eFUZZ_ENDPOINT=http://plain\x1eAZURE_VAULT_CLIENT_SECRET=vault-secret-value")
	f.Add("1M", "1µs", "BALENA_DEVICE_UUID=dev/../ice\x1eLOCAL_MQTT_CLIENT_ID=\x01\x1eLOG_LEVEL=DEBUG")
	bufDir := f.TempDir()
	declared := map[string]bool{}
	for _, v := range fuzzService.AllVars() {
		declared[v.Name] = true
		for _, a := range v.Aliases {
			declared[a] = true
		}
	}
	f.Fuzz(func(t *testing.T, size, dur, envText string) {
		// Sizes: never negative, and printing one gives it back.
		if n, err := config.ParseBytes(size); err == nil {
			if n < 0 {
				t.Fatalf("ParseBytes(%q) = %d", size, n)
			}
			if m, err := config.ParseBytes(config.FormatBytes(n)); err != nil || m != n {
				t.Fatalf("ParseBytes(FormatBytes(%d)) = %d, %v", n, m, err)
			}
		}

		// The typed readers: a value in range, or an error naming the variable.
		vars := []config.Var{{Name: "D", Default: "1s"}, {Name: "B", Default: "1MiB"}, {Name: "I", Default: "5"}, {Name: "E", Default: "a"}, {Name: "U"}, {Name: "T"}}
		for _, raw := range []string{dur, size} {
			l := config.NewLoader(func(n string) (string, bool) { return raw, raw != "" }, vars)
			d := l.Duration("D", time.Millisecond, time.Hour)
			b := l.Bytes("B", 1<<10, 1<<30)
			i := l.Int("I", 1, 100)
			l.Enum("E", "a", "b")
			l.URL("U", "https")
			l.Bool("T")
			if raw != "" && (d < time.Millisecond || d > time.Hour || b < 1<<10 || b > 1<<30 || i < 1 || i > 100) {
				t.Fatalf("value %q read as %s, %d, %d: out of range", raw, d, b, i)
			}
			if err := l.Err(); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					if name, _, _ := strings.Cut(line, "="); !declaredName(name, vars) {
						t.Fatalf("error line names no variable: %q", line)
					}
				}
			}
		}

		// The whole common load path.
		env := parseEnv(envText, bufDir)
		code, out := runWith(env)
		if code != run.ExitConfig {
			t.Fatalf("exit %d, want %d (loaded or refused): %s", code, run.ExitConfig, out)
		}
		if !strings.Contains(out, errLoaded.Error()) {
			for _, line := range strings.Split(out, "\n") {
				rest, ok := strings.CutPrefix(line, "  - ")
				if !ok {
					continue
				}
				end := strings.IndexAny(rest, "= ")
				if end < 0 || !declared[rest[:end]] {
					t.Fatalf("a configuration error names no variable: %q", line)
				}
			}
		}
		// Secrets: their values are printed no more often than when they
		// are not set at all (the same text may occur in other values or in
		// the messages themselves).
		for k, v := range env {
			if !secretVars[k] || len(v) < 6 {
				continue
			}
			without := map[string]string{}
			for k2, v2 := range env {
				without[k2] = v2
			}
			without[k] = strings.Repeat("#", len(v)) // set, so the same checks run
			_, out2 := runWith(without)
			if strings.Count(out, v) > strings.Count(out2, v) {
				t.Fatalf("the value of secret %s was printed:\n%s", k, out)
			}
		}
	})
}

func declaredName(name string, vars []config.Var) bool {
	name = strings.TrimSuffix(strings.Fields(name + " x")[0], ":")
	for _, v := range vars {
		if v.Name == name {
			return true
		}
	}
	return false
}
