// Package gcpcreds reads the Google Cloud credentials of a destination from
// its variables and turns them into the credentials JSON the Google client
// libraries take, in memory (a private key is never written to disk).
//
// It only builds bytes: common never imports a cloud SDK, so each service
// passes Credentials.JSON to its client itself
// (option.WithAuthCredentialsJSON(option.CredentialsType(c.Type), c.JSON)).
//
// Where the credentials come from, first match wins:
//
//  1. <PREFIX>_CLIENT_EMAIL + <PREFIX>_PRIVATE_KEY (+ <PREFIX>_TYPE,
//     <PREFIX>_PROJECT_ID): the original block's variables, a service account
//     spread over several variables;
//  2. <PREFIX>_CREDENTIALS_JSON: a whole credentials JSON in one variable;
//  3. GOOGLE_APPLICATION_CREDENTIALS: the path of a credentials JSON file;
//  4. none: the client library's defaults (on Google Cloud, the attached
//     service account from the metadata server).
//
// A credentials JSON of type external_account (workload identity
// federation: the device proves itself with an X.509 certificate or a token
// file and gets short-lived access tokens, no service-account key on the
// device) is checked here as far as it can be without the network: the
// fields the client library needs, the certificate and key it will present,
// the token file it will read.
package gcpcreds

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/cloud-block/cloud-block/common/config"
)

// ServiceAccount is the credentials type of a service-account key.
const ServiceAccount = "service_account"

// ExternalAccount is the credentials type of workload identity federation.
const ExternalAccount = "external_account"

// The credential types the client libraries accept from JSON
// (option.ServiceAccount, AuthorizedUser, ImpersonatedServiceAccount,
// ExternalAccount).
var types = []string{ServiceAccount, "authorized_user", "impersonated_service_account", ExternalAccount}

// tokenURI is Google's OAuth 2.0 token endpoint, as in every downloaded key file.
const tokenURI = "https://oauth2.googleapis.com/token"

// AppCredentials is the variable every Google client library reads.
const AppCredentials = "GOOGLE_APPLICATION_CREDENTIALS"

// Vars declares the credential variables of a destination whose prefix is
// e.g. "GCP_PUBSUB": <prefix>_PROJECT_ID, _TYPE, _CLIENT_EMAIL,
// _PRIVATE_KEY, _CREDENTIALS_JSON, and GOOGLE_APPLICATION_CREDENTIALS.
func Vars(prefix string) []config.Var {
	return []config.Var{
		{Name: prefix + "_PROJECT_ID",
			Doc: "Google Cloud project id. Default: the `project_id` of the credentials."},
		{Name: prefix + "_TYPE", Default: ServiceAccount,
			Doc: "Type of the key given in " + prefix + "_CLIENT_EMAIL and " + prefix + "_PRIVATE_KEY (the `type` of the key file); only `service_account`."},
		{Name: prefix + "_CLIENT_EMAIL",
			Doc: "Service account email (`client_email` of the key file). With " + prefix + "_PRIVATE_KEY it is the service account used."},
		{Name: prefix + "_PRIVATE_KEY", Secret: true, Multiline: true,
			Doc: "The service account's PEM private key (`private_key` of the key file); literal `\\n` are turned into newlines. Kept in memory only."},
		{Name: prefix + "_CREDENTIALS_JSON", Secret: true,
			Doc: "Instead of the key fields: a whole credentials JSON (service account key file, or another type the Google client libraries take) in one variable. An `external_account` JSON (workload identity federation: an X.509 certificate or a token file exchanged for short-lived tokens) needs no key on the device; see the README."},
		{Name: AppCredentials,
			Doc: "Instead of the variables above: path of a credentials JSON file (a key file, or an `external_account` configuration from `gcloud iam workload-identity-pools create-cred-config`). With none of them, the platform's default credentials are used (on Google Cloud, the attached service account)."},
		{Name: CertificateConfig,
			Doc: "Path of the certificate configuration (`cert_configs.workload.cert_path` and `key_path`) read by an `external_account` credential whose `credential_source.certificate` sets `use_default_certificate_config` (the Google client libraries' variable; default `~/.config/gcloud/certificate_config.json`). Set in the environment: the client libraries read it there."},
	}
}

// Credentials are what Load found.
type Credentials struct {
	// ProjectID is <prefix>_PROJECT_ID, else the credentials' project_id
	// ("" when neither is known).
	ProjectID string
	// JSON is the credentials JSON; nil means the client library's default
	// credentials.
	JSON []byte
	// Type is the JSON's "type" (service_account, authorized_user, ...).
	Type string
	// Source names where the credentials came from, for the start-up log
	// (variable names only, never values).
	Source string
	// Identity says who the block is to Google, for the start-up log and
	// check: a service account's email, or for workload identity
	// federation the certificate or token file and the token endpoint.
	// Never a secret.
	Identity string
	// TokenURL is an external_account's token endpoint (the STS), "" for
	// other credentials.
	TokenURL string
}

// projectID is a project id's alphabet, optionally domain-scoped (the
// legacy "example.com:my-project"). Google's ids are 6 to 30 characters,
// but emulators take shorter ones ("test"), so length is left to them.
var projectID = regexp.MustCompile(`^([a-z0-9.-]+:)?[a-z][a-z0-9-]{0,62}$`)

