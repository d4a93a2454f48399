// Package awsiot is the AWS IoT Core credentials provider: a device proves
// itself with its X.509 certificate (mutual TLS) to
// https://<endpoint>/role-aliases/<alias>/credentials and gets temporary AWS
// credentials for the role the alias names, so no long-lived AWS key is kept
// on the device.
//
// It only fetches and keeps credentials: common never imports a cloud SDK,
// so each AWS service hands a Provider to the SDK's credentials cache
// itself (aws.NewCredentialsCache with ExpiryWindow, RefreshAt and Keep as
// the cache's strategies).
package awsiot

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Source names these credentials in the SDK's aws.Credentials.
const Source = "AWSIoTCredentialsProvider"

// ExpiryWindow is how long before they expire credentials are fetched
// again: at most half their lifetime (RefreshAt), so short-lived ones are
// not fetched for every request.
const ExpiryWindow = 5 * time.Minute

// requestTimeout bounds one call to the endpoint: a silent one must not
// hold a batch.
const requestTimeout = 30 * time.Second

// Vars are the variables of the service with prefix (AWS_SQS, AWS_S3). The
// unprefixed AWS_IOT_* names are shared by every AWS service of the device;
// the prefixed ones let a service use a role alias of its own.
func Vars(prefix string) []config.Var {
	p := prefix + "_IOT_"
	return []config.Var{
		{Name: p + "CREDENTIALS_ENDPOINT", Aliases: []string{"AWS_IOT_CREDENTIALS_ENDPOINT"},
			Doc: "AWS IoT credentials provider endpoint of the account (`aws iot describe-endpoint --endpoint-type iot:CredentialProvider`), e.g. `c2xxxxxxxx.credentials.iot.eu-west-1.amazonaws.com`: the device's certificate is exchanged there for temporary credentials, so no access key is kept on the device. With " + p + "ROLE_ALIAS, " + p + "CERT and " + p + "KEY; not with " + prefix + "_ACCESS_KEY."},
		{Name: p + "ROLE_ALIAS", Aliases: []string{"AWS_IOT_ROLE_ALIAS"},
			Doc: "Role alias whose role the credentials are for (1 to 128 letters, digits, `_`, `=`, `,`, `@`, `-`)."},
		{Name: p + "THING_NAME", Aliases: []string{"AWS_IOT_THING_NAME"},
			Doc: "Thing name sent as `x-amzn-iot-thingname`: AWS IoT then checks the thing is attached to the certificate, and the role's policies may use `${credentials-iot:ThingName}`. Default: none sent."},
		{Name: p + "CERT", Aliases: []string{"AWS_IOT_CERT"}, Multiline: true,
			Doc: "The device's certificate registered in AWS IoT: PEM text (literal `\\n` allowed) or a file path."},
		{Name: p + "KEY", Aliases: []string{"AWS_IOT_KEY"}, Multiline: true, Secret: true,
			Doc: "The certificate's private key: PEM text or a file path (a file keeps it out of the environment)."},
		{Name: p + "CA", Aliases: []string{"AWS_IOT_CA"}, Multiline: true,
			Doc: "CA certificate(s) trusted for the endpoint: PEM text or a file path. Default: the system roots (Amazon's CAs are among them)."},
	}
}

// Credentials are one set of temporary credentials.
type Credentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
	Expires                                    time.Time
}

// String shows when the credentials expire, never the credentials.
func (c Credentials) String() string {
	return "AWS IoT credentials expiring at " + c.Expires.UTC().Format(time.RFC3339)
}

// Provider fetches credentials from the endpoint. It is safe for
// concurrent use.
type Provider struct {
	url    string // https://<endpoint>/role-aliases/<alias>/credentials
	alias  string
	thing  string
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	last Credentials // the last fetched, for Keep
}

var (
	aliasRe = regexp.MustCompile(`^[\w=,@-]{1,128}$`)
	thingRe = regexp.MustCompile(`^[a-zA-Z0-9:_-]{1,128}$`)
)

