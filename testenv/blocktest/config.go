package blocktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/run/runtest"
	"github.com/cloud-block/cloud-block/testenv/harness"
)

// commonBad are invalid values for the variables every destination reads.
var commonBad = runtest.BadCommon()

// envVar is one row of a binary's `env` table.
type envVar struct {
	name    string
	aliases []string
	secret  bool
}

var envRow = regexp.MustCompile("^\\| `([A-Z0-9_]+)`((?: \\(or `[A-Z0-9_]+`\\))*) \\|")
var aliasRE = regexp.MustCompile("`([A-Z0-9_]+)`")

// envTable runs `<bin> env` and parses the variables it declares.
func envTable(t *testing.T, bin string) []envVar {
	t.Helper()
	out, err := exec.Command(bin, "env").Output()
	if err != nil {
		t.Fatalf("%s env: %v", bin, err)
	}
	var vars []envVar
	for _, line := range strings.Split(string(out), "\n") {
		m := envRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v := envVar{name: m[1], secret: strings.Contains(line, "Secret: never logged.")}
		for _, a := range aliasRE.FindAllStringSubmatch(m[2], -1) {
			v.aliases = append(v.aliases, a[1])
		}
		vars = append(vars, v)
	}
	if len(vars) < len(commonBad) {
		t.Fatalf("%s env: only %d variables parsed:\n%s", bin, len(vars), out)
	}
	return vars
}

// runConfig runs bin with env (nothing inherited but PATH and HOME) until
// it exits, and returns its exit code and everything it printed. A run
// that does not exit within the timeout (it started!) is killed: -1.
func runConfig(bin string, env map[string]string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	// Run where a relative path in a value cannot litter the source tree.
	if dir, err := os.MkdirTemp("", "faults-config-"); err == nil {
		defer os.RemoveAll(dir)
		cmd.Dir = dir
	}
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return -1, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	case err != nil:
		return -1, err.Error()
	}
	return 0, out.String()
}

// Every variable set to something invalid, one at a time: the binary exits
// 2 before connecting to anything, with a message naming the variable (or
// the alias it was given as), and never prints a secret's value. Then all
// at once: every problem is reported in one go.
func configExit(t *testing.T, tg *target, sc Scale) {
	r := newRig(t, tg, rigOpts{})
	bin := harness.Build(t, tg.pkg)
	vars := envTable(t, bin)
	base := map[string]string{"HTTP_LISTEN": "127.0.0.1:0", "BUFFER_DIR": t.TempDir()}
	for k, v := range r.env {
		base[k] = v
	}
	delete(base, "LOCAL_MQTT_USERNAME")
	delete(base, "LOCAL_MQTT_PASSWORD")
	// The valid configuration starts (and is stopped by the timeout).
	if code, out := runConfig(bin, base); code != -1 {
		t.Fatalf("the valid configuration exited %d:\n%s", code, out)
	}
	declared := map[string]bool{}
	secrets := append([]string(nil), runtest.BadSecrets...)
	for _, v := range vars {
		declared[v.name] = true
		if v.secret {
			if b, ok := tg.badVars[v.name]; ok {
				secrets = append(secrets, b.v)
			}
			if b, ok := commonBad[v.name]; ok {
				secrets = append(secrets, b)
			}
		}
	}
	for name := range tg.badVars {
		if !declared[name] {
			t.Errorf("%s has a bad value here but the binary does not declare it", name)
		}
	}
	checked, anyValue := 0, 0
	all := map[string]string{}
	for k, v := range base {
		all[k] = v
	}
	for _, v := range vars {
		b, ok := tg.badVars[v.name]
		if c, common := commonBad[v.name]; common {
			b, ok = badValue{v: c}, true
		}
		if why, free := tg.anyValue[v.name]; free && !ok {
			anyValue++
			t.Logf("%s takes any value: %s", v.name, why)
			continue
		}
		if !ok {
			t.Errorf("no invalid value for %s in this test: add one (or say why it takes any value)", v.name)
			continue
		}
		all[v.name] = b.v
		env := map[string]string{}
		for k, val := range base {
			env[k] = val
		}
		for _, k := range b.unset {
			delete(env, k)
		}
		for k, val := range b.set {
			env[k] = val
		}
		env[v.name] = b.v
		code, out := runConfig(bin, env)
		checked++
		named := strings.Contains(out, v.name)
		for _, a := range v.aliases {
			named = named || strings.Contains(out, a)
		}
		if code != 2 || !named {
			t.Errorf("%s=%.80q: exit %d, want 2 with a message naming it; printed:\n%.600s", v.name, b.v, code, out)
		}
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s=...: a secret value was printed:\n%.600s", v.name, out)
			}
		}
	}
	// All at once. Only informative: a conflict between two settings
	// (a connection string and Entra auth) rightly hides the checks that
	// depend on which one is meant.
	code, out := runConfig(bin, all)
	var unnamed []string
	for _, v := range vars {
		if _, ok := all[v.name]; ok && !strings.Contains(out, v.name) {
			if _, free := tg.anyValue[v.name]; !free {
				unnamed = append(unnamed, v.name)
			}
		}
	}
	sort.Strings(unnamed)
	if code != 2 {
		t.Errorf("every variable invalid at once: exit %d, want 2", code)
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("every variable invalid at once: a secret value was printed")
		}
	}
	note := fmt.Sprintf("%d variables invalid one at a time; %d take any value; all at once: exit %d, not named %v", checked, anyValue, code, unnamed)
	t.Logf("%s: %s", tg.name, note)
	record(row{Scenario: "config-exit-2", Target: tg.name, Note: note})
}
