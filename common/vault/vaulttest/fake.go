// Package vaulttest is an in-process fake of Microsoft Entra and Azure Key
// Vault over TLS, answering the real azidentity and azsecrets SDKs, so any
// package's tests can take configuration from a vault: New starts one, Env
// (or CertificateEnv) gives the variables pointing a service at it, and
// RunAllFromVault proves that every variable of a service can come from it.
//
// The fake does what the SDKs rely on: the OpenID configuration and token
// endpoints of a tenant (client secret, a certificate-signed client
// assertion checked against the registered certificate, or a workload
// identity's federated token), App Service's managed identity endpoint,
// and Key Vault's
// GET /secrets/{name} with its 401 challenge, 403, 404 SecretNotFound and
// injected transient faults.
package vaulttest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/vault"
)

// clientPFX is the registered client certificate with its RSA key, a
// PKCS#12 file (legacy SHA1/3DES, as Windows and azidentity read it)
// protected by PFXPassword; made with openssl for these tests only.
//
//go:embed certs/client.pfx
var clientPFX []byte

// PFXPassword protects the client certificate's PFX.
const PFXPassword = "vaulttest"

// vaultResource is the resource Key Vault's challenge names (the scope of
// the token the SDK then asks for).
const vaultResource = "https://vault.azure.net"

// Vault is a running fake.
type Vault struct {
	// TenantID and ClientID identify the one registered service principal.
	TenantID, ClientID string
	// ClientSecret is its secret; its certificate is CertificateEnv's.
	ClientSecret string

	entra, kv *httptest.Server
	dir       string
	caFile    string
	cert      *x509.Certificate
	certPEM   string

	// federated is the workload identity's service account token;
	// identityHeader the secret App Service's managed identity endpoint checks.
	federated, identityHeader string

	mu         sync.Mutex
	secrets    map[string]string // secret name -> value
	versions   map[string]int
	forbidden  map[string]bool
	forbidAll  bool
	failures   int
	failStatus int
	gets       int
	tokensMade int
	inFlight   int
	maxFlight  int
}

