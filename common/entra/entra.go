// Package entra is the Microsoft Entra identity of an Azure destination: a
// service principal's client secret, or one of the two ways that leave no
// long-lived secret on the device, a client certificate (the device's own
// certificate and key) and a federated token file (workload identity: a
// short-lived token from another issuer, read from a file each time a new
// Entra token is needed). Each service declares the variables under its
// prefix (AZURE_BLOB_*, AZURE_EH_*) with its own tenant, client and secret.
//
// Tokens are asked for when the SDK needs one (azcore refreshes before
// expiry); they never appear in errors. An error getting one names the
// authority host and the identity, so /ready says which endpoint failed.
package entra

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/config"
)

// Suffixes of the variables, after the service's prefix and '_'.
const (
	SufTenant       = "TENANT_ID"
	SufClient       = "CLIENT_ID"
	SufSecret       = "CLIENT_SECRET"
	SufCert         = "CLIENT_CERTIFICATE"
	SufCertPath     = "CLIENT_CERTIFICATE_PATH"
	SufCertPassword = "CLIENT_CERTIFICATE_PASSWORD"
	SufTokenFile    = "FEDERATED_TOKEN_FILE"
	SufAuthority    = "AUTHORITY_HOST"
	SufCAFile       = "CA_FILE"
)

// Vars declares the keyless identities' variables of a service (its tenant,
// client and secret it declares itself, with its own wording).
func Vars(prefix string) []config.Var {
	p := prefix + "_"
	return []config.Var{
		{Name: p + SufCert, Secret: true, Multiline: true,
			Doc: "Client certificate instead of a secret (no long-lived secret on the device: the key can be the device's own), as text: PEM with the certificate and its RSA private key (literal `\\n` allowed), or a PFX/PKCS#12 file in base64. With " + p + SufTenant + " and " + p + SufClient + "; the app registration holds the certificate (public part only)."},
		{Name: p + SufCertPath,
			Doc: "Client certificate instead of a secret, as the path of a PEM or PFX file (read at start)."},
		{Name: p + SufCertPassword, Secret: true,
			Doc: "Password of the PFX given in " + p + SufCert + " or " + p + SufCertPath + ", if it has one."},
		{Name: p + SufTokenFile,
			Doc: "Workload identity federation instead of a secret: the path of a file holding a token from an issuer the app registration trusts (a federated credential); it is read again each time a Microsoft Entra token is needed, so whoever writes it may rotate it. With " + p + SufTenant + " and " + p + SufClient + "."},
		{Name: p + SufAuthority,
			Doc: "Microsoft Entra authority host for the identity above, for other clouds (`https://login.microsoftonline.us/`, `https://login.chinacloudapi.cn/`) or Azure Stack. Default: the SDK's `AZURE_AUTHORITY_HOST`, else `https://login.microsoftonline.com/`."},
		{Name: p + SufCAFile,
			Doc: "PEM file of CA certificates to trust besides the system's, for Microsoft Entra and the destination (a private cloud, a TLS-inspecting proxy, tests)."},
	}
}

// Kind is how the identity proves itself.
type Kind int

const (
	KindSecret      Kind = iota + 1 // a client secret
	KindCertificate                 // a client certificate (a signed assertion)
	KindTokenFile                   // a federated token read from a file
)

// Identity is a validated service principal of a service.
type Identity struct {
	Kind           Kind
	Tenant, Client string
	// Authority is the authority host ("": the SDK's default).
	Authority string
	// Roots are the CAs to trust (nil: the system's).
	Roots *x509.CertPool

	prefix    string
	secret    string
	certs     []*x509.Certificate
	key       crypto.PrivateKey
	tokenFile string
}

