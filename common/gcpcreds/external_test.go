package gcpcreds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deviceCert writes a self-signed certificate and its key, and a
// certificate configuration naming them, as create-cred-config makes it.
func deviceCert(t *testing.T, dir string) (config, certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "device-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, "device.pem"), filepath.Join(dir, "device.key")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	config = filepath.Join(dir, "certificate_config.json")
	writeJSON(t, config, map[string]any{"cert_configs": map[string]any{"workload": map[string]string{"cert_path": certPath, "key_path": keyPath}}})
	return config, certPath, keyPath
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

const audience = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/devices/providers/x509"

func extJSON(source map[string]any, extra map[string]any) map[string]any {
	m := map[string]any{"type": "external_account", "audience": audience,
		"subject_token_type": "urn:ietf:params:oauth:token-type:mtls", "token_url": "https://sts.mtls.googleapis.com/v1/token",
		"credential_source": source}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return m
}

func TestExternalAccountAccepted(t *testing.T) {
	dir := t.TempDir()
	config, certPath, _ := deviceCert(t, dir)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("subject-token"), 0o600)
	for _, tc := range []struct {
		name     string
		js       map[string]any
		env      map[string]string
		identity string
		tokenURL string
	}{
		{"x509 in GOOGLE_APPLICATION_CREDENTIALS",
			extJSON(map[string]any{"certificate": map[string]any{"certificate_config_location": config}}, nil), nil,
			"workload identity federation: X.509 certificate " + certPath + " (mutual TLS) exchanged at https://sts.mtls.googleapis.com/v1/token",
			"https://sts.mtls.googleapis.com/v1/token"},
		{"x509, the default configuration",
			extJSON(map[string]any{"certificate": map[string]any{"use_default_certificate_config": true}}, nil),
			map[string]string{"GOOGLE_API_CERTIFICATE_CONFIG": config},
			"workload identity federation: X.509 certificate " + certPath + " (mutual TLS) exchanged at https://sts.mtls.googleapis.com/v1/token",
			"https://sts.mtls.googleapis.com/v1/token"},
		{"token file, default STS, impersonating",
			extJSON(map[string]any{"file": tokenFile}, map[string]any{"token_url": nil, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
				"service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/block@p.iam.gserviceaccount.com:generateAccessToken"}), nil,
			"workload identity federation: subject token file " + tokenFile + " exchanged at https://sts.googleapis.com/v1/token, impersonating block@p.iam.gserviceaccount.com",
			"https://sts.googleapis.com/v1/token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "creds.json")
			writeJSON(t, path, tc.js)
			env := map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": path}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := load(env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Type != ExternalAccount || c.Identity != tc.identity || c.TokenURL != tc.tokenURL || c.JSON == nil {
				t.Errorf("got type %q identity %q token URL %q", c.Type, c.Identity, c.TokenURL)
			}
			// The same in the variable.
			b, _ := json.Marshal(tc.js)
			env = map[string]string{"GCP_X_CREDENTIALS_JSON": string(b)}
			for k, v := range tc.env {
				env[k] = v
			}
			if c, err := load(env); err != nil || c.Identity != tc.identity {
				t.Errorf("in GCP_X_CREDENTIALS_JSON: %v, %q", err, c.Identity)
			}
		})
	}
}

