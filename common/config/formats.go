package config

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// HostPort reads a host:port value (an emulator's address, a listener):
// a host or IP (IPv6 in brackets) and a port 1-65535. With schemes given,
// a URL with one of them and no path is accepted too, and returned as is.
// Unset gives the default; an invalid value is recorded and gives "".
func (l *Loader) HostPort(name string, schemes ...string) string {
	s := strings.TrimSpace(l.String(name))
	if s == "" {
		return ""
	}
	hostport := s
	if strings.Contains(s, "://") && len(schemes) > 0 {
		u, err := url.Parse(s)
		ok := err == nil && (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.User == nil
		if ok {
			ok = false
			for _, sc := range schemes {
				ok = ok || strings.EqualFold(u.Scheme, sc)
			}
		}
		if !ok {
			l.Fail(name, s, "host:port, or a URL "+strings.Join(schemes, "|")+"://host:port without a path")
			return ""
		}
		hostport = u.Host
	}
	if !ValidHostPort(hostport) {
		allowed := "host:port, such as localhost:8085 (a port from 1 to 65535)"
		if len(schemes) > 0 {
			allowed += ", or a URL " + strings.Join(schemes, "|") + "://host:port"
		}
		l.Fail(name, s, allowed)
		return ""
	}
	return s
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$`)

// ValidHostPort reports whether s is host:port with a DNS name, an IPv4
// address or a bracketed IPv6 address, and a port from 1 to 65535.
func ValidHostPort(s string) bool {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return false
	}
	host, port := s[:i], s[i+1:]
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return false
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		h := host[1 : len(host)-1]
		return strings.Contains(h, ":") && strings.Trim(h, "0123456789abcdefABCDEF:.") == ""
	}
	return len(host) <= 253 && hostName.MatchString(host)
}

// ValidAWSRegion reports whether s looks like an AWS region name
// (eu-west-1, us-gov-east-1, cn-north-1): lower-case letters, digits and
// hyphens, with at least one hyphen. The SDK would accept anything and fail
// on every request instead.
func ValidAWSRegion(s string) bool {
	if len(s) < 4 || len(s) > 32 || !strings.Contains(s, "-") || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// AWSRegionAllowed is the text for an invalid AWS region.
const AWSRegionAllowed = "an AWS region such as eu-west-1 (lower-case letters, digits and hyphens)"