var (
	// Entra tenant ids as azidentity accepts them (GUIDs or domain names).
	tenantID = regexp.MustCompile(`^[A-Za-z0-9.-]+$`)
	clientID = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// Set reports whether any of prefix's service principal variables is set
// (tenant, client, secret, certificate or token file): the service then
// authenticates with Load's identity.
func Set(l *config.Loader, prefix string) bool {
	for _, s := range []string{SufTenant, SufClient, SufSecret, SufCert, SufCertPath, SufTokenFile} {
		if l.IsSet(prefix + "_" + s) {
			return true
		}
	}
	return false
}

// Load reads the identity of prefix's variables; problems are recorded in
// l, naming the variable. Exactly one of a secret, a certificate and a token
// file, with the tenant and client.
func Load(l *config.Loader, prefix string) *Identity {
	p := prefix + "_"
	id := &Identity{
		prefix:    prefix,
		Tenant:    strings.TrimSpace(l.String(p + SufTenant)),
		Client:    strings.TrimSpace(l.String(p + SufClient)),
		secret:    l.String(p + SufSecret),
		tokenFile: strings.TrimSpace(l.String(p + SufTokenFile)),
	}
	if id.Tenant != "" && !tenantID.MatchString(id.Tenant) {
		l.Fail(p+SufTenant, id.Tenant, "a tenant id: a GUID such as 00000000-0000-0000-0000-000000000000, or a domain such as contoso.onmicrosoft.com")
	}
	if id.Client != "" && !clientID.MatchString(id.Client) {
		l.Fail(p+SufClient, id.Client, "an application (client) id: a GUID such as 00000000-0000-0000-0000-000000000000")
	}
	if a := l.URL(p+SufAuthority, "https"); a != nil {
		if a.Path != "" && a.Path != "/" || a.RawQuery != "" {
			l.Fail(p+SufAuthority, a.Redacted(), "the authority's host as a URL without a path, such as https://login.microsoftonline.us/")
		} else {
			id.Authority = "https://" + a.Host + "/"
		}
	}
	if path := strings.TrimSpace(l.String(p + SufCAFile)); path != "" {
		id.Roots = LoadRoots(l, p+SufCAFile, path)
	}
	id.loadCertificate(l)

	var ways []string
	if id.secret != "" {
		id.Kind = KindSecret
		ways = append(ways, p+SufSecret)
	}
	if id.certs != nil || l.IsSet(p+SufCert) || l.IsSet(p+SufCertPath) {
		id.Kind = KindCertificate
		ways = append(ways, certVar(l, p))
	}
	if id.tokenFile != "" {
		id.Kind = KindTokenFile
		ways = append(ways, p+SufTokenFile)
		if st, err := os.Stat(id.tokenFile); err != nil || st.IsDir() {
			why := "a directory"
			if err != nil {
				why = err.Error()
			}
			l.Fail(p+SufTokenFile, id.tokenFile, "the path of a readable file holding the federated token ("+why+")")
		}
	}
	const one = "one credential: a client secret, a client certificate or a federated token file"
	switch len(ways) {
	case 0:
		l.Require(p+SufSecret, "required when "+p+SufTenant+" or "+p+SufClient+" is set: "+one+" ("+
			p+SufSecret+", "+p+SufCert+" or "+p+SufCertPath+", "+p+SufTokenFile+")")
	case 1:
	default:
		l.Fail(ways[1], l.Optional(ways[1]), "unset, since "+ways[0]+" is set too: "+one)
	}
	with := "a service principal"
	if len(ways) > 0 {
		with = ways[0]
	}
	for _, n := range []string{p + SufTenant, p + SufClient} {
		if !l.IsSet(n) {
			l.Require(n, "required with "+with+" ("+p+SufTenant+" and "+p+SufClient+" name the app registration)")
		}
	}
	return id
}

// certVar is the certificate variable that is set.
func certVar(l *config.Loader, p string) string {
	if l.IsSet(p + SufCert) {
		return p + SufCert
	}
	return p + SufCertPath
}

// loadCertificate reads the client certificate from text or a file.
func (id *Identity) loadCertificate(l *config.Loader) {
	p := id.prefix + "_"
	text, path := l.String(p+SufCert), strings.TrimSpace(l.String(p+SufCertPath))
	password := l.String(p + SufCertPassword)
	name, data := p+SufCert, []byte(text)
	if text != "" && path != "" {
		l.Fail(p+SufCertPath, path, "unset when "+p+SufCert+" is set (give the certificate one way)")
		path = ""
	}
	switch {
	case path != "":
		b, err := os.ReadFile(path)
		if err != nil {
			l.Fail(p+SufCertPath, path, "the path of a readable PEM or PFX file ("+err.Error()+")")
			return
		}
		name, data = p+SufCertPath, b
	case text == "":
		if password != "" {
			l.Fail(p+SufCertPassword, password, "unset unless "+p+SufCert+" or "+p+SufCertPath+" is set")
		}
		return
	}
	if !bytes.Contains(data, []byte("-----BEGIN")) {
		// A PFX given as base64 text (binary cannot travel in a variable).
		if b, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(data), nil))); err == nil {
			data = b
		}
	}
	certs, key, err := azidentity.ParseCertificates(data, []byte(password))
	if err != nil {
		l.Fail(name, l.Optional(name), "a PEM certificate with its private key, or a PFX file (base64 when given as text), with "+
			p+SufCertPassword+" if it has a password: "+err.Error())
		return
	}
	// Microsoft Entra's client assertions are signed with RSA.
	if _, ok := key.(*rsa.PrivateKey); !ok {
		l.Fail(name, l.Optional(name), fmt.Sprintf("a certificate with an RSA private key (Microsoft Entra takes RSA assertions), not %T", key))
		return
	}
	id.certs, id.key = certs, key
}

