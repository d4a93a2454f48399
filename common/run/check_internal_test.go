package run

import (
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
)

// What the masking takes out of a finding, and what it leaves.
func TestSecretsMasked(t *testing.T) {
	vars := []config.Var{{Name: "CONN", Aliases: []string{"OLD_CONN"}, Secret: true}, {Name: "PLAIN"}}
	for _, c := range []struct {
		name, value, text, want string
	}{
		{"whole value", "hunter2-pw", "refused hunter2-pw!", "refused (secret not shown)!"},
		{"connection string: the key alone", "Endpoint=sb://ns.example/;SharedAccessKeyName=send;SharedAccessKey=a2V5a2V5a2V5a2V5=",
			"sender link to sb://ns.example/ refused key a2V5a2V5a2V5a2V5= of policy send",
			"sender link to sb://ns.example/ refused key (secret not shown) of policy send"},
		{"connection string: account name kept", "AccountName=devstoreaccount1;AccountKey=Zm9vYmFyYmF6cXV4", "devstoreaccount1 with Zm9vYmFyYmF6cXV4",
			"devstoreaccount1 with (secret not shown)"},
		{"SAS", "BlobEndpoint=https://a.example/;SharedAccessSignature=sv=2024&sig=c2lnbmF0dXJl", "sig c2lnbmF0dXJl", "sig (secret not shown)"},
		{"PEM lines, literal \\n", `-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\nAQEFAASCBKcwggSjAgEAAoIB\n-----END PRIVATE KEY-----`,
			"key MIIEvQIBADANBgkqhkiG9w0B AQEFAASCBKcwggSjAgEAAoIB -----END PRIVATE KEY-----",
			"key (secret not shown) (secret not shown) -----END PRIVATE KEY-----"},
		{"too short to mask alone", "abc", "abc abc", "abc abc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSecrets(vars, func(string) (string, bool) { return "", false })
			lookup := s.tap(func(n string) (string, bool) {
				switch n {
				case "OLD_CONN":
					return c.value, true
				case "PLAIN":
					return "abc", true
				}
				return "", false
			})
			lookup("CONN")
			lookup("OLD_CONN")
			lookup("PLAIN")
			if got := s.replacer().Replace(c.text); got != c.want {
				t.Errorf("%q\nwant %q", got, c.want)
			}
		})
	}
	// The environment's secrets are masked even when the configuration
	// never reads them through the tap (the vault's own settings).
	s := newSecrets(vars, func(n string) (string, bool) { return "env-secret-value", n == "CONN" })
	if got := s.replacer().Replace("x env-secret-value"); got != "x (secret not shown)" {
		t.Errorf("from env: %q", got)
	}
}