func TestExternalAccountRejected(t *testing.T) {
	dir := t.TempDir()
	config, certPath, _ := deviceCert(t, dir)
	_, _, otherKey := deviceCert(t, t.TempDir())
	mismatched := filepath.Join(dir, "mismatched.json")
	writeJSON(t, mismatched, map[string]any{"cert_configs": map[string]any{"workload": map[string]string{"cert_path": certPath, "key_path": otherKey}}})
	noWorkload := filepath.Join(dir, "noworkload.json")
	writeJSON(t, noWorkload, map[string]any{"cert_configs": map[string]any{}})
	missing := filepath.Join(dir, "missing")
	cert := func(m map[string]any) map[string]any { return map[string]any{"certificate": m} }
	const pre = "an external_account configuration in the file (workload identity federation) "
	for _, tc := range []struct {
		js   map[string]any
		want string
	}{
		{extJSON(cert(map[string]any{"certificate_config_location": config}), map[string]any{"audience": ""}),
			pre + `with "audience", the workload identity pool provider (//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>)`},
		{extJSON(cert(map[string]any{"certificate_config_location": config}), map[string]any{"subject_token_type": nil}),
			pre + `with "subject_token_type" (urn:ietf:params:oauth:token-type:mtls for a certificate, :jwt or :id_token for a token file)`},
		{extJSON(cert(map[string]any{"certificate_config_location": config}), map[string]any{"token_url": "http://sts.example.com/v1/token"}),
			pre + `whose "token_url" is an https:// URL, the token endpoint (got "http://sts.example.com/v1/token")`},
		{extJSON(nil, map[string]any{"credential_source": nil}),
			pre + `with a "credential_source" (a "certificate" or a subject token "file")`},
		{extJSON(map[string]any{"file": missing, "certificate": map[string]any{"certificate_config_location": config}}, nil),
			pre + `whose "credential_source" names exactly one of certificate, file, url, executable, environment_id (got 2)`},
		{extJSON(cert(map[string]any{}), nil),
			pre + "whose credential_source.certificate sets certificate_config_location (or use_default_certificate_config with GOOGLE_API_CERTIFICATE_CONFIG)"},
		{extJSON(cert(map[string]any{"certificate_config_location": config, "use_default_certificate_config": true}), nil),
			pre + "whose credential_source.certificate sets certificate_config_location or use_default_certificate_config, not both"},
		{extJSON(cert(map[string]any{"certificate_config_location": missing}), nil),
			pre + "whose credential_source.certificate works: the certificate configuration cannot be read (open " + missing + ": no such file or directory)"},
		{extJSON(cert(map[string]any{"certificate_config_location": noWorkload}), nil),
			pre + "whose credential_source.certificate works: the certificate configuration " + noWorkload + " names no cert_configs.workload.cert_path and key_path"},
		{extJSON(cert(map[string]any{"certificate_config_location": mismatched}), nil),
			pre + "whose credential_source.certificate works: the certificate " + certPath + " and key " + otherKey + " named by " + mismatched + " do not load as a pair (tls: private key does not match public key)"},
		{extJSON(cert(map[string]any{"certificate_config_location": config, "trust_chain_path": missing}), nil),
			pre + "whose credential_source.certificate.trust_chain_path can be read (open " + missing + ": no such file or directory)"},
		{extJSON(map[string]any{"file": missing}, nil),
			pre + "whose subject token file (credential_source.file) can be read (open " + missing + ": no such file or directory)"},
		{extJSON(cert(map[string]any{"certificate_config_location": config}), map[string]any{"service_account_impersonation_url": "iamcredentials.googleapis.com/x"}),
			pre + `whose "service_account_impersonation_url" is an https:// URL (got "iamcredentials.googleapis.com/x")`},
	} {
		path := filepath.Join(t.TempDir(), "creds.json")
		writeJSON(t, path, tc.js)
		_, err := load(map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": path})
		// The variable and its value (the path, never the file's content).
		want := "GOOGLE_APPLICATION_CREDENTIALS=\"" + path + "\" is invalid: want " + tc.want
		if err == nil || err.Error() != want {
			t.Errorf("\n got %v\nwant %s", err, want)
		}
	}
	// The default certificate configuration is checked under its own name.
	path := filepath.Join(t.TempDir(), "creds.json")
	writeJSON(t, path, extJSON(cert(map[string]any{"use_default_certificate_config": true}), nil))
	_, err := load(map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": path, "GOOGLE_API_CERTIFICATE_CONFIG": mismatched})
	want := `GOOGLE_API_CERTIFICATE_CONFIG="` + mismatched + `" is invalid: want the path of a certificate configuration whose certificate and key load: the certificate ` + certPath + " and key " + otherKey + " named by " + mismatched + " do not load as a pair (tls: private key does not match public key)"
	if err == nil || err.Error() != want {
		t.Errorf("\n got %v\nwant %s", err, want)
	}
	// In the variable, the value is masked; the reason is the same.
	b, _ := json.Marshal(extJSON(map[string]any{"file": missing}, nil))
	_, err = load(map[string]string{"GCP_X_CREDENTIALS_JSON": string(b)})
	want = "GCP_X_CREDENTIALS_JSON=(secret value not shown) is invalid: want an external_account configuration (workload identity federation) whose subject token file (credential_source.file) can be read (open " + missing + ": no such file or directory)"
	if err == nil || err.Error() != want {
		t.Errorf("\n got %v\nwant %s", err, want)
	}
}

// A key file given by path is never quoted in an error.
func TestFileContentNeverQuoted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key.json")
	os.WriteFile(path, []byte(`{"type":"service_account","client_email":"a@b","private_key":"c2VjcmV0-not-a-key"}`), 0o600)
	_, err := load(map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": path})
	if err == nil || strings.Contains(err.Error(), "c2VjcmV0") || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v", err)
	}
}