// New starts a fake Entra and Key Vault, stopped when the test ends.
func New(t testing.TB) *Vault {
	t.Helper()
	certs, key, err := azidentity.ParseCertificates(clientPFX, []byte(PFXPassword))
	if err != nil {
		t.Fatalf("vaulttest: client certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("vaulttest: client key: %v", err)
	}
	v := &Vault{
		TenantID:       "72f988bf-0000-4000-8000-00000000c10d",
		ClientID:       "c10c0b10-0000-4000-8000-0000000c1e47",
		ClientSecret:   "client-secret-" + randomHex(12),
		federated:      "federated-token-" + randomHex(12),
		identityHeader: "identity-header-" + randomHex(12),
		dir:            t.TempDir(),
		cert:           certs[0],
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})) +
			string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		secrets:   map[string]string{},
		versions:  map[string]int{},
		forbidden: map[string]bool{},
	}
	v.entra = startTLS(v.serveEntra)
	v.kv = startTLS(v.serveVault)
	t.Cleanup(v.Close)
	// Both servers present httptest's one certificate: trusting it is enough.
	v.caFile = filepath.Join(v.dir, "ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: v.kv.Certificate().Raw})
	if err := os.WriteFile(v.caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

// Close stops both servers: the vault and Entra become unreachable.
func (v *Vault) Close() {
	v.kv.Close()
	v.entra.Close()
}

// URL is the vault's URL.
func (v *Vault) URL() string { return v.kv.URL + "/" }

// Env points a service at the vault with the client secret credential.
func (v *Vault) Env() map[string]string {
	return map[string]string{
		vault.VarURL:       v.URL(),
		vault.VarTenant:    v.TenantID,
		vault.VarClient:    v.ClientID,
		vault.VarSecret:    v.ClientSecret,
		vault.VarAuthority: v.entra.URL + "/",
		vault.VarCAFile:    v.caFile,
	}
}

// CertForm is how CertificateEnv gives the client certificate.
type CertForm int

// Forms of the client certificate.
const (
	// PEMText: PEM text in AZURE_VAULT_CLIENT_CERTIFICATE, on one line with
	// literal \n, as in a compose file.
	PEMText CertForm = iota + 1
	// PFXText: base64 of the PFX in AZURE_VAULT_CLIENT_CERTIFICATE, with its password.
	PFXText
	// PFXFile: the PFX's path in AZURE_VAULT_CLIENT_CERTIFICATE_PATH, with its password.
	PFXFile
	// PEMFile: a PEM file's path in AZURE_VAULT_CLIENT_CERTIFICATE_PATH.
	PEMFile
)

// CertificateEnv points a service at the vault with the client certificate
// credential in the given form.
func (v *Vault) CertificateEnv(t testing.TB, form CertForm) map[string]string {
	t.Helper()
	env := v.Env()
	delete(env, vault.VarSecret)
	write := func(name string, data []byte) string {
		p := filepath.Join(v.dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	switch form {
	case PEMText:
		env[vault.VarCert] = strings.ReplaceAll(v.certPEM, "\n", `\n`)
	case PFXText:
		env[vault.VarCert] = base64.StdEncoding.EncodeToString(clientPFX)
		env[vault.VarCertPassword] = PFXPassword
	case PFXFile:
		env[vault.VarCertPath] = write("client.pfx", clientPFX)
		env[vault.VarCertPassword] = PFXPassword
	case PEMFile:
		env[vault.VarCertPath] = write("client.pem", []byte(v.certPEM))
	default:
		t.Fatalf("vaulttest: unknown certificate form %d", form)
	}
	return env
}

// WorkloadIdentityEnv points a service at the vault with no credential of
// its own, on a platform with workload identity (as AKS sets it up): it
// writes a service account token and sets AZURE_FEDERATED_TOKEN_FILE in the
// process environment for the test, where azidentity reads it.
func (v *Vault) WorkloadIdentityEnv(t *testing.T) map[string]string {
	t.Helper()
	p := filepath.Join(v.dir, "federated-token")
	if err := os.WriteFile(p, []byte(v.federated), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", p)
	env := v.Env()
	delete(env, vault.VarSecret)
	return env
}

// ManagedIdentityEnv points a service at the vault with no credential of
// its own, on a platform with a managed identity: it sets App Service's
// IDENTITY_ENDPOINT and IDENTITY_HEADER in the process environment for the
// test, where azidentity reads them, with the fake as the endpoint. With
// userAssigned, AZURE_VAULT_CLIENT_ID names the identity.
func (v *Vault) ManagedIdentityEnv(t *testing.T, userAssigned bool) map[string]string {
	t.Helper()
	t.Setenv("IDENTITY_ENDPOINT", v.entra.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", v.identityHeader)
	env := map[string]string{vault.VarURL: v.URL(), vault.VarCAFile: v.caFile}
	if userAssigned {
		env[vault.VarClient] = v.ClientID
	}
	return env
}

// Lookup turns a map into a config.Lookup that, like config.Env, treats an
// empty value as unset.
func Lookup(env map[string]string) config.Lookup {
	return func(name string) (string, bool) {
		v := env[name]
		return v, v != ""
	}
}

// SetSecret stores a new version of a secret. name may be the secret's
// name or the variable's (AWS_SQS_QUEUE_NAME is stored as aws-sqs-queue-name).
func (v *Vault) SetSecret(name, value string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := vault.SecretName(name)
	v.secrets[n] = value
	v.versions[n]++
}

// DeleteSecret removes a secret (name as for SetSecret).
func (v *Vault) DeleteSecret(name string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.secrets, vault.SecretName(name))
}

// Forbid refuses the service principal Get on the named secrets (names as
// for SetSecret), or on every secret when none is named.
func (v *Vault) Forbid(names ...string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(names) == 0 {
		v.forbidAll = true
	}
	for _, n := range names {
		v.forbidden[vault.SecretName(n)] = true
	}
}

// FailNext answers the next n authorised secret requests with status (a
// transient fault such as 503 or 429, which the SDK retries).
func (v *Vault) FailNext(n, status int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.failures, v.failStatus = n, status
}

// Gets counts the secret requests answered with a secret or not found.
func (v *Vault) Gets() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gets
}

// MaxInFlight is the most secret requests the vault served at once.
func (v *Vault) MaxInFlight() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.maxFlight
}

// Tokens counts the access tokens Entra issued.
func (v *Vault) Tokens() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.tokensMade
}

// --- Microsoft Entra -----------------------------------------------------

var (
	oidcPath  = regexp.MustCompile(`^/([^/]+)/v2\.0/\.well-known/openid-configuration$`)
	tokenPath = regexp.MustCompile(`^/([^/]+)/oauth2/v2\.0/token$`)
)

func (v *Vault) serveEntra(w http.ResponseWriter, r *http.Request) {
	if m := oidcPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodGet {
		if m[1] != v.TenantID {
			entraError(w, http.StatusBadRequest, "invalid_tenant", "AADSTS90002: Tenant '"+m[1]+"' not found.")
			return
		}
		base := v.entra.URL + "/" + v.TenantID
		writeJSON(w, http.StatusOK, map[string]any{
			"token_endpoint":         base + "/oauth2/v2.0/token",
			"authorization_endpoint": base + "/oauth2/v2.0/authorize",
			"issuer":                 base + "/v2.0",
		})
		return
	}
	if m := tokenPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodPost {
		v.token(w, r, m[1])
		return
	}
	if r.URL.Path == "/msi/token" && r.Method == http.MethodGet {
		v.managedIdentity(w, r)
		return
	}
	http.NotFound(w, r)
}

// managedIdentity answers App Service's managed identity endpoint: the
// system-assigned identity, or the user-assigned one named by client_id.
func (v *Vault) managedIdentity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch {
	case r.Header.Get("X-IDENTITY-HEADER") != v.identityHeader:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_header"})
		return
	case q.Get("resource") != vaultResource:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_resource"})
		return
	case q.Has("client_id") && q.Get("client_id") != v.ClientID:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request", "error_description": "no identity " + q.Get("client_id")})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": v.issue(), "token_type": "Bearer", "resource": vaultResource,
		"expires_on": fmt.Sprint(time.Now().Add(time.Hour).Unix()),
	})
}