// Load reads the variables of prefix: nil when the provider is not
// configured (no endpoint, alias, certificate or key set). Problems are
// collected by l, each naming its variable.
func Load(l *config.Loader, prefix string, log *slog.Logger) *Provider {
	p := prefix + "_IOT_"
	endpoint := strings.TrimSpace(l.String(p + "CREDENTIALS_ENDPOINT"))
	alias := strings.TrimSpace(l.String(p + "ROLE_ALIAS"))
	thing := strings.TrimSpace(l.String(p + "THING_NAME"))
	cert, key, ca := l.String(p+"CERT"), l.String(p+"KEY"), l.String(p+"CA")
	if endpoint == "" && alias == "" && cert == "" && key == "" {
		if thing != "" {
			l.Require(p+"CREDENTIALS_ENDPOINT", "required when "+l.SetName(p+"THING_NAME")+" is set")
		}
		if ca != "" {
			l.Require(p+"CREDENTIALS_ENDPOINT", "required when "+l.SetName(p+"CA")+" is set")
		}
		return nil
	}
	const why = "required with the AWS IoT credentials provider (any of %s, %s, %s or %s set)"
	for _, v := range []struct{ name, val string }{{p + "CREDENTIALS_ENDPOINT", endpoint}, {p + "ROLE_ALIAS", alias}, {p + "CERT", cert}, {p + "KEY", key}} {
		if v.val == "" {
			l.Require(v.name, fmt.Sprintf(why, p+"CREDENTIALS_ENDPOINT", p+"ROLE_ALIAS", p+"CERT", p+"KEY"))
		}
	}
	base := endpointURL(l, p+"CREDENTIALS_ENDPOINT", endpoint)
	if alias != "" && !aliasRe.MatchString(alias) {
		l.Fail(p+"ROLE_ALIAS", alias, "a role alias of 1 to 128 letters, digits, '_', '=', ',', '@' or '-'")
	}
	if thing != "" && !thingRe.MatchString(thing) {
		l.Fail(p+"THING_NAME", thing, "a thing name of 1 to 128 letters, digits, ':', '_' or '-'")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		b, err := mqtt.LoadPEM(ca)
		pool := x509.NewCertPool()
		if err == nil && !pool.AppendCertsFromPEM(b) {
			err = errors.New("no certificate in it")
		}
		if err != nil {
			l.Fail(p+"CA", shorten(ca), "PEM text or the path of a PEM file with the CA certificates to trust for the endpoint ("+err.Error()+")")
		}
		tc.RootCAs = pool
	}
	if cert != "" && key != "" {
		pair, ok := keyPair(l, p, cert, key)
		if ok {
			tc.Certificates = []tls.Certificate{pair}
		}
	}
	if base == "" || alias == "" || cert == "" || key == "" {
		return nil
	}
	tr := &http.Transport{
		TLSClientConfig:       tc,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: requestTimeout,
		IdleConnTimeout:       90 * time.Second,
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{
		url:    base + "/role-aliases/" + url.PathEscape(alias) + "/credentials",
		alias:  alias,
		thing:  thing,
		client: &http.Client{Transport: tr, Timeout: requestTimeout},
		log:    log,
		now:    time.Now,
	}
}

// endpointURL accepts the endpoint as describe-endpoint prints it (a host
// name), with a port, or as an https URL without a path.
func endpointURL(l *config.Loader, name, v string) string {
	if v == "" {
		return ""
	}
	raw := v
	if !strings.Contains(v, "://") {
		raw = "https://" + v
	}
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		l.Fail(name, v, "the credentials endpoint's host name (e.g. c2xxxxxxxx.credentials.iot.eu-west-1.amazonaws.com), or https://host[:port] without a path")
		return ""
	}
	return "https://" + u.Host
}

// keyPair loads the certificate and key, each error naming its variable
// (never the key itself).
func keyPair(l *config.Loader, p, cert, key string) (tls.Certificate, bool) {
	certPEM, err := mqtt.LoadPEM(cert)
	if err == nil && !strings.Contains(string(certPEM), "CERTIFICATE") {
		err = errors.New("no certificate in it")
	}
	if err != nil {
		l.Fail(p+"CERT", shorten(cert), "PEM text or the path of a PEM file with the device's certificate ("+err.Error()+")")
		return tls.Certificate{}, false
	}
	keyPEM, err := mqtt.LoadPEM(key)
	if err == nil {
		if b, _ := pem.Decode(keyPEM); b == nil {
			err = errors.New("no PEM block")
		}
	}
	if err != nil {
		l.Fail(p+"KEY", key, "PEM text or the path of a PEM file with the certificate's private key")
		return tls.Certificate{}, false
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// X509KeyPair's messages never hold key material.
		l.Fail(p+"KEY", key, "the private key of "+l.SetName(p+"CERT")+" ("+err.Error()+")")
		return tls.Certificate{}, false
	}
	return pair, true
}