// LoadRoots reads the PEM file of CA certificates path, the value of the
// variable name, into a pool with the system's roots; a problem fails name.
func LoadRoots(l *config.Loader, name, path string) *x509.CertPool {
	b, err := os.ReadFile(path)
	if err != nil {
		l.Fail(name, path, "the path of a readable PEM file of CA certificates ("+err.Error()+")")
		return nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		l.Fail(name, path, "a PEM file with at least one CERTIFICATE block")
		return nil
	}
	return pool
}

// Secrets are the identity's values that must never be printed.
func (id *Identity) Secrets() []string {
	if id.secret == "" {
		return nil
	}
	return []string{id.secret}
}

// TLSConfig is the TLS configuration for the destination and Entra: the
// CA file's roots, if any.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: id.Roots}
}

// String describes the identity for messages and check, never a secret.
func (id *Identity) String() string {
	var s string
	switch id.Kind {
	case KindSecret:
		s = "client secret of client " + id.Client
	case KindCertificate:
		s = "client certificate of client " + id.Client
		if len(id.certs) > 0 {
			sum := sha1.Sum(id.certs[0].Raw)
			s += fmt.Sprintf(" (subject %q, thumbprint %s, expires %s)", id.certs[0].Subject.String(),
				strings.ToUpper(hex.EncodeToString(sum[:])), id.certs[0].NotAfter.UTC().Format("2006-01-02"))
		}
	case KindTokenFile:
		s = "federated token file " + id.tokenFile + " of client " + id.Client
	}
	return s + " in tenant " + id.Tenant + " at " + id.AuthorityHost()
}

// GoString is String, for %#v.
func (id *Identity) GoString() string { return id.String() }

// AuthorityHost is the authority host in use.
func (id *Identity) AuthorityHost() string {
	if id.Authority != "" {
		return id.Authority
	}
	if a := os.Getenv("AZURE_AUTHORITY_HOST"); a != "" {
		return a
	}
	return string(cloud.AzurePublic.ActiveDirectoryAuthorityHost)
}

