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

// The credential types the client libraries accept from JSON
// (option.ServiceAccount, AuthorizedUser, ImpersonatedServiceAccount,
// ExternalAccount).
var types = []string{ServiceAccount, "authorized_user", "impersonated_service_account", "external_account"}

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
			Doc: "Instead of the key fields: a whole credentials JSON (service account key file, or another type the Google client libraries take) in one variable."},
		{Name: AppCredentials,
			Doc: "Instead of the variables above: path of a credentials JSON file. With none of them, the platform's default credentials are used (on Google Cloud, the attached service account)."},
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
	email, key := strings.TrimSpace(l.String(emailVar)), l.String(keyVar)
	whole := l.String(jsonVar)
	switch {
	case email != "" || key != "":
		if whole != "" {
			l.Fail(jsonVar, whole, "unset when "+emailVar+" and "+keyVar+" are set: give the service account one way only")
		}
		c.Type = l.Enum(typeVar, ServiceAccount)
		c.Source = emailVar + " and " + keyVar
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
		c.load(l, jsonVar, []byte(whole), "")
	case l.IsSet(AppCredentials):
		path := l.String(AppCredentials)
		c.Source = AppCredentials
		data, err := os.ReadFile(path)
		if err != nil {
			l.Fail(AppCredentials, path, "the path of a readable credentials JSON file ("+err.Error()+")")
			break
		}
		c.load(l, AppCredentials, data, " in the file")
	default:
		c.Source = "the platform's default credentials"
	}
	return c
}

// load validates a credentials JSON given whole and keeps it.
func (c *Credentials) load(l *config.Loader, name string, data []byte, where string) {
	var f struct {
		Type        string `json:"type"`
		ProjectID   string `json:"project_id"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		// The JSON error names an offset, never the content: safe for a secret.
		l.Fail(name, string(data), "a credentials JSON object"+where+" ("+err.Error()+")")
		return
	}
	known := false
	for _, t := range types {
		known = known || f.Type == t
	}
	if !known {
		l.Fail(name, string(data), fmt.Sprintf("a credentials JSON%s whose \"type\" is one of %s (got %q)", where, strings.Join(types, ", "), f.Type))
		return
	}
	if f.Type == ServiceAccount {
		if f.ClientEmail == "" || f.PrivateKey == "" {
			l.Fail(name, string(data), "a service account key"+where+" with \"client_email\" and \"private_key\"")
			return
		}
		if err := checkKey(f.PrivateKey); err != nil {
			l.Fail(name, string(data), "a service account key"+where+" whose \"private_key\" is a PEM private key: "+err.Error())
			return
		}
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
