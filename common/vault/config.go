// Package vault reads configuration variables from Azure Key Vault, as the
// original block did, behind the same lookup seam as the environment:
// config.Chain(env, source.Lookup). Each variable lives in the secret named
// by lower-casing it and turning '_' into '-'; the environment wins.
//
// The vault's own settings (AZURE_VAULT_*) come from the environment only.
// The secrets of every declared variable are fetched once at start, a few at
// a time, into memory (the names are known from the declarations, so no
// List permission is needed), and read again by Refresh for rotation.
//
// Secret values never leave this package other than through Lookup: errors
// name the vault, the secret and the cause, never a value.
package vault

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/entra"
)

// Names of the vault's variables.
const (
	VarName         = "AZURE_VAULT_NAME"
	VarURL          = "AZURE_VAULT_URL"
	VarTenant       = "AZURE_VAULT_TENANT_ID"
	VarClient       = "AZURE_VAULT_CLIENT_ID"
	VarSecret       = "AZURE_VAULT_CLIENT_SECRET"
	VarCert         = "AZURE_VAULT_CLIENT_CERTIFICATE"
	VarCertPath     = "AZURE_VAULT_CLIENT_CERTIFICATE_PATH"
	VarCertPassword = "AZURE_VAULT_CLIENT_CERTIFICATE_PASSWORD"
	VarAuthority    = "AZURE_VAULT_AUTHORITY_HOST"
	VarCAFile       = "AZURE_VAULT_CA_FILE"
	VarRefresh      = "AZURE_VAULT_REFRESH"
)

// publicAuthority is Microsoft Entra's host in Azure's public cloud.
const publicAuthority = "https://login.microsoftonline.com/"

// Vars declares the vault's variables. They are read from the environment
// only: a secret cannot say where the secrets are.
var Vars = []config.Var{
	{Name: VarName,
		Doc: "Azure Key Vault to read variables from (vault `https://<name>.vault.azure.net/`): every other variable may then live in the secret named by its lower-case, dash form (`AZURE_EH_CONNECTIONSTRING` in `azure-eh-connectionstring`); the environment wins. " +
			"The `AZURE_VAULT_*` variables themselves are read from the environment only. The identity needs Get on secrets."},
	{Name: VarURL,
		Doc: "Vault URL instead of " + VarName + ", for other clouds (`https://<name>.vault.azure.cn/`, `https://<name>.vault.usgovcloudapi.net/`)."},
	{Name: VarTenant,
		Doc: "Microsoft Entra tenant id of the service principal reading the vault. Required with a client secret or certificate."},
	{Name: VarClient,
		Doc: "Application (client) id of that service principal. Required with a client secret or certificate; without either, the client id of a user-assigned managed identity or of a workload identity."},
	{Name: VarSecret, Secret: true,
		Doc: "Client secret of the service principal. With neither a secret nor a certificate, the platform's workload identity (`AZURE_FEDERATED_TOKEN_FILE`) or managed identity is used."},
	{Name: VarCert, Secret: true, Multiline: true,
		Doc: "Client certificate instead of a secret, as text: PEM with the certificate and its RSA private key (literal `\\n` allowed), or a PFX/PKCS#12 file in base64."},
	{Name: VarCertPath,
		Doc: "Client certificate instead of a secret, as the path of a PEM or PFX file (e.g. a mounted secret)."},
	{Name: VarCertPassword, Secret: true,
		Doc: "Password of the PFX given in " + VarCert + " or " + VarCertPath + ", if it has one."},
	{Name: VarAuthority, Default: publicAuthority,
		Doc: "Microsoft Entra authority host, for other clouds (`https://login.chinacloudapi.cn/`, `https://login.microsoftonline.us/`)."},
	{Name: VarCAFile,
		Doc: "PEM file of CA certificates to trust for the vault and Microsoft Entra besides the system's (a TLS-inspecting proxy, a private cloud, tests)."},
	{Name: VarRefresh, Default: "1h",
		Doc: "How often the secrets are read again, so rotated values are picked up; `0` reads them only at start. They are also read again at once when the destination rejects its credentials, and the destination reconnects with the new values."},
}

// credKind is how the block authenticates to the vault.
type credKind int

