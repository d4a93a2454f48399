package entrafake_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/entra"
	"github.com/cloud-block/cloud-block/testenv/entrafake"
)

const client = "0e1b2c3d-0000-0000-0000-00000000000a"

// credential builds the identity as a service does, from its variables.
func credential(t *testing.T, env map[string]string) (*entra.Identity, azcore.TokenCredential) {
	t.Helper()
	vars := append([]config.Var{{Name: "T_TENANT_ID"}, {Name: "T_CLIENT_ID"}, {Name: "T_CLIENT_SECRET", Secret: true}}, entra.Vars("T")...)
	l := config.NewLoader(func(n string) (string, bool) { v, ok := env[n]; return v, ok }, vars)
	id := entra.Load(l, "T")
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	cred, err := id.Credential(azcore.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return id, cred
}

var scope = policy.TokenRequestOptions{Scopes: []string{"https://storage.azure.com/.default"}}

// A device certificate's assertion is verified against the registered
// certificate; each token is the fake's, for the scope's resource, and a
// new one is issued once the short one expires. Another key with the same
// certificate name is refused.
func TestCertificate(t *testing.T) {
	f := entrafake.Start(t, entrafake.Options{Lifetime: 2 * time.Second})
	certPEM, cert := entrafake.ClientCertificate(t, "device-1")
	f.AddCertificate(client, cert)
	env := map[string]string{"T_TENANT_ID": f.Tenant, "T_CLIENT_ID": client, "T_CLIENT_CERTIFICATE": certPEM,
		"T_AUTHORITY_HOST": f.URL, "T_CA_FILE": f.CAFile}
	id, cred := credential(t, env)
	if !strings.Contains(id.String(), "client certificate of client "+client) {
		t.Errorf("identity %s", id)
	}
	ctx := context.Background()
	tk, err := cred.GetToken(ctx, scope)
	if err != nil {
		t.Fatal(err)
	}
	if aud, err := f.Verify(tk.Token); err != nil || aud != "https://storage.azure.com" {
		t.Fatalf("token: %v, audience %q", err, aud)
	}
	// MSAL's cache holds a token until 5 minutes before it expires: a
	// short one is asked for anew each time.
	if _, err := cred.GetToken(ctx, scope); err != nil {
		t.Fatal(err)
	}
	if n := len(f.Issued()); n != 2 {
		t.Errorf("%d tokens issued, want 2", n)
	}

	other, _ := entrafake.ClientCertificate(t, "device-1")
	env["T_CLIENT_CERTIFICATE"] = other
	_, cred = credential(t, env)
	_, err = cred.GetToken(ctx, scope)
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) || !strings.Contains(err.Error(), "AADSTS700027") {
		t.Fatalf("another key: %v", err)
	}

	// The endpoint away: the error names the identity and the authority.
	f.Down()
	_, cred = credential(t, map[string]string{"T_TENANT_ID": f.Tenant, "T_CLIENT_ID": client, "T_CLIENT_CERTIFICATE": certPEM,
		"T_AUTHORITY_HOST": f.URL, "T_CA_FILE": f.CAFile})
	_, err = cred.GetToken(ctx, scope)
	var te *entra.TokenError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "at "+f.URL) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("endpoint down: %v", err)
	}
	t.Logf("endpoint down: %v", err)
	f.Up(t)
	if _, err := cred.GetToken(ctx, scope); err != nil {
		t.Fatalf("endpoint back: %v", err)
	}
}

// A federated token file is read each time a token is needed: a rotated
// file is taken at once, an expired token in it is refused.
func TestFederatedTokenFile(t *testing.T) {
	f := entrafake.Start(t, entrafake.Options{Lifetime: 2 * time.Second})
	iss := entrafake.NewIssuer(t, "https://oidc.example.com/cluster")
	f.AddFederated(client, iss, "system:serviceaccount:default:block")
	file := filepath.Join(t.TempDir(), "token")
	write := func(tok string) {
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(iss.Token("system:serviceaccount:default:block", time.Hour))
	id, cred := credential(t, map[string]string{"T_TENANT_ID": f.Tenant, "T_CLIENT_ID": client, "T_FEDERATED_TOKEN_FILE": file,
		"T_AUTHORITY_HOST": f.URL, "T_CA_FILE": f.CAFile})
	t.Log(id)
	ctx := context.Background()
	if _, err := cred.GetToken(ctx, scope); err != nil {
		t.Fatal(err)
	}
	write(iss.Token("system:serviceaccount:default:block", -time.Minute))
	if _, err := cred.GetToken(ctx, scope); err == nil || !strings.Contains(err.Error(), "AADSTS700024") {
		t.Fatalf("an expired federated token: %v", err)
	}
	write(iss.Token("system:serviceaccount:default:other", time.Hour))
	if _, err := cred.GetToken(ctx, scope); err == nil || !strings.Contains(err.Error(), "match no federated credential") {
		t.Fatalf("another subject: %v", err)
	}
	write(iss.Token("system:serviceaccount:default:block", time.Hour))
	if _, err := cred.GetToken(ctx, scope); err != nil {
		t.Fatal(err)
	}
	if n, r := len(f.Issued()), len(f.Refused()); n != 2 || r != 2 {
		t.Errorf("%d issued, %d refused; want 2 and 2", n, r)
	}
}