// shorten keeps an error message readable when a PEM was pasted in.
func shorten(s string) string {
	if len(s) > 60 {
		return fmt.Sprintf("%s... (%d bytes)", strings.ReplaceAll(s[:40], "\n", `\n`), len(s))
	}
	return s
}

// String says which identity is in use, for logs and check: no secret.
func (p *Provider) String() string {
	s := "AWS IoT credentials provider " + p.url + " (role alias " + p.alias
	if p.thing != "" {
		s += ", thing " + p.thing
	}
	return s + ")"
}

// Error is a failed fetch. It names the endpoint's URL, never a
// credential: the answer's body is quoted only when it is not a success.
type Error struct {
	URL    string
	Status int // the HTTP status; 0 when no answer came
	Err    error
}

func (e *Error) Error() string {
	return "AWS IoT credentials endpoint " + e.URL + ": " + e.Err.Error()
}
func (e *Error) Unwrap() error { return e.Err }

// Fetch asks the endpoint for new credentials. A refusal (the certificate
// or thing not allowed the role alias, or an unknown alias: HTTP 400, 401,
// 403, 404) is a *sink.AuthError around an *Error; anything else (no
// answer, throttling, a server error) is retryable as it is.
func (p *Provider) Fetch(ctx context.Context) (Credentials, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return Credentials{}, &Error{URL: p.url, Err: err}
	}
	if p.thing != "" {
		req.Header.Set("x-amzn-iot-thingname", p.thing)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return Credentials{}, &Error{URL: p.url, Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Credentials{}, &Error{URL: p.url, Status: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{URL: p.url, Status: resp.StatusCode, Err: fmt.Errorf("HTTP %d%s", resp.StatusCode, errorMessage(body))}
		switch resp.StatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			e.Err = fmt.Errorf("%w (is the certificate active, attached to the thing and allowed iot:AssumeRoleWithCertificate on role alias %q?)", e.Err, p.alias)
			return Credentials{}, &sink.AuthError{Err: e}
		}
		return Credentials{}, e
	}
	var out struct {
		Credentials struct {
			AccessKeyID     string `json:"accessKeyId"`
			SecretAccessKey string `json:"secretAccessKey"`
			SessionToken    string `json:"sessionToken"`
			Expiration      string `json:"expiration"`
		} `json:"credentials"`
	}
	// The body holds the secret: its parse error is not quoted.
	if json.Unmarshal(body, &out) != nil {
		return Credentials{}, &Error{URL: p.url, Status: resp.StatusCode, Err: errors.New("the answer is not the credentials JSON")}
	}
	c := out.Credentials
	exp, err := time.Parse(time.RFC3339, c.Expiration)
	if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "" || err != nil {
		return Credentials{}, &Error{URL: p.url, Status: resp.StatusCode, Err: errors.New("the answer lacks accessKeyId, secretAccessKey, sessionToken or an RFC 3339 expiration")}
	}
	got := Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken, Expires: exp}
	p.mu.Lock()
	p.last = got
	p.mu.Unlock()
	p.log.Debug("fetched AWS IoT credentials", "endpoint", p.url, "expires", exp.UTC().Format(time.RFC3339))
	return got, nil
}

// unwrapURLError drops *url.Error's "Get <url>:" prefix: Error names the
// URL already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// errorMessage is the "message" of an AWS error answer, short, or nothing.
func errorMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) != nil || e.Message == "" {
		return ""
	}
	m := e.Message
	if len(m) > 200 {
		m = m[:200] + "..."
	}
	return ": " + m
}

// RefreshAt is when credentials expiring at expires are to be fetched
// again: window before, but no earlier than half of what is left of them,
// so that credentials of a few seconds are not fetched for every request.
func (p *Provider) RefreshAt(expires time.Time, window time.Duration) time.Time {
	left := expires.Sub(p.now())
	return expires.Add(-min(window, max(left/2, 0)))
}

// Keep is what to use when fetching new credentials failed with err: the
// current ones (those of accessKeyID) while they have not expired, with a
// warning, so an endpoint away for less than the refresh window costs
// nothing; else err.
func (p *Provider) Keep(accessKeyID string, err error) (Credentials, error) {
	p.mu.Lock()
	last := p.last
	p.mu.Unlock()
	if accessKeyID == "" || last.AccessKeyID != accessKeyID || !p.now().Before(last.Expires) {
		return Credentials{}, err
	}
	p.log.Warn("fetching new AWS IoT credentials failed; the current ones are used until they expire",
		"expires", last.Expires.UTC().Format(time.RFC3339), "err", err)
	return last, nil
}
