package run_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/vault"
	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
)

// vaultService has a required, a secret and a multi-line variable.
var vaultService = run.Service{
	Name: "vaulted",
	Vars: []config.Var{
		{Name: "VAULTED_ENDPOINT", Required: true, Doc: "Where to send."},
		{Name: "VAULTED_TOKEN", Aliases: []string{"VAULTED_OLD_TOKEN"}, Secret: true, Doc: "Access token."},
		{Name: "VAULTED_KEY", Secret: true, Multiline: true, Doc: "PEM key."},
	},
	New: func(l *config.Loader, info run.Info) (sink.Sink, error) {
		l.URL("VAULTED_ENDPOINT", "https")
		if tok := l.String("VAULTED_TOKEN"); tok != "" && !strings.HasPrefix(tok, "tok-") {
			l.Fail("VAULTED_TOKEN", tok, "a token starting with tok-")
		}
		if k := l.String("VAULTED_KEY"); k != "" && !strings.Contains(k, "-----\nkey\n-----") {
			l.Fail("VAULTED_KEY", k, "a PEM block")
		}
		return nil, nil
	},
}

// Every variable, the common ones too, can come from the vault: declared
// as the service's own, each is probed alone.
func TestAllFromVault(t *testing.T) {
	svc := vaultService
	svc.Vars = config.Merge(run.CommonVars(svc.Name), svc.Vars)
	vaulttest.RunAllFromVault(t, svc, map[string]string{
		"VAULTED_ENDPOINT": "https://example.net",
		"VAULTED_TOKEN":    "tok-from-the-vault",
		"VAULTED_KEY":      `-----\nkey\n-----`,
		"HTTP_LISTEN":      "127.0.0.1:0",
	})
}

func withEnv(a, b map[string]string) config.Lookup {
	m := map[string]string{}
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return vaulttest.Lookup(m)
}

// The environment wins over the vault, also over a secret under another
// of the variable's names; the vault fills in the rest; a literal \n in a
// multi-line value from the vault is a newline, as from the environment.
func TestVaultPrecedence(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("VAULTED_ENDPOINT", "https://from-vault.example")
	v.SetSecret("VAULTED_TOKEN", "tok-vault")
	v.SetSecret("VAULTED_KEY", `-----\nkey\n-----`)
	v.SetSecret("BUFFER_DIR", t.TempDir())
	var logs bytes.Buffer
	read, err := run.LoadForTest(t.Context(), vaultService, withEnv(v.Env(), map[string]string{
		"VAULTED_OLD_TOKEN": "tok-env", "VAULTED_ENDPOINT": "https://from-env.example",
	}), &logs)
	if err != nil {
		t.Fatal(err)
	}
	if read["VAULTED_ENDPOINT"] != "https://from-env.example" {
		t.Errorf("endpoint %q: the environment must win", read["VAULTED_ENDPOINT"])
	}
	if _, ok := read["VAULTED_TOKEN"]; ok || read["VAULTED_OLD_TOKEN"] != "tok-env" {
		t.Errorf("token read %v: the environment's alias must win over the vault's secret", read)
	}
	if !strings.Contains(logs.String(), `"variables":["BUFFER_DIR","VAULTED_KEY"]`) {
		t.Errorf("the log should name the variables taken from the vault:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "tok-") || strings.Contains(logs.String(), "key") && strings.Contains(logs.String(), "-----") {
		t.Errorf("a value was logged:\n%s", logs.String())
	}
}

func runWith(t *testing.T, env config.Lookup) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run.Run(t.Context(), vaultService, nil, env, &out, &errOut)
	return code, out.String(), errOut.String()
}

// A vault that cannot be read stops the start with one line naming it and
// the cause, and exit code 2.
func TestVaultErrorsAtStart(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("VAULTED_ENDPOINT", "https://example.net")
	v.SetSecret("VAULTED_TOKEN", "tok-secret-value")

	bad := v.Env()
	bad[vault.VarSecret] = "wrong-client-secret"
	code, out, errOut := runWith(t, withEnv(bad, nil))
	checkOneLine(t, code, out, errOut, v.URL()+": bad credentials: Microsoft Entra refused the client secret", "wrong-client-secret", v.ClientSecret)

	v.Forbid("VAULTED_TOKEN")
	code, out, errOut = runWith(t, withEnv(v.Env(), nil))
	checkOneLine(t, code, out, errOut, v.URL()+": forbidden: ", "tok-secret-value", v.ClientSecret)
	if !strings.Contains(errOut, "vaulted-token") {
		t.Errorf("the forbidden secret is not named:\n%s", errOut)
	}
}

func checkOneLine(t *testing.T, code int, out, errOut, want string, secrets ...string) {
	t.Helper()
	if code != run.ExitConfig {
		t.Errorf("exit %d, want %d", code, run.ExitConfig)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if strings.HasPrefix(l, "  - ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "Azure Key Vault "+want) {
		t.Errorf("want one problem line with %q, got:\n%s", want, errOut)
	}
	for _, s := range secrets {
		if strings.Contains(out+errOut, s) {
			t.Errorf("secret printed:\n%s\n%s", errOut, out)
		}
	}
}

// A required variable in neither place: the error says which secret was
// looked for too. A missing optional secret is no error.
func TestVaultMissingRequired(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("BUFFER_DIR", t.TempDir())
	code, _, errOut := runWith(t, withEnv(v.Env(), nil))
	if code != run.ExitConfig || !strings.Contains(errOut, "  - VAULTED_ENDPOINT is not set: required: Where to send.\n") ||
		!strings.Contains(errOut, "  - not in Azure Key Vault "+v.URL()+" either, as secret vaulted-endpoint\n") {
		t.Errorf("exit %d:\n%s", code, errOut)
	}
}

// The vault's own settings are checked with the others and reported
// together with them.
func TestVaultConfigErrorsJoined(t *testing.T) {
	code, _, errOut := runWith(t, vaulttest.Lookup(map[string]string{
		vault.VarName: "bad_name", "BUFFER_FULL_POLICY": "panic", "BUFFER_DIR": t.TempDir(),
	}))
	for _, want := range []string{"AZURE_VAULT_NAME=\"bad_name\" is invalid", "VAULTED_ENDPOINT is not set", "BUFFER_FULL_POLICY=\"panic\" is invalid"} {
		if code != run.ExitConfig || !strings.Contains(errOut, want) {
			t.Errorf("exit %d, stderr misses %s:\n%s", code, want, errOut)
		}
	}
}

// The vault's variables are listed with the others by the env command.
func TestEnvCommandListsVault(t *testing.T) {
	var out bytes.Buffer
	if code := run.Run(context.Background(), vaultService, []string{"env"}, config.Env, &out, os.Stderr); code != 0 ||
		!strings.Contains(out.String(), "`AZURE_VAULT_NAME`") || !strings.Contains(out.String(), "`AZURE_VAULT_REFRESH`") {
		t.Errorf("env: %s", out.String())
	}
}
