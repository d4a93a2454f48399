package run

import (
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/cloud-block/cloud-block/common/config"
)

// proxyVars are the proxy settings every destination's client reads itself
// (Go's http.ProxyFromEnvironment: the AWS and Azure SDKs, the Google HTTP
// clients, gRPC for Pub/Sub, Event Hubs over WebSockets), so they are
// read from the process environment only, never from Key Vault (the
// vault is reached through them). They are declared for the tables and
// checked at start: a malformed URL would otherwise surface in the first
// request's error, quoted whole, password included.
var proxyVars = []config.Var{
	{Name: "HTTPS_PROXY", Aliases: []string{"https_proxy"}, Secret: true,
		Doc: "Proxy for the destination's HTTPS, gRPC and WebSocket connections: `http://[user:password@]host:port` (CONNECT tunnels carry the TLS end to end; a TLS-inspecting proxy's CA goes in `SSL_CERT_FILE`). " +
			"The local broker over mqtt:// or mqtts:// never uses it; over ws:// or wss:// add its host to `NO_PROXY`. Event Hubs takes WebSockets through it (`AZURE_EH_TRANSPORT`). From the environment only, not from Key Vault."},
	{Name: "HTTP_PROXY", Aliases: []string{"http_proxy"}, Secret: true,
		Doc: "Proxy for plain-http:// endpoints only (emulators); same form as `HTTPS_PROXY`. From the environment only."},
	{Name: "NO_PROXY", Aliases: []string{"no_proxy"},
		Doc: "Comma-separated hosts, domains (`.example.com`), IP addresses or CIDR ranges reached without the proxy. Loopback addresses and `localhost` never use one. From the environment only."},
}

// loadProxy checks the proxy settings as the clients will read them: from
// the process environment (a value from elsewhere, Key Vault, would be
// ignored by them), the URLs the way Go parses them (a bare host:port means
// http://) allowing only http:// proxies (gRPC and the WebSocket client
// speak plain CONNECT to the proxy, so https:// and socks5:// would work for
// some destinations and not others), and NO_PROXY's entries.
func loadProxy(l *config.Loader) {
	for i, v := range proxyVars {
		if !l.IsSet(v.Name) {
			continue
		}
		name := l.SetName(v.Name) // the one set, as Go picks it: upper case first
		val := l.String(v.Name)
		if os.Getenv(name) != val {
			l.Fail(v.Name, val, "a value in the process environment: the clients read it from there, not from Key Vault (which is reached through it)")
			continue
		}
		if i == 2 {
			if why := badNoProxy(val); why != "" {
				l.Fail(v.Name, val, "comma-separated hosts, .domains, IP addresses or CIDR ranges, each with an optional :port ("+why+")")
			}
		} else if why := badProxy(val); why != "" {
			l.Fail(v.Name, val, "an http://[user:password@]host:port proxy URL ("+why+")")
		}
	}
}

// badNoProxy finds an entry Go would take literally and never match.
func badNoProxy(val string) string {
	for _, e := range strings.Split(val, ",") {
		e = strings.TrimSpace(e)
		switch {
		case e == "" || e == "*":
		case strings.Contains(e, "://"):
			return "no scheme: " + e
		case strings.ContainsAny(e, " \t@?#"):
			return "not a host: " + e
		case strings.Contains(e, "/"):
			if _, _, err := net.ParseCIDR(e); err != nil {
				return "no path: " + e
			}
		}
	}
	return ""
}

// badProxy says what is wrong with a proxy URL ("" if nothing), without
// quoting it: it may hold a password.
func badProxy(val string) string {
	u, err := url.Parse(val)
	if (err != nil || u.Scheme == "" || u.Host == "") && !strings.Contains(val, "://") {
		// As Go does: "proxy.example:3128" is an http:// proxy.
		if u2, err2 := url.Parse("http://" + val); err2 == nil {
			u, err = u2, nil
		}
	}
	switch {
	case err != nil:
		return "it does not parse as a URL"
	case u.Scheme != "http":
		return "scheme " + u.Scheme + " is not supported by every destination's client"
	case u.Hostname() == "":
		return "no host"
	case u.Path != "" && u.Path != "/", u.RawQuery != "":
		return "a path or query is not allowed"
	case strings.ContainsAny(u.Host, " \t"):
		return "spaces in the host"
	}
	return ""
}