// Load reads and validates the variables declared by Vars(prefix),
// recording every problem in l under the variable's name.
func Load(l *config.Loader, prefix string) Credentials {
	emailVar, keyVar, typeVar := prefix+"_CLIENT_EMAIL", prefix+"_PRIVATE_KEY", prefix+"_TYPE"
	jsonVar, projectVar := prefix+"_CREDENTIALS_JSON", prefix+"_PROJECT_ID"
	c := Credentials{ProjectID: strings.TrimSpace(l.String(projectVar))}
	if c.ProjectID != "" && !projectID.MatchString(c.ProjectID) {
		l.Fail(projectVar, c.ProjectID, "a Google Cloud project id: lower-case letters, digits and hyphens, starting with a letter (domain-scoped ids as example.com:my-project)")
		c.ProjectID = ""
	}
	// The client libraries present this certificate to Google's APIs too
	// (mutual TLS), whatever the credentials: checked whenever it is set.
	certConfig := strings.TrimSpace(l.String(CertificateConfig))
	certPath := ""
	if certConfig != "" {
		p, err := checkCertConfig(certConfig)
		if err != nil {
			l.Fail(CertificateConfig, certConfig, "the path of a certificate configuration whose certificate and key load: "+err.Error())
		}
		certPath = p
	}
	email, key := strings.TrimSpace(l.String(emailVar)), l.String(keyVar)
	whole := l.String(jsonVar)
	switch {
	case email != "" || key != "":
		if whole != "" {
			l.Fail(jsonVar, whole, "unset when "+emailVar+" and "+keyVar+" are set: give the service account one way only")
		}
		c.Type = l.Enum(typeVar, ServiceAccount)
		c.Source = emailVar + " and " + keyVar
		c.Identity = "service account " + email
		if email == "" {
			l.Require(emailVar, "required when "+keyVar+" is set")
		} else if !strings.Contains(email, "@") {
			l.Fail(emailVar, email, "a service account email such as name@project.iam.gserviceaccount.com")
		}
		if key == "" {
			l.Require(keyVar, "required when "+emailVar+" is set")
		} else if err := checkKey(key); err != nil {
			l.Fail(keyVar, key, "the service account's PEM private key, -----BEGIN PRIVATE KEY----- ... (literal \\n allowed): "+err.Error())
		}
		c.JSON, _ = json.Marshal(map[string]string{
			"type":         ServiceAccount,
			"project_id":   c.ProjectID,
			"client_email": email,
			"private_key":  key,
			"token_uri":    tokenURI,
		})
	case whole != "":
		c.Source = jsonVar
		c.load(l, jsonVar, whole, []byte(whole), "", certConfig, certPath)
	case l.IsSet(AppCredentials):
		path := l.String(AppCredentials)
		c.Source = AppCredentials
		data, err := os.ReadFile(path)
		if err != nil {
			l.Fail(AppCredentials, path, "the path of a readable credentials JSON file ("+err.Error()+")")
			break
		}
		c.load(l, AppCredentials, path, data, " in the file", certConfig, certPath)
	default:
		c.Source = "the platform's default credentials"
		c.Identity = c.Source
	}
	return c
}

// load validates a credentials JSON given whole and keeps it. value is
// what a problem reports as the variable's value: the JSON itself (a
// secret variable, so masked) or the file's path, never the file's content.
// certConfig is GOOGLE_API_CERTIFICATE_CONFIG and certPath the certificate
// it names ("" if it does not load: reported already).
func (c *Credentials) load(l *config.Loader, name, value string, data []byte, where, certConfig, certPath string) {
	var f struct {
		Type        string `json:"type"`
		ProjectID   string `json:"project_id"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		// The JSON error names an offset, never the content: safe for a secret.
		l.Fail(name, value, "a credentials JSON object"+where+" ("+err.Error()+")")
		return
	}
	known := false
	for _, t := range types {
		known = known || f.Type == t
	}
	if !known {
		l.Fail(name, value, fmt.Sprintf("a credentials JSON%s whose \"type\" is one of %s (got %q)", where, strings.Join(types, ", "), f.Type))
		return
	}
	switch f.Type {
	case ServiceAccount:
		if f.ClientEmail == "" || f.PrivateKey == "" {
			l.Fail(name, value, "a service account key"+where+" with \"client_email\" and \"private_key\"")
			return
		}
		if err := checkKey(f.PrivateKey); err != nil {
			l.Fail(name, value, "a service account key"+where+" whose \"private_key\" is a PEM private key: "+err.Error())
			return
		}
		c.Identity = "service account " + f.ClientEmail
	case ExternalAccount:
		ext, err := parseExternal(data, certConfig, certPath)
		if err != nil {
			l.Fail(name, value, "an external_account configuration"+where+" (workload identity federation) "+err.Error())
			return
		}
		c.Identity, c.TokenURL = ext.identity(), ext.tokenURL
	default:
		c.Identity = f.Type + " credentials"
	}
	c.JSON, c.Type = data, f.Type
	if c.ProjectID == "" {
		c.ProjectID = f.ProjectID
	}
}

// checkKey reports whether s holds a PEM private key the client libraries
// can sign with. Its errors never quote the key.
func checkKey(s string) error {
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return errors.New("no PEM block found")
	}
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		_, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		_, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return fmt.Errorf("PEM block is %q, not a private key", block.Type)
	}
	if err != nil {
		return errors.New("the key inside the PEM block does not parse")
	}
	return nil
}
