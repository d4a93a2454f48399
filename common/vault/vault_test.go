package vault_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/vault"
	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
)

// open reads the vault's config from env and opens it for vars, with fast retries.
func open(t *testing.T, env map[string]string, vars ...string) (*vault.Source, error) {
	t.Helper()
	cfg, err := vault.LoadConfig(vaulttest.Lookup(env))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if cfg == nil {
		t.Fatal("no vault configured")
	}
	vault.FastRetry(cfg)
	return vault.Open(t.Context(), cfg, vars)
}

func TestSecretCredential(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("AWS_SQS_QUEUE_NAME", "orders")
	v.SetSecret("azure-eh-connectionstring", "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=s")
	src, err := open(t, v.Env(), "AWS_SQS_QUEUE_NAME", "AZURE_EH_CONNECTIONSTRING", "AWS_SQS_REGION")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := src.Lookup("AWS_SQS_QUEUE_NAME"); !ok || got != "orders" {
		t.Errorf("AWS_SQS_QUEUE_NAME = %q, %v", got, ok)
	}
	if got, ok := src.Lookup("AZURE_EH_CONNECTIONSTRING"); !ok || !strings.HasPrefix(got, "Endpoint=") {
		t.Errorf("AZURE_EH_CONNECTIONSTRING not found")
	}
	// A missing secret is simply not set.
	if _, ok := src.Lookup("AWS_SQS_REGION"); ok {
		t.Error("a missing secret was found")
	}
	// Nothing not asked for is read.
	if _, ok := src.Lookup("AWS_S3_BUCKET"); ok {
		t.Error("an unrequested variable was found")
	}
	if got := src.Found(); !slices.Equal(got, []string{"AWS_SQS_QUEUE_NAME", "AZURE_EH_CONNECTIONSTRING"}) {
		t.Errorf("Found() = %v", got)
	}
	if v.Gets() != 3 || v.Tokens() != 1 {
		t.Errorf("%d gets, %d tokens; want 3 gets and one token for all", v.Gets(), v.Tokens())
	}
}

func TestCertificateCredential(t *testing.T) {
	for name, form := range map[string]vaulttest.CertForm{
		"pem text": vaulttest.PEMText, "pfx base64 text": vaulttest.PFXText,
		"pfx file": vaulttest.PFXFile, "pem file": vaulttest.PEMFile,
	} {
		t.Run(name, func(t *testing.T) {
			v := vaulttest.New(t)
			v.SetSecret("GCP_PUBSUB_TOPIC", "events")
			src, err := open(t, v.CertificateEnv(t, form), "GCP_PUBSUB_TOPIC")
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := src.Lookup("GCP_PUBSUB_TOPIC"); got != "events" {
				t.Errorf("got %q", got)
			}
		})
	}
}

// checkError asserts err is a one-line *vault.Error of kind naming the
// vault, with every want in it and no secret.
func checkError(t *testing.T, err error, kind vault.Kind, vaultURL string, want []string, secrets ...string) {
	t.Helper()
	var ve *vault.Error
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *vault.Error", err, err)
	}
	msg := err.Error()
	t.Logf("%s", msg)
	if ve.Kind != kind {
		t.Errorf("kind %v, want %v", ve.Kind, kind)
	}
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("not one line: %q", msg)
	}
	for _, w := range append(want, vaultURL) {
		if !strings.Contains(msg, w) {
			t.Errorf("%q does not say %q", msg, w)
		}
	}
	for _, s := range secrets {
		if strings.Contains(msg, s) {
			t.Errorf("the error shows a secret")
		}
	}
}

