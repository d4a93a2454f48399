package gcpcreds

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
)

var (
	keyOnce sync.Once
	keyPEM  string
)

// testKey returns a PEM PKCS#8 RSA key, as in a downloaded key file.
func testKey(t *testing.T) string {
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	})
	return keyPEM
}

func load(env map[string]string) (Credentials, error) {
	l := config.NewLoader(func(n string) (string, bool) { v, ok := env[n]; return v, ok }, Vars("GCP_X"))
	c := Load(l, "GCP_X")
	return c, l.Err()
}

func TestKeyFieldsBecomeServiceAccountJSON(t *testing.T) {
	key := testKey(t)
	// The original block's way: the PEM in one line with literal \n.
	oneLine := strings.ReplaceAll(key, "\n", `\n`)
	c, err := load(map[string]string{
		"GCP_X_PROJECT_ID": "proj", "GCP_X_TYPE": "service_account",
		"GCP_X_CLIENT_EMAIL": "sa@proj.iam.gserviceaccount.com", "GCP_X_PRIVATE_KEY": oneLine,
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(c.JSON, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"type": "service_account", "project_id": "proj", "client_email": "sa@proj.iam.gserviceaccount.com",
		"private_key": key, "token_uri": "https://oauth2.googleapis.com/token"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if c.Type != ServiceAccount || c.ProjectID != "proj" || c.Source != "GCP_X_CLIENT_EMAIL and GCP_X_PRIVATE_KEY" {
		t.Errorf("got %+v", c)
	}
}

func TestWholeJSONAndFile(t *testing.T) {
	key := testKey(t)
	js, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "from-json", "client_email": "a@b", "private_key": key})
	c, err := load(map[string]string{"GCP_X_CREDENTIALS_JSON": string(js)})
	if err != nil {
		t.Fatal(err)
	}
	if string(c.JSON) != string(js) || c.ProjectID != "from-json" || c.Source != "GCP_X_CREDENTIALS_JSON" {
		t.Errorf("got %+v", c)
	}
	// The project variable wins over the file's.
	c, _ = load(map[string]string{"GCP_X_CREDENTIALS_JSON": string(js), "GCP_X_PROJECT_ID": "mine"})
	if c.ProjectID != "mine" {
		t.Errorf("project %q", c.ProjectID)
	}

	path := filepath.Join(t.TempDir(), "key.json")
	user := `{"type":"authorized_user","client_id":"x","client_secret":"y","refresh_token":"z"}`
	os.WriteFile(path, []byte(user), 0o600)
	c, err = load(map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": path})
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != "authorized_user" || string(c.JSON) != user || c.Source != "GOOGLE_APPLICATION_CREDENTIALS" {
		t.Errorf("got %+v", c)
	}

	c, err = load(nil)
	if err != nil || c.JSON != nil || c.Source != "the platform's default credentials" {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestErrorsNameTheVariableNeverTheSecret(t *testing.T) {
	key := testKey(t)
	missing := filepath.Join(t.TempDir(), "nope.json")
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"GCP_X_CLIENT_EMAIL": "sa@p.iam.gserviceaccount.com"},
			"GCP_X_PRIVATE_KEY is not set: required when GCP_X_CLIENT_EMAIL is set"},
		{map[string]string{"GCP_X_PRIVATE_KEY": key},
			"GCP_X_CLIENT_EMAIL is not set: required when GCP_X_PRIVATE_KEY is set"},
		{map[string]string{"GCP_X_CLIENT_EMAIL": "sa", "GCP_X_PRIVATE_KEY": key},
			`GCP_X_CLIENT_EMAIL="sa" is invalid: want a service account email such as name@project.iam.gserviceaccount.com`},
		{map[string]string{"GCP_X_CLIENT_EMAIL": "sa@p", "GCP_X_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"},
			`GCP_X_PRIVATE_KEY=(secret value not shown) is invalid: want the service account's PEM private key, -----BEGIN PRIVATE KEY----- ... (literal \n allowed): the key inside the PEM block does not parse`},
		{map[string]string{"GCP_X_CLIENT_EMAIL": "sa@p", "GCP_X_PRIVATE_KEY": "secret-but-not-pem"},
			`GCP_X_PRIVATE_KEY=(secret value not shown) is invalid: want the service account's PEM private key, -----BEGIN PRIVATE KEY----- ... (literal \n allowed): no PEM block found`},
		{map[string]string{"GCP_X_CLIENT_EMAIL": "sa@p", "GCP_X_PRIVATE_KEY": key, "GCP_X_TYPE": "authorized_user"},
			`GCP_X_TYPE="authorized_user" is invalid: want one of service_account`},
		{map[string]string{"GCP_X_CLIENT_EMAIL": "sa@p", "GCP_X_PRIVATE_KEY": key, "GCP_X_CREDENTIALS_JSON": "{}"},
			"GCP_X_CREDENTIALS_JSON=(secret value not shown) is invalid: want unset when GCP_X_CLIENT_EMAIL and GCP_X_PRIVATE_KEY are set: give the service account one way only"},
		{map[string]string{"GCP_X_CREDENTIALS_JSON": `{"type":"service_account","private_key":"secret"`},
			"GCP_X_CREDENTIALS_JSON=(secret value not shown) is invalid: want a credentials JSON object (unexpected end of JSON input)"},
		{map[string]string{"GCP_X_CREDENTIALS_JSON": `{"type":"api_key"}`},
			`GCP_X_CREDENTIALS_JSON=(secret value not shown) is invalid: want a credentials JSON whose "type" is one of service_account, authorized_user, impersonated_service_account, external_account (got "api_key")`},
		{map[string]string{"GCP_X_CREDENTIALS_JSON": `{"type":"service_account","client_email":"a@b"}`},
			`GCP_X_CREDENTIALS_JSON=(secret value not shown) is invalid: want a service account key with "client_email" and "private_key"`},
		{map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": missing},
			`GOOGLE_APPLICATION_CREDENTIALS="` + missing + `" is invalid: want the path of a readable credentials JSON file (open ` + missing + `: no such file or directory)`},
	} {
		_, err := load(tc.env)
		if err == nil || err.Error() != tc.want {
			t.Errorf("env %v:\n got %v\nwant %s", tc.env, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "secret") && !strings.Contains(err.Error(), "secret value not shown") || strings.Contains(err.Error(), "c2VjcmV0")) {
			t.Errorf("error shows a secret: %v", err)
		}
	}
}

func TestProjectIDChecked(t *testing.T) {
	for id, ok := range map[string]bool{"my-project-123": true, "test": true, "example.com:my-project": true,
		"Not A Project!": false, "1starts-with-digit": false, "under_score": false} {
		_, err := load(map[string]string{"GCP_X_PROJECT_ID": id})
		if bad := err != nil && strings.Contains(err.Error(), "GCP_X_PROJECT_ID"); bad == ok {
			t.Errorf("%q: %v", id, err)
		}
	}
}
