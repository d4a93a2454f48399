package run

import (
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
)

func TestProxySettings(t *testing.T) {
	for _, n := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} {
		t.Setenv(n, "")
	}
	cases := []struct {
		name, value, want string // want "" for valid
	}{
		{"HTTPS_PROXY", "http://user:pw-secret@proxy.example:3128", ""},
		{"https_proxy", "proxy.example:3128", ""},
		{"HTTP_PROXY", "http://proxy.example:3128/", ""},
		{"NO_PROXY", "localhost, mqtt,.internal.example,10.0.0.0/8,[::1]:8080,*", ""},
		{"HTTPS_PROXY", "https://user:pw-secret@proxy.example:3128",
			"HTTPS_PROXY=(secret value not shown) is invalid: want an http://[user:password@]host:port proxy URL (scheme https is not supported by every destination's client)"},
		{"https_proxy", "socks5://proxy.example:1080",
			"https_proxy=(secret value not shown) is invalid: want an http://[user:password@]host:port proxy URL (scheme socks5 is not supported by every destination's client)"},
		{"HTTP_PROXY", "http://user:pw-secret@proxy.example:3128/path",
			"HTTP_PROXY=(secret value not shown) is invalid: want an http://[user:password@]host:port proxy URL (a path or query is not allowed)"},
		{"HTTPS_PROXY", "http://user:pw secret@proxy.example:3128",
			"HTTPS_PROXY=(secret value not shown) is invalid: want an http://[user:password@]host:port proxy URL (it does not parse as a URL)"},
		{"NO_PROXY", "mqtt,http://broker.local",
			`NO_PROXY="mqtt,http://broker.local" is invalid: want comma-separated hosts, .domains, IP addresses or CIDR ranges, each with an optional :port (no scheme: http://broker.local)`},
		{"no_proxy", "example.com/path",
			`no_proxy="example.com/path" is invalid: want comma-separated hosts, .domains, IP addresses or CIDR ranges, each with an optional :port (no path: example.com/path)`},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			t.Setenv(c.name, c.value)
			l := config.NewLoader(config.Env, proxyVars)
			loadProxy(l)
			got := ""
			if err := l.Err(); err != nil {
				got = err.Error()
			}
			if got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			if strings.Contains(got, "pw-secret") || strings.Contains(got, "pw secret") {
				t.Error("the password is in the error")
			}
		})
	}
}

// A proxy set anywhere but the process environment (Key Vault) would be
// ignored by the clients: a configuration error.
func TestProxyOnlyFromTheEnvironment(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	lookup := func(n string) (string, bool) {
		if n == "HTTPS_PROXY" {
			return "http://proxy.example:3128", true
		}
		return "", false
	}
	l := config.NewLoader(lookup, proxyVars)
	loadProxy(l)
	want := "HTTPS_PROXY=(secret value not shown) is invalid: want a value in the process environment: the clients read it from there, not from Key Vault (which is reached through it)"
	if err := l.Err(); err == nil || err.Error() != want {
		t.Errorf("got %v", err)
	}
}