const (
	credSecret credKind = iota + 1
	credCert
	credPlatform // workload identity where present, else managed identity
)

// Config is the vault's validated configuration.
type Config struct {
	// URL is the vault's URL, ending in '/'.
	URL string
	// Refresh is how often the secrets are read again (0: never).
	Refresh time.Duration

	tenant, client string
	kind           credKind
	secret         string
	certs          []*x509.Certificate
	key            crypto.PrivateKey
	authority      string
	roots          *x509.CertPool // nil: the system's
	// verifyChallenge checks that the vault's authentication challenge names
	// a resource of the vault's own domain, so a token is never sent to a
	// host that merely claims to be a vault. It cannot work for a vault
	// addressed by an IP address or localhost, which only tests and private
	// set-ups use.
	verifyChallenge bool
	retry           policy.RetryOptions
}

var (
	// Key Vault names: 3-24 letters, digits and hyphens, starting with a
	// letter, ending with a letter or digit, no two hyphens in a row.
	vaultName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$`)
	// Entra tenant ids as azidentity accepts them (GUIDs or domain names).
	tenantID = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)
	clientID = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// LoadConfig reads the vault's variables from env (the process environment,
// never a secret store). It returns nil and no error when no vault is
// configured; problems name the variable, as config.Loader's do.
func LoadConfig(env config.Lookup) (*Config, error) {
	l := config.NewLoader(env, Vars)
	c := &Config{
		tenant: strings.TrimSpace(l.String(VarTenant)),
		client: strings.TrimSpace(l.String(VarClient)),
		secret: l.String(VarSecret),
		// Transient faults (throttling, 5xx, dropped connections) are retried
		// with backoff; the per-try timeout keeps a silent network from
		// holding a try, and start-up, for long.
		retry: policy.RetryOptions{MaxRetries: 4, TryTimeout: 30 * time.Second, RetryDelay: time.Second, MaxRetryDelay: 15 * time.Second},
	}
	name := strings.TrimSpace(l.String(VarName))
	rawURL := l.URL(VarURL, "https")
	switch {
	case name != "" && (!vaultName.MatchString(name) || strings.Contains(name, "--")):
		l.Fail(VarName, name, "a Key Vault name: 3 to 24 letters, digits and hyphens, starting with a letter (not its URL: that goes in "+VarURL+")")
	case name != "":
		c.URL = "https://" + strings.ToLower(name) + ".vault.azure.net/"
		// The vault's domain: its challenge names a resource under it.
		c.verifyChallenge = true
	}
	switch {
	case name != "" && l.IsSet(VarURL):
		l.Fail(VarURL, l.Optional(VarURL), "unset when "+VarName+" is set (give the vault one way)")
	case rawURL != nil && (strings.Trim(rawURL.Path, "/") != "" || rawURL.RawQuery != "" || rawURL.Fragment != "" || rawURL.User != nil):
		l.Fail(VarURL, rawURL.Redacted(), "the vault's URL without a path, such as https://<name>.vault.azure.net/")
	case rawURL != nil:
		c.URL = "https://" + rawURL.Host + "/"
		host := rawURL.Hostname()
		c.verifyChallenge = net.ParseIP(host) == nil && host != "localhost"
	}
	if c.tenant != "" && !tenantID.MatchString(c.tenant) {
		l.Fail(VarTenant, c.tenant, "a tenant id: a GUID such as 00000000-0000-0000-0000-000000000000, or a domain such as contoso.onmicrosoft.com")
	}
	if c.client != "" && !clientID.MatchString(c.client) {
		l.Fail(VarClient, c.client, "an application (client) id: a GUID such as 00000000-0000-0000-0000-000000000000")
	}
	if a := l.URL(VarAuthority, "https"); a != nil {
		c.authority = strings.TrimSuffix(a.String(), "/") + "/"
	}
	c.Refresh = l.Duration(VarRefresh, 0, 30*24*time.Hour)
	if c.Refresh > 0 && c.Refresh < time.Second {
		l.Fail(VarRefresh, l.String(VarRefresh), "0 (off) or a duration from 1s, such as 1h")
	}
	if path := l.String(VarCAFile); path != "" {
		c.roots = entra.LoadRoots(l, VarCAFile, path)
	}
	c.loadCertificate(l)

	enabled := name != "" || l.IsSet(VarURL)
	if !enabled {
		// A vault variable without a vault is a mistake to report, not to ignore.
		var set []string
		for _, v := range Vars {
			if l.IsSet(v.Name) {
				set = append(set, v.Name)
			}
		}
		if len(set) > 0 {
			l.Require(VarName, "required (or "+VarURL+") when "+strings.Join(set, ", ")+" is set")
		}
		return nil, l.Err()
	}

	certVar := VarCert
	if !l.IsSet(VarCert) {
		certVar = VarCertPath
	}
	switch {
	case c.secret != "" && l.IsSet(certVar):
		l.Fail(certVar, l.Optional(certVar), "unset when "+VarSecret+" is set (give one credential)")
	case c.secret != "":
		c.kind = credSecret
	case c.certs != nil:
		c.kind = credCert
	default:
		c.kind = credPlatform
	}
	if c.kind == credSecret || c.kind == credCert {
		for _, n := range []string{VarTenant, VarClient} {
			if !l.IsSet(n) {
				l.Require(n, "required with a client secret or certificate")
			}
		}
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// loadCertificate reads the client certificate from text or a file.
func (c *Config) loadCertificate(l *config.Loader) {
	text, path := l.String(VarCert), strings.TrimSpace(l.String(VarCertPath))
	password := l.String(VarCertPassword)
	name, data := VarCert, []byte(text)
	if text != "" && path != "" {
		l.Fail(VarCertPath, path, "unset when "+VarCert+" is set (give the certificate one way)")
		path = "" // the text is still checked, to report all problems at once
	}
	switch {
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			l.Fail(VarCertPath, path, "the path of a readable PEM or PFX file ("+err.Error()+")")
			return
		}
		name, data = VarCertPath, b
	case text == "":
		if password != "" {
			l.Fail(VarCertPassword, password, "unset unless "+VarCert+" or "+VarCertPath+" is set")
		}
		return
	}
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		// PFX given as base64 text (binary cannot travel in a variable).
		if b, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(data), nil))); err == nil {
			data = b
		}
	}
	certs, key, err := azidentity.ParseCertificates(data, []byte(password))
	if err != nil {
		l.Fail(name, l.Optional(name), "a PEM certificate with its private key, or a PFX file (base64 when given as text), with "+VarCertPassword+" if it has a password: "+err.Error())
		return
	}
	// Microsoft Entra's client assertions are signed with RSA (PS256).
	if _, ok := key.(*rsa.PrivateKey); !ok {
		l.Fail(name, l.Optional(name), fmt.Sprintf("a certificate with an RSA private key, not %T", key))
		return
	}
	c.certs, c.key = certs, key
}

// String describes the vault and the kind of credential, never its value
// (so a Config printed with %v or %+v shows no secret).
func (c *Config) String() string { return c.URL + " with the " + c.credentialName() }

// GoString is String, for %#v.
func (c *Config) GoString() string { return c.String() }

// credentialName describes the credential for messages (never its value).
func (c *Config) credentialName() string {
	switch c.kind {
	case credSecret:
		return "client secret of client " + c.client
	case credCert:
		return "client certificate of client " + c.client
	}
	if c.client != "" {
		return "platform identity " + c.client
	}
	return "platform identity"
}

// SecretName is the name of the secret holding variable: lower case, with
// '_' turned into '-' (Key Vault names allow letters, digits and '-').
func SecretName(variable string) string {
	return strings.ReplaceAll(strings.ToLower(variable), "_", "-")
}

// Wanted lists the variables to look for in the vault: every name (and
// alias) declared, except the vault's own and those of any variable the
// environment sets under one of its names, since the environment wins.
func Wanted(vars []config.Var, env config.Lookup) []string {
	own := map[string]bool{}
	for _, v := range Vars {
		own[v.Name] = true
	}
	var out []string
	seen := map[string]bool{}
vars:
	for _, v := range vars {
		names := append([]string{v.Name}, v.Aliases...)
		if own[v.Name] {
			continue
		}
		for _, n := range names {
			if _, ok := env(n); ok {
				continue vars
			}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}