// issued holds the access tokens of every fake in the process: azidentity
// caches managed identity tokens per process, so a later test's fake must
// accept a token an earlier one issued, as Key Vault would until it expires.
var issued sync.Map

// issue makes an access token the vault accepts.
func (v *Vault) issue() string {
	tok := randomHex(24)
	issued.Store(tok, true)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.tokensMade++
	return tok
}

// token answers the client credentials grant.
func (v *Vault) token(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := r.ParseForm(); err != nil {
		entraError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed request.")
		return
	}
	f := r.PostForm
	switch {
	case tenant != v.TenantID:
		entraError(w, http.StatusBadRequest, "invalid_tenant", "AADSTS90002: Tenant '"+tenant+"' not found.")
		return
	case f.Get("grant_type") != "client_credentials":
		entraError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
		return
	case f.Get("client_id") != v.ClientID:
		entraError(w, http.StatusBadRequest, "unauthorized_client", "AADSTS700016: Application with identifier '"+f.Get("client_id")+"' was not found in the directory.")
		return
	case !slices.Contains(strings.Fields(f.Get("scope")), vaultResource+"/.default"):
		entraError(w, http.StatusBadRequest, "invalid_scope", "AADSTS70011: The provided value for scope is not valid.")
		return
	}
	switch {
	case f.Has("client_secret"):
		if subtle.ConstantTimeCompare([]byte(f.Get("client_secret")), []byte(v.ClientSecret)) != 1 {
			entraError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
			return
		}
	case f.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" &&
		f.Get("client_assertion") == v.federated:
		// A workload identity's service account token, trusted by federation.
	case f.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
		if err := v.checkAssertion(f.Get("client_assertion"), v.entra.URL+r.URL.Path); err != nil {
			entraError(w, http.StatusUnauthorized, "invalid_client", "AADSTS700027: Client assertion failed signature validation: "+err.Error())
			return
		}
	default:
		entraError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000218: The request body must contain the parameter 'client_assertion' or 'client_secret'.")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": v.issue(),
	})
}

