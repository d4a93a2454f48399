package vaulttest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/vault"
)

// RunAllFromVault proves that every variable of svc can come from Azure Key
// Vault, with an environment holding only the vault's own variables:
//
//   - required, a valid configuration of svc (BUFFER_DIR defaults to a
//     temporary directory), is put in the vault: the configuration loads,
//     the service read each of those variables and got the vault's value,
//     and the start-up log names them.
//   - every other variable of the service's own is then added to the vault
//     alone, with its default or else a placeholder (the common variables,
//     all at once): the outcome (success, or the exact configuration
//     errors) is the same as with the same values in the environment, and
//     where the service read a variable it got the vault's value. Variables
//     this configuration never reads are logged.
//   - no secret value (of a variable declared Secret, or the vault's own
//     client secret) appears in any log line or error.
func RunAllFromVault(t *testing.T, svc run.Service, required map[string]string) {
	t.Helper()
	v := New(t)
	vaultOwn := map[string]bool{}
	for _, d := range vault.Vars {
		vaultOwn[d.Name] = true
	}
	decls := map[string]config.Var{}
	for _, d := range svc.AllVars() {
		decls[d.Name] = d
	}
	base := map[string]string{"BUFFER_DIR": t.TempDir()}
	maps.Copy(base, required)
	for name, value := range base {
		if _, ok := decls[name]; !ok || vaultOwn[name] {
			t.Fatalf("RunAllFromVault: %s is not a variable %s may take from the vault", name, svc.Name)
		}
		v.SetSecret(name, value)
	}
	// secret value -> whose
	secrets := map[string]string{v.ClientSecret: vault.VarSecret}
	addSecret := func(name, value string) {
		if decls[name].Secret {
			secrets[value] = name
			secrets[strings.ReplaceAll(value, `\n`, "\n")] = name
		}
	}
	for name, value := range base {
		addSecret(name, value)
	}
	venv := Lookup(v.Env())
	var logs bytes.Buffer
	var errs []string

	// 1. The whole configuration from the vault.
	read, err := run.LoadForTest(t.Context(), svc, venv, &logs)
	if err != nil {
		t.Fatalf("%s with every variable in the vault does not load:\n%v", svc.Name, err)
	}
	for _, name := range slices.Sorted(maps.Keys(base)) {
		got, ok := read[name]
		switch {
		case !ok:
			t.Errorf("%s is in the vault but %s never read it", name, svc.Name)
		case got != base[name]:
			t.Errorf("%s: %s got another value than the vault's", name, svc.Name)
		}
	}
	fromVault := loggedFromVault(t, logs.Bytes())
	for name := range base {
		if !slices.Contains(fromVault, name) {
			t.Errorf("the start-up log does not name %s among the variables read from the vault (it names %v)", name, fromVault)
		}
	}

	// 2. The service's other variables, each alone on top of that
	// configuration; then the common ones (the same for every service, and
	// each probed alone by common/run's own test) all at once.
	own := map[string]bool{}
	for _, d := range svc.Vars {
		own[d.Name] = true
	}
	var single []map[string]string
	common := map[string]string{}
	for _, d := range svc.AllVars() {
		if vaultOwn[d.Name] || base[d.Name] != "" {
			continue
		}
		probe := d.Default
		if probe == "" {
			probe = "from-vault-" + randomHex(4)
		}
		addSecret(d.Name, probe)
		if own[d.Name] {
			single = append(single, map[string]string{d.Name: probe})
		} else {
			common[d.Name] = probe
		}
	}
	if len(common) > 0 {
		single = append(single, common)
	}
	read = map[string]string{}
	for _, probes := range single {
		for name, value := range probes {
			v.SetSecret(name, value)
		}
		got, vaultErr := run.LoadForTest(t.Context(), svc, venv, &logs)
		for name := range probes {
			v.DeleteSecret(name)
		}
		env := maps.Clone(base)
		maps.Copy(env, probes)
		_, envErr := run.LoadForTest(t.Context(), svc, Lookup(env), &bytes.Buffer{})
		if vaultErr != nil {
			errs = append(errs, vaultErr.Error())
		}
		if a, b := problems(vaultErr), problems(envErr); a != b {
			t.Errorf("%s from the vault give another outcome than from the environment:\nvault: %s\nenv:   %s",
				strings.Join(slices.Sorted(maps.Keys(probes)), ", "), a, b)
		}
		for name, value := range probes {
			switch got, ok := got[name]; {
			case ok && got != value:
				t.Errorf("%s: %s got another value than the vault's", name, svc.Name)
			case ok:
				read[name] = got
			}
		}
	}
	var unread []string
	for _, d := range svc.AllVars() {
		if _, ok := read[d.Name]; !ok && !vaultOwn[d.Name] && base[d.Name] == "" {
			unread = append(unread, d.Name)
		}
	}
	if len(unread) > 0 {
		t.Logf("%s does not read these variables with this configuration (they were checked for the same outcome only): %s", svc.Name, strings.Join(unread, ", "))
	}

	// 3. No secret value in any log line or error.
	all := logs.String() + strings.Join(errs, "\n")
	for value, name := range secrets {
		if len(value) >= 4 && strings.Contains(all, value) {
			t.Errorf("the value of %s was printed in a log line or error", name)
		}
	}
}

// problems is an error's text without the line that only a vault adds
// (the secret names it also looked for).
func problems(err error) string {
	if err == nil {
		return "loads"
	}
	var keep []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.HasPrefix(line, "not in Azure Key Vault ") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// loggedFromVault returns the variables the start-up log says came from the vault.
func loggedFromVault(t *testing.T, logs []byte) []string {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			Msg       string   `json:"msg"`
			Variables []string `json:"variables"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "variables read from Azure Key Vault" {
			return line.Variables
		}
	}
	t.Errorf("no start-up log line names the variables read from the vault")
	return nil
}