func TestBadCredentials(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("AWS_SQS_QUEUE_NAME", "orders")

	env := v.Env()
	env[vault.VarSecret] = "not-the-secret-" + v.ClientSecret[:4]
	_, err := open(t, env, "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.BadCredentials, v.URL(), []string{"client secret of client " + v.ClientID, "invalid_client", "AADSTS7000215"}, env[vault.VarSecret], v.ClientSecret)

	env = v.Env()
	env[vault.VarClient] = "00000000-0000-0000-0000-00000000dead"
	_, err = open(t, env, "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.BadCredentials, v.URL(), []string{"unauthorized_client", "AADSTS700016"}, v.ClientSecret)

	env = v.Env()
	env[vault.VarTenant] = "00000000-0000-0000-0000-00000000beef"
	_, err = open(t, env, "AWS_SQS_QUEUE_NAME")
	// The vault's challenge names the tenant that owns it; azidentity
	// refuses to ask another tenant for a token it was not configured for.
	var ve *vault.Error
	if !errors.As(err, &ve) || strings.ContainsAny(err.Error(), "\n") {
		t.Errorf("wrong tenant: %v", err)
	}
	t.Logf("wrong tenant: %v", err)

	// A certificate Entra does not know for the client.
	env = v.Env()
	delete(env, vault.VarSecret)
	env[vault.VarCert] = otherCertificate(t)
	_, err = open(t, env, "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.BadCredentials, v.URL(), []string{"client certificate of client " + v.ClientID, "invalid_client"}, "PRIVATE KEY")
}

// otherCertificate is a self-signed RSA certificate and key in PEM.
func otherCertificate(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "stranger"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

func TestForbidden(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("AWS_SQS_QUEUE_NAME", "orders")
	v.SetSecret("AWS_SQS_SECRET_KEY", "very-secret-key")
	v.Forbid("AWS_SQS_SECRET_KEY")
	_, err := open(t, v.Env(), "AWS_SQS_QUEUE_NAME", "AWS_SQS_SECRET_KEY")
	checkError(t, err, vault.Forbidden, v.URL(), []string{"aws-sqs-secret-key", "get permission", "403"}, "very-secret-key")

	// No Get permission at all: forbidden even for a secret that does not exist.
	v.Forbid()
	_, err = open(t, v.Env(), "AWS_SQS_REGION")
	checkError(t, err, vault.Forbidden, v.URL(), []string{"aws-sqs-region"})
}

func TestUnreachable(t *testing.T) {
	v := vaulttest.New(t)
	env := v.Env()

	// Untrusted: the CA file is not given.
	noCA := v.Env()
	delete(noCA, vault.VarCAFile)
	_, err := open(t, noCA, "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.Unreachable, v.URL(), []string{"certificate"})

	v.Close()
	start := time.Now()
	_, err = open(t, env, "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.Unreachable, v.URL(), []string{"refused"})
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}

// Entra unreachable while the vault answers its challenge.
func TestEntraUnreachable(t *testing.T) {
	v := vaulttest.New(t)
	env := v.Env()
	env[vault.VarAuthority] = "https://127.0.0.1:1/"
	_, err := open(t, env, "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.Unreachable, v.URL(), []string{"Microsoft Entra", "refused"})
}

func TestTransientFaultsRetried(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("AWS_SQS_QUEUE_NAME", "orders")
	v.FailNext(2, http.StatusServiceUnavailable)
	src, err := open(t, v.Env(), "AWS_SQS_QUEUE_NAME")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := src.Lookup("AWS_SQS_QUEUE_NAME"); got != "orders" {
		t.Errorf("got %q", got)
	}
	// More faults than retries: a clear error, not a hang.
	v.FailNext(100, http.StatusTooManyRequests)
	_, err = open(t, v.Env(), "AWS_SQS_QUEUE_NAME")
	checkError(t, err, vault.Failed, v.URL(), []string{"429", "aws-sqs-queue-name"})
}

func TestRefresh(t *testing.T) {
	v := vaulttest.New(t)
	v.SetSecret("AWS_SQS_SECRET_KEY", "old-key")
	v.SetSecret("AWS_SQS_ACCESS_KEY", "AKIDOLD")
	src, err := open(t, v.Env(), "AWS_SQS_SECRET_KEY", "AWS_SQS_ACCESS_KEY", "AWS_SQS_SESSION_TOKEN")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	gen := src.Generation()
	if changed, err := src.Refresh(ctx); err != nil || len(changed) != 0 || src.Generation() != gen {
		t.Fatalf("no change: %v %v", changed, err)
	}
	v.SetSecret("AWS_SQS_SECRET_KEY", "new-key")
	v.SetSecret("AWS_SQS_SESSION_TOKEN", "token")
	v.DeleteSecret("AWS_SQS_ACCESS_KEY")
	changed, err := src.Refresh(ctx)
	if err != nil || !slices.Equal(changed, []string{"AWS_SQS_ACCESS_KEY", "AWS_SQS_SECRET_KEY", "AWS_SQS_SESSION_TOKEN"}) {
		t.Fatalf("changed %v, %v", changed, err)
	}
	if src.Generation() != gen+1 {
		t.Errorf("generation %d", src.Generation())
	}
	if got, _ := src.Lookup("AWS_SQS_SECRET_KEY"); got != "new-key" {
		t.Errorf("got %q", got)
	}
	if _, ok := src.Lookup("AWS_SQS_ACCESS_KEY"); ok {
		t.Error("a deleted secret is still found")
	}
	// A failed refresh keeps every value read before.
	v.SetSecret("AWS_SQS_SECRET_KEY", "newer-key")
	v.Forbid("AWS_SQS_SESSION_TOKEN")
	if _, err := src.Refresh(ctx); err == nil {
		t.Fatal("forbidden refresh succeeded")
	}
	if got, _ := src.Lookup("AWS_SQS_SECRET_KEY"); got != "new-key" {
		t.Errorf("after a failed refresh: %q", got)
	}
	// A cancelled refresh reports it.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := src.Refresh(cctx); err == nil {
		t.Error("cancelled refresh succeeded")
	}
}

func TestWanted(t *testing.T) {
	vars := []config.Var{
		{Name: "A_ONE"},
		{Name: "B_TWO", Aliases: []string{"OLD_B_TWO"}},
		{Name: "C_THREE", Aliases: []string{"OLD_C_THREE"}},
		{Name: vault.VarSecret},
	}
	env := vaulttest.Lookup(map[string]string{"OLD_B_TWO": "from env", vault.VarSecret: "s"})
	got := vault.Wanted(vars, env)
	// B_TWO is set in the environment under its alias: the environment wins,
	// so neither of its names is read from the vault. The vault's own
	// variables never are.
	if want := []string{"A_ONE", "C_THREE", "OLD_C_THREE"}; !slices.Equal(got, want) {
		t.Errorf("Wanted = %v, want %v", got, want)
	}
	if vault.SecretName("AZURE_EH_CONNECTIONSTRING") != "azure-eh-connectionstring" {
		t.Error(vault.SecretName("AZURE_EH_CONNECTIONSTRING"))
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	sp := map[string]string{vault.VarTenant: "contoso.onmicrosoft.com", vault.VarClient: "c1", vault.VarSecret: "hunter2-vault-secret"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	cases := map[string]struct {
		env  map[string]string
		want string // "" = loads
		url  string
	}{
		"none":           {env: map[string]string{}},
		"name":           {env: with(sp, vault.VarName, "My-Vault1"), url: "https://my-vault1.vault.azure.net/"},
		"url":            {env: with(sp, vault.VarURL, "https://v.vault.azure.cn"), url: "https://v.vault.azure.cn/"},
		"managed":        {env: map[string]string{vault.VarName: "vault1"}, url: "https://vault1.vault.azure.net/"},
		"bad name":       {env: with(sp, vault.VarName, "my_vault"), want: `AZURE_VAULT_NAME="my_vault" is invalid: want a Key Vault name`},
		"double hyphen":  {env: with(sp, vault.VarName, "my--vault"), want: `AZURE_VAULT_NAME="my--vault" is invalid`},
		"both":           {env: with(sp, vault.VarName, "v1x", vault.VarURL, "https://v.vault.azure.net/"), want: "AZURE_VAULT_URL=\"https://v.vault.azure.net/\" is invalid: want unset when AZURE_VAULT_NAME is set"},
		"http url":       {env: with(sp, vault.VarURL, "http://v.vault.azure.net/"), want: "AZURE_VAULT_URL=\"http://v.vault.azure.net/\" is invalid: want a URL"},
		"url path":       {env: with(sp, vault.VarURL, "https://v.vault.azure.net/secrets/x"), want: "want the vault's URL without a path"},
		"no tenant":      {env: with(sp, vault.VarName, "vault1", vault.VarTenant, ""), want: "AZURE_VAULT_TENANT_ID is not set: required with a client secret or certificate"},
		"no client":      {env: with(sp, vault.VarName, "vault1", vault.VarClient, ""), want: "AZURE_VAULT_CLIENT_ID is not set: required with a client secret or certificate"},
		"bad tenant":     {env: with(sp, vault.VarName, "vault1", vault.VarTenant, "a tenant"), want: `AZURE_VAULT_TENANT_ID="a tenant" is invalid`},
		"two creds":      {env: with(sp, vault.VarName, "vault1", vault.VarCert, otherCertificate(t)), want: "AZURE_VAULT_CLIENT_CERTIFICATE=(secret value not shown) is invalid: want unset when AZURE_VAULT_CLIENT_SECRET is set"},
		"two certs":      {env: with(sp, vault.VarName, "vault1", vault.VarSecret, "", vault.VarCert, otherCertificate(t), vault.VarCertPath, junk), want: "AZURE_VAULT_CLIENT_CERTIFICATE_PATH=\"" + junk + "\" is invalid: want unset when AZURE_VAULT_CLIENT_CERTIFICATE is set"},
		"junk cert":      {env: with(sp, vault.VarName, "vault1", vault.VarSecret, "", vault.VarCertPath, junk), want: "AZURE_VAULT_CLIENT_CERTIFICATE_PATH=\"" + junk + "\" is invalid: want a PEM certificate with its private key"},
		"junk cert text": {env: with(sp, vault.VarName, "vault1", vault.VarSecret, "", vault.VarCert, "bm90IGEgcGZ4"), want: "AZURE_VAULT_CLIENT_CERTIFICATE=(secret value not shown) is invalid"},
		"no cert file":   {env: with(sp, vault.VarName, "vault1", vault.VarSecret, "", vault.VarCertPath, "/no/such.pfx"), want: `AZURE_VAULT_CLIENT_CERTIFICATE_PATH="/no/such.pfx" is invalid: want the path of a readable PEM or PFX file`},
		"password alone": {env: with(sp, vault.VarName, "vault1", vault.VarCertPassword, "pw-secret"), want: "AZURE_VAULT_CLIENT_CERTIFICATE_PASSWORD=(secret value not shown) is invalid: want unset unless"},
		"authority":      {env: with(sp, vault.VarName, "vault1", vault.VarAuthority, "http://login"), want: `AZURE_VAULT_AUTHORITY_HOST="http://login" is invalid`},
		"ca file":        {env: with(sp, vault.VarName, "vault1", vault.VarCAFile, junk), want: "AZURE_VAULT_CA_FILE=\"" + junk + "\" is invalid: want a PEM file with at least one CERTIFICATE block"},
		"refresh":        {env: with(sp, vault.VarName, "vault1", vault.VarRefresh, "10ms"), want: `AZURE_VAULT_REFRESH="10ms" is invalid: want 0 (off) or a duration from 1s`},
		"refresh off":    {env: with(sp, vault.VarName, "vault1", vault.VarRefresh, "0"), url: "https://vault1.vault.azure.net/"},
		"no vault":       {env: sp, want: "AZURE_VAULT_NAME is not set: required (or AZURE_VAULT_URL) when AZURE_VAULT_TENANT_ID, AZURE_VAULT_CLIENT_ID, AZURE_VAULT_CLIENT_SECRET is set"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			cfg, err := vault.LoadConfig(vaulttest.Lookup(c.env))
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if (cfg == nil) != (c.url == "") || cfg != nil && cfg.URL != c.url {
					t.Errorf("config %+v, want URL %q", cfg, c.url)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v\nwant %s", err, c.want)
			}
			for _, s := range []string{"hunter2-vault-secret", "pw-secret", "PRIVATE KEY"} {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("secret shown: %v", err)
				}
			}
		})
	}
}

// With no credential of its own, the block uses the platform's: workload
// identity where it is set up, else the managed identity.
func TestPlatformIdentity(t *testing.T) {
	cases := map[string]func(v *vaulttest.Vault, t *testing.T) map[string]string{
		"workload identity":                func(v *vaulttest.Vault, t *testing.T) map[string]string { return v.WorkloadIdentityEnv(t) },
		"system-assigned managed identity": func(v *vaulttest.Vault, t *testing.T) map[string]string { return v.ManagedIdentityEnv(t, false) },
		"user-assigned managed identity":   func(v *vaulttest.Vault, t *testing.T) map[string]string { return v.ManagedIdentityEnv(t, true) },
	}
	for name, env := range cases {
		t.Run(name, func(t *testing.T) {
			v := vaulttest.New(t)
			v.SetSecret("AWS_S3_BUCKET", "bucket-1")
			src, err := open(t, env(v, t), "AWS_S3_BUCKET")
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := src.Lookup("AWS_S3_BUCKET"); got != "bucket-1" {
				t.Errorf("got %q", got)
			}
		})
	}
	// A user-assigned identity the platform does not have.
	v := vaulttest.New(t)
	env := v.ManagedIdentityEnv(t, true)
	env[vault.VarClient] = "00000000-0000-0000-0000-00000000dead"
	_, err := open(t, env, "AWS_S3_BUCKET")
	var ve *vault.Error
	if !errors.As(err, &ve) || strings.ContainsAny(err.Error(), "\n") || !strings.Contains(err.Error(), "platform identity 00000000-0000-0000-0000-00000000dead") {
		t.Errorf("unknown identity: %v", err)
	}
	t.Log(err)
}

// The secrets are read a few at a time: quick, without tripping the vault's throttling.
func TestFetchBounded(t *testing.T) {
	v := vaulttest.New(t)
	var vars []string
	for i := range 60 {
		name := fmt.Sprintf("VAR_%02d", i)
		vars = append(vars, name)
		if i%2 == 0 {
			v.SetSecret(name, "value")
		}
	}
	src, err := open(t, v.Env(), vars...)
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Found()) != 30 || v.Gets() != 60 {
		t.Errorf("found %d, %d gets", len(src.Found()), v.Gets())
	}
	t.Logf("%d requests at once", v.MaxInFlight())
	if n := v.MaxInFlight(); n > 8 {
		t.Errorf("%d requests at once, want at most 8", n)
	}
}