// checkAssertion verifies a client assertion JWT: signed (PS256 or RS256)
// by the registered certificate's key, naming it by thumbprint, addressed
// to the token endpoint, issued by the client and not expired.
func (v *Vault) checkAssertion(jwt, audience string) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT")
	}
	var header struct {
		Alg     string `json:"alg"`
		X5t     string `json:"x5t"`
		X5tS256 string `json:"x5t#S256"`
	}
	var claims struct {
		Aud string      `json:"aud"`
		Iss string      `json:"iss"`
		Sub string      `json:"sub"`
		Exp json.Number `json:"exp"`
	}
	if err := decodeSegment(parts[0], &header); err != nil {
		return err
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return err
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	pub, ok := v.cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("registered certificate has no RSA key")
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	thumb := sha256.Sum256(v.cert.Raw)
	switch header.Alg {
	case "PS256":
		if header.X5tS256 != base64.StdEncoding.EncodeToString(thumb[:]) {
			return fmt.Errorf("unknown certificate thumbprint")
		}
		err = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	case "RS256":
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
	default:
		return fmt.Errorf("algorithm %q", header.Alg)
	}
	if err != nil {
		return fmt.Errorf("bad signature")
	}
	exp, _ := claims.Exp.Int64()
	switch {
	case claims.Aud != audience:
		return fmt.Errorf("audience %q", claims.Aud)
	case claims.Iss != v.ClientID || claims.Sub != v.ClientID:
		return fmt.Errorf("issuer %q", claims.Iss)
	case time.Unix(exp, 0).Before(time.Now()):
		return fmt.Errorf("expired")
	}
	return nil
}

func decodeSegment(s string, into any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	return d.Decode(into)
}

func entraError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]any{
		"error":             code,
		"error_description": desc + "\r\nTrace ID: " + randomHex(8) + "\r\nCorrelation ID: " + randomHex(8),
	})
}

// --- Key Vault -----------------------------------------------------------

var (
	secretPath = regexp.MustCompile(`^/secrets/([^/]+)(/[^/]*)?$`)
	secretName = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
)

func (v *Vault) serveVault(w http.ResponseWriter, r *http.Request) {
	m := secretPath.FindStringSubmatch(r.URL.Path)
	if m == nil || r.Method != http.MethodGet {
		vaultError(w, http.StatusNotFound, "NotFound", "The requested operation is not supported by this fake.")
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		vaultError(w, http.StatusBadRequest, "BadParameter", "The api-version query parameter is required.")
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if _, valid := issued.Load(tok); !valid {
		// The challenge tells the SDK which tenant and resource to get a token for.
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, v.entra.URL, v.TenantID, vaultResource))
		vaultError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	v.mu.Lock()
	v.inFlight++
	v.maxFlight = max(v.maxFlight, v.inFlight)
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.inFlight--
		v.mu.Unlock()
	}()
	// Long enough for the requests a client sends at once to overlap here.
	time.Sleep(time.Millisecond)
	name := strings.ToLower(m[1])
	if !secretName.MatchString(name) {
		vaultError(w, http.StatusBadRequest, "BadParameter", "The secret name is invalid.")
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	switch value, ok := v.secrets[name]; {
	case v.failures > 0:
		v.failures--
		vaultError(w, v.failStatus, http.StatusText(v.failStatus), "Injected transient fault.")
	case v.forbidAll || v.forbidden[name]:
		vaultError(w, http.StatusForbidden, "Forbidden",
			"The user, group or application 'appid="+v.ClientID+"' does not have secrets get permission on key vault 'fake;location=westeurope'.")
	case !ok:
		v.gets++
		vaultError(w, http.StatusNotFound, "SecretNotFound", "A secret with (name/id) "+name+" was not found in this key vault.")
	default:
		v.gets++
		now := time.Now().Unix()
		writeJSON(w, http.StatusOK, map[string]any{
			"value":      value,
			"id":         fmt.Sprintf("%s/secrets/%s/%032x", v.kv.URL, name, v.versions[name]),
			"attributes": map[string]any{"enabled": true, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"},
		})
	}
}

// startTLS serves h over TLS with httptest's certificate, without logging
// the handshakes that tests of untrusted certificates make fail.
func startTLS(h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	// One connection for the concurrent requests, as with Azure's front
	// ends: a load costs one handshake, not one per request in flight.
	srv.EnableHTTP2 = true
	srv.StartTLS()
	return srv
}

func vaultError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