// Credential builds the identity's credential. o is the service's client
// options; the authority host and, with a CA file, a transport trusting it
// are set here. Nothing is sent: errors are configuration problems.
func (id *Identity) Credential(o azcore.ClientOptions) (azcore.TokenCredential, error) {
	if id.Authority != "" {
		o.Cloud = cloud.Configuration{ActiveDirectoryAuthorityHost: id.Authority}
	}
	if id.Roots != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = id.TLSConfig()
		o.Transport = &http.Client{Transport: t}
	}
	var (
		cred azcore.TokenCredential
		err  error
	)
	// Instance discovery asks the public cloud whether the authority is
	// known: an extra round trip at start, and a long hang for any other
	// authority (Azure Stack). The authority is the operator's own setting.
	switch id.Kind {
	case KindSecret:
		cred, err = azidentity.NewClientSecretCredential(id.Tenant, id.Client, id.secret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: o, DisableInstanceDiscovery: true})
	case KindCertificate:
		cred, err = azidentity.NewClientCertificateCredential(id.Tenant, id.Client, id.certs, id.key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: o, DisableInstanceDiscovery: true})
	case KindTokenFile:
		// WorkloadIdentityCredential keeps a token it read for ten minutes;
		// reading the file each time a new Entra token is needed takes a
		// rotated file at once.
		path := id.tokenFile
		cred, err = azidentity.NewClientAssertionCredential(id.Tenant, id.Client, func(context.Context) (string, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return "", fmt.Errorf("reading the federated token file: %w", err)
			}
			if t := strings.TrimSpace(string(b)); t != "" {
				return t, nil
			}
			return "", fmt.Errorf("the federated token file %s is empty", path)
		}, &azidentity.ClientAssertionCredentialOptions{ClientOptions: o, DisableInstanceDiscovery: true})
	default:
		return nil, fmt.Errorf("no identity configured")
	}
	if err != nil {
		return nil, err
	}
	return &described{inner: cred, id: id}, nil
}

// described names the endpoint and the identity in errors getting a token.
type described struct {
	inner azcore.TokenCredential
	id    *Identity
}

func (d *described) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tk, err := d.inner.GetToken(ctx, o)
	if err != nil {
		return tk, &TokenError{Identity: d.id.String(), Err: err}
	}
	return tk, nil
}

// TokenError is a failure to get a token from Microsoft Entra: the
// endpoint down or unreachable, or the identity refused. It never holds a
// token or a secret (azidentity's messages hold neither).
type TokenError struct {
	Identity string // Identity.String()
	Err      error
}

func (e *TokenError) Error() string {
	if msg, ok := Refusal(e.Err); ok {
		return "Microsoft Entra refused a token to the " + e.Identity + ": " + msg
	}
	return "no token from Microsoft Entra for the " + e.Identity + ": " + OneLine(e.Err.Error())
}

// Refused reports whether Entra answered and refused the identity (a wrong
// secret, an unknown client, an assertion it does not accept), as opposed
// to not answering at all.
func (e *TokenError) Refused() bool {
	_, ok := Refusal(e.Err)
	return ok
}

// Refusal describes Entra's refusal in one line, reporting whether err is
// one (azidentity's AuthenticationFailedError with Entra's answer): the
// status, the error code and the first line of its description (trace and
// correlation ids follow it).
func Refusal(err error) (string, bool) {
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) || af.RawResponse == nil {
		return "", false
	}
	r := af.RawResponse
	msg := fmt.Sprintf("%d", r.StatusCode)
	if body, err := runtime.Payload(r); err == nil {
		var x struct {
			Error string `json:"error"`
			Desc  string `json:"error_description"`
		}
		if json.Unmarshal(body, &x) == nil && x.Error != "" {
			desc, _, _ := strings.Cut(strings.ReplaceAll(x.Desc, "\r\n", "\n"), "\n")
			msg += " " + x.Error + ": " + desc
		}
	}
	return msg, true
}

func (e *TokenError) Unwrap() error { return e.Err }

// OneLine joins a multi-line message with "; ", dropping azidentity's
// separator lines and its link to the troubleshooting guide.
func OneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if i := strings.Index(l, "To troubleshoot, visit"); i >= 0 {
			l = strings.TrimSpace(l[:i])
		}
		if l == "" || strings.Trim(l, "-") == "" {
			continue
		}
		parts = append(parts, l)
	}
	return strings.Join(parts, "; ")
}

// Unused records, for a service not authenticating with a service
// principal, each of the principal's own settings that is set anyway (a
// PFX password, an authority host, a CA file): a mistake to report, not
// to ignore.
func Unused(l *config.Loader, prefix string) {
	p := prefix + "_"
	for _, s := range []string{SufCertPassword, SufAuthority, SufCAFile} {
		if l.IsSet(p + s) {
			l.Fail(p+s, l.Optional(p+s), "unset unless a service principal is configured ("+p+SufTenant+", "+p+SufClient+
				" and a credential): it only applies to that")
		}
	}
}
