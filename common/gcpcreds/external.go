package gcpcreds

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// CertificateConfig is the variable the Google client libraries read for
// the default certificate configuration of an X.509 credential source.
const CertificateConfig = "GOOGLE_API_CERTIFICATE_CONFIG"

// defaultTokenURL is Google's security token service (STS), where an
// external_account without a token_url exchanges its subject token.
const defaultTokenURL = "https://sts.googleapis.com/v1/token"

// external is what the block checks of an external_account configuration,
// the fields the client library (cloud.google.com/go/auth) reads.
type external struct {
	Audience         string `json:"audience"`
	SubjectTokenType string `json:"subject_token_type"`
	TokenURL         string `json:"token_url"`
	ImpersonationURL string `json:"service_account_impersonation_url"`
	CredentialSource *struct {
		File          string `json:"file"`
		URL           string `json:"url"`
		EnvironmentID string `json:"environment_id"`
		Executable    *struct {
			Command string `json:"command"`
		} `json:"executable"`
		Certificate *struct {
			UseDefault     bool   `json:"use_default_certificate_config"`
			Location       string `json:"certificate_config_location"`
			TrustChainPath string `json:"trust_chain_path"`
		} `json:"certificate"`
	} `json:"credential_source"`

	tokenURL string // TokenURL or the default
	source   string // what the device proves itself with, for identity()
	account  string // the impersonated service account, if any
}

// parseExternal checks an external_account configuration. certConfig is
// GOOGLE_API_CERTIFICATE_CONFIG, the default certificate configuration,
// already checked: certPath is its certificate ("" if it does not load).
// Its errors complete "an external_account configuration ... " and never
// quote a file's content.
func parseExternal(data []byte, certConfig, certPath string) (*external, error) {
	var e external
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("(%v)", err)
	}
	if strings.TrimSpace(e.Audience) == "" {
		return nil, errors.New(`with "audience", the workload identity pool provider (//iam.googleapis.com/projects/<number>/locations/global/workloadIdentityPools/<pool>/providers/<provider>)`)
	}
	if strings.TrimSpace(e.SubjectTokenType) == "" {
		return nil, errors.New(`with "subject_token_type" (urn:ietf:params:oauth:token-type:mtls for a certificate, :jwt or :id_token for a token file)`)
	}
	e.tokenURL = defaultTokenURL
	if e.TokenURL != "" {
		if !isHTTPS(e.TokenURL) {
			return nil, fmt.Errorf(`whose "token_url" is an https:// URL, the token endpoint (got %q)`, e.TokenURL)
		}
		e.tokenURL = e.TokenURL
	}
	if e.ImpersonationURL != "" {
		if !isHTTPS(e.ImpersonationURL) {
			return nil, fmt.Errorf(`whose "service_account_impersonation_url" is an https:// URL (got %q)`, e.ImpersonationURL)
		}
		// .../serviceAccounts/<email>:generateAccessToken
		if _, rest, ok := strings.Cut(e.ImpersonationURL, "/serviceAccounts/"); ok {
			e.account, _, _ = strings.Cut(rest, ":")
		}
	}
	cs := e.CredentialSource
	if cs == nil {
		return nil, errors.New(`with a "credential_source" (a "certificate" or a subject token "file")`)
	}
	var named []string
	for name, set := range map[string]bool{"file": cs.File != "", "url": cs.URL != "", "environment_id": cs.EnvironmentID != "",
		"executable": cs.Executable != nil, "certificate": cs.Certificate != nil} {
		if set {
			named = append(named, name)
		}
	}
	if len(named) != 1 {
		return nil, fmt.Errorf(`whose "credential_source" names exactly one of certificate, file, url, executable, environment_id (got %d)`, len(named))
	}
	switch {
	case cs.Certificate != nil:
		c := cs.Certificate
		path := c.Location
		switch {
		case c.UseDefault && path != "":
			return nil, errors.New("whose credential_source.certificate sets certificate_config_location or use_default_certificate_config, not both")
		case c.UseDefault && certConfig != "":
			// Checked with its own variable.
		case c.UseDefault:
			home, _ := os.UserHomeDir()
			path = filepath.Join(home, ".config", "gcloud", "certificate_config.json")
		case path == "":
			return nil, errors.New("whose credential_source.certificate sets certificate_config_location (or use_default_certificate_config with " + CertificateConfig + ")")
		}
		cert := certPath
		if path != "" {
			var err error
			if cert, err = checkCertConfig(path); err != nil {
				return nil, fmt.Errorf("whose credential_source.certificate works: %w", err)
			}
		}
		if c.TrustChainPath != "" {
			if _, err := os.ReadFile(c.TrustChainPath); err != nil {
				return nil, fmt.Errorf("whose credential_source.certificate.trust_chain_path can be read (%v)", err)
			}
		}
		e.source = "X.509 certificate " + cert + " (mutual TLS)"
	case cs.File != "":
		f, err := os.Open(cs.File)
		if err != nil {
			return nil, fmt.Errorf("whose subject token file (credential_source.file) can be read (%v)", err)
		}
		f.Close()
		e.source = "subject token file " + cs.File
	case cs.URL != "":
		if _, err := url.ParseRequestURI(cs.URL); err != nil {
			return nil, fmt.Errorf("whose credential_source.url is a URL (got %q)", cs.URL)
		}
		e.source = "subject token from " + cs.URL
	case cs.Executable != nil:
		e.source = "subject token from an executable"
	default:
		e.source = "AWS credentials (" + cs.EnvironmentID + ")"
	}
	return &e, nil
}

// checkCertConfig reads a certificate configuration as the client library
// does and loads the certificate and key it names; it returns the
// certificate's path.
func checkCertConfig(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("the certificate configuration cannot be read (%v)", err)
	}
	var cfg struct {
		CertConfigs struct {
			Workload *struct {
				CertPath string `json:"cert_path"`
				KeyPath  string `json:"key_path"`
			} `json:"workload"`
		} `json:"cert_configs"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("the certificate configuration %s is not JSON (%v)", path, err)
	}
	w := cfg.CertConfigs.Workload
	if w == nil || w.CertPath == "" || w.KeyPath == "" {
		return "", fmt.Errorf("the certificate configuration %s names no cert_configs.workload.cert_path and key_path", path)
	}
	// The errors of LoadX509KeyPair name what is wrong, never the key.
	if _, err := tls.LoadX509KeyPair(w.CertPath, w.KeyPath); err != nil {
		return "", fmt.Errorf("the certificate %s and key %s named by %s do not load as a pair (%v)", w.CertPath, w.KeyPath, path, err)
	}
	return w.CertPath, nil
}

func isHTTPS(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}

// identity describes the federated identity, for the log and check.
func (e *external) identity() string {
	s := "workload identity federation: " + e.source + " exchanged at " + e.tokenURL
	if e.account != "" {
		s += ", impersonating " + e.account
	}
	return s
}
