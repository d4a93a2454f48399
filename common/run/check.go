package run

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/vault"
)

// checkTimeout bounds each part of a check (the broker, the destination),
// which run side by side: room for a slow uplink and the SDKs' own quick
// retries, while an address that never answers is reported, not waited on.
const checkTimeout = 30 * time.Second

// What a finding says, first on its line. The exit code is the worst
// status found: config, then denied, then unreachable.
const (
	statusOK          = "ok"
	statusWarn        = "warn"
	statusConfig      = "config"
	statusUnreachable = "unreachable"
	statusDenied      = "denied"
)

type finding struct {
	status  string
	subject string // "mqtt", "vault", the service's name; "" for a configuration problem
	text    string
}

// check is the check subcommand: the configuration read and validated by
// start-up's own code, then the broker and the destination reached with
// calls that change nothing, one line a finding on stdout, a result line,
// and an exit code saying which kind of problem was found.
func check(ctx context.Context, svc Service, args []string, env config.Lookup, stdout, stderr io.Writer) int {
	var opt sink.CheckOptions
	for _, a := range args {
		switch a {
		case "--write", "-write":
			opt.Write = true
		default:
			fmt.Fprintf(stderr, "check: unknown argument %q; usage: cloud-block-%s check [--write]\n", a, svc.Name)
			return ExitConfig
		}
	}
	sec := newSecrets(svc.AllVars(), env)
	// The logs of start-up (the sink's "connected", the vault's list) would
	// only repeat the findings, in JSON.
	s, err := configure(ctx, svc, env, io.Discard, sec.tap)
	rep := &report{out: stdout, mask: sec.replacer()}
	if err != nil {
		rep.configError(err)
		return rep.finish()
	}
	rep.add(finding{statusOK, "config", fmt.Sprintf("valid (device %s, buffer %s writable)", s.device, s.spool.Dir)})
	rep.add(checkClock(clock.System())...)
	if s.vault != nil {
		names := append([]string(nil), s.fromVault...)
		sort.Strings(names)
		text := "read from Azure Key Vault " + s.vault.src.URL() + ": "
		if len(names) == 0 {
			text += "no variables (the environment set them all)"
		} else {
			text += strings.Join(names, ", ")
		}
		rep.add(finding{statusOK, "vault", text})
	}
	var broker, dest []finding
	var wg sync.WaitGroup
	wg.Go(func() { broker = checkBroker(ctx, s.mqtt) })
	wg.Go(func() { dest = checkDestination(ctx, s, opt) })
	wg.Wait()
	rep.add(broker...)
	rep.add(dest...)
	return rep.finish()
}

// checkBroker connects to the broker with the configured address, TLS and
// credentials, and subscribes to the configured topics: the broker's ACL
// is checked too. It uses a client id of its own (the service's would
// close the running service's connection) and a clean session, so the
// broker keeps nothing of it once it disconnects.
func checkBroker(ctx context.Context, o mqtt.Options) []finding {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	where := brokerText(o.Broker)
	co := paho.NewClientOptions()
	co.AddBroker(mqtt.BrokerURL(o.Broker))
	co.SetClientID(checkClientID(o.ClientID))
	co.SetCleanSession(true)
	co.SetAutoReconnect(false)
	co.SetConnectRetry(false)
	co.SetConnectTimeout(checkTimeout)
	co.SetKeepAlive(o.KeepAlive)
	co.SetWriteTimeout(checkTimeout)
	who := "anonymously"
	if o.Username != "" {
		co.SetUsername(o.Username)
		co.SetPassword(o.Password)
		who = fmt.Sprintf("as user %q", o.Username)
	}
	if o.TLS != nil {
		co.SetTLSConfig(o.TLS)
		who += " over TLS"
		if len(o.TLS.Certificates) > 0 {
			who += " with a client certificate"
		}
	}
	c := paho.NewClient(co)
	if err := waitToken(ctx, c.Connect()); err != nil {
		if v := tlsVerdict(ctx, o.Broker, o.TLS); refusedCertificate(v) {
			err = v
		}
		return []finding{brokerFailure(where, who, err)}
	}
	defer c.Disconnect(250)

	filters := make(map[string]byte, len(o.Topics))
	for _, t := range o.Topics {
		filters[t] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	if err := waitToken(ctx, tok); err != nil {
		return []finding{{statusUnreachable, "mqtt", fmt.Sprintf("connected to %s %s, but subscribing to %s failed: %s", where, who, strings.Join(o.Topics, ", "), oneLine(err.Error()))}}
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		var refused []string
		for topic, code := range st.Result() {
			if code == 0x80 {
				refused = append(refused, topic)
			}
		}
		if len(refused) > 0 {
			sort.Strings(refused)
			return []finding{{statusDenied, "mqtt", fmt.Sprintf("connected to %s %s, but the broker refused the subscription to %s (check its ACL)", where, who, strings.Join(refused, ", "))}}
		}
	}
	return []finding{{statusOK, "mqtt", fmt.Sprintf("connected to %s %s and subscribed to %s", where, who, strings.Join(o.Topics, ", "))}}
}

// waitToken waits for tok or the end of ctx.
func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s", checkTimeout)
	}
}

// brokerFailure classifies a failed connection: the broker refusing the
// credentials or the client certificate is a denial, anything else
// (refused, timed out, an untrusted server certificate) unreachable.
func brokerFailure(where, who string, err error) finding {
	var verify *tls.CertificateVerificationError
	switch {
	case errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, packets.ErrorRefusedNotAuthorised):
		return finding{statusDenied, "mqtt", fmt.Sprintf("%s refused the connection %s: %s", where, who, oneLine(err.Error()))}
	case refusedCertificate(err):
		return finding{statusDenied, "mqtt", fmt.Sprintf("%s refused the connection %s in the TLS handshake: it wants a client certificate it trusts (LOCAL_MQTT_CERT, LOCAL_MQTT_KEY): %s", where, who, oneLine(err.Error()))}
	case errors.As(err, &verify):
		return finding{statusUnreachable, "mqtt", fmt.Sprintf("cannot connect to %s %s: the broker's certificate is not trusted (check LOCAL_MQTT_CA and LOCAL_MQTT_TLS_SERVER_NAME): %s", where, who, oneLine(err.Error()))}
	}
	return finding{statusUnreachable, "mqtt", fmt.Sprintf("cannot connect to %s %s: %s", where, who, oneLine(err.Error()))}
}

// tlsVerdict dials a TLS broker (not over WebSocket) again after a failed
// connection and waits briefly for the broker's verdict on the client's
// certificate. With TLS 1.3 a broker refuses it only after the client has
// finished its handshake; the client's CONNECT then meets a closed
// connection, and the alert saying why is often lost to the reset. It
// returns what reading brought (nil without TLS).
func tlsVerdict(ctx context.Context, u *url.URL, cfg *tls.Config) error {
	if cfg == nil || (u.Scheme != "mqtts" && u.Scheme != "ssl" && u.Scheme != "tls") {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := &tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer c.Close()
	// An MQTT broker says nothing before CONNECT: only an alert comes.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// refusedCertificate reports whether the broker ended the TLS handshake
// with an alert refusing the client's certificate, or its absence:
// bad_certificate (42), unsupported_certificate (43), certificate_revoked
// (44), certificate_expired (45), unknown_ca (48), access_denied (49),
// certificate_required (116). Over TCP, crypto/tls reports an alert
// received as a *net.OpError "remote error" around a value of its
// unexported alert type (a uint8); tls.AlertError is what QUIC reports.
func refusedCertificate(err error) bool {
	code := -1
	var ae tls.AlertError
	var op *net.OpError
	switch {
	case errors.As(err, &ae):
		code = int(ae)
	case errors.As(err, &op) && op.Op == "remote error" && op.Err != nil:
		if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
			code = int(v.Uint())
		}
	}
	switch code {
	case 42, 43, 44, 45, 48, 49, 116:
		return true
	}
	return false
}

// brokerText is the broker's URL without user information.
func brokerText(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// checkClientID is the service's client id with a random suffix: never
// the service's own, so a check beside the running service leaves its
// session alone, and two checks do not close each other's connection.
func checkClientID(service string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return service + "-check-" + hex.EncodeToString(b[:])
}

// checkDestination connects the sink as start-up does (for most
// destinations that is itself a call proving the credentials) and asks it
// for its own check.
func checkDestination(ctx context.Context, s *settings, opt sink.CheckOptions) []finding {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	name := s.svc.Name
	defer func() {
		// Closed even when the check's time ran out.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.snk.Close(cctx)
	}()
	if err := s.snk.Connect(ctx); err != nil {
		return []finding{destinationFailure(ctx, name, err)}
	}
	c, ok := s.snk.(sink.Checker)
	if !ok {
		return []finding{{statusOK, name, "connected (this destination checks no more than start-up does)"}}
	}
	fs, err := c.Check(ctx, opt)
	var out []finding
	for _, f := range fs {
		st := statusOK
		if f.Warn {
			st = statusWarn
		}
		out = append(out, finding{st, name, f.Text})
	}
	if err != nil {
		out = append(out, destinationFailure(ctx, name, err))
	} else if len(out) == 0 {
		out = append(out, finding{statusOK, name, "connected"})
	}
	return out
}

// destinationFailure classifies an error with the sink's own classes: an
// AuthError is a denial, anything else means the destination could not be
// reached or did not answer as expected.
func destinationFailure(ctx context.Context, name string, err error) finding {
	text := oneLine(err.Error())
	if ctx.Err() != nil {
		text = fmt.Sprintf("no answer within %s: %s", checkTimeout, text)
	}
	if sink.IsAuth(err) {
		return finding{statusDenied, name, text}
	}
	return finding{statusUnreachable, name, text}
}

// oneLine keeps a multi-line SDK message on the finding's line.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// report prints findings as they come, masked, and the result.
type report struct {
	out      io.Writer
	mask     *strings.Replacer
	statuses map[string]int
}

func (r *report) add(fs ...finding) {
	if r.statuses == nil {
		r.statuses = map[string]int{}
	}
	for _, f := range fs {
		r.statuses[f.status]++
		line := f.status
		if f.subject != "" {
			line += " " + f.subject
		}
		fmt.Fprintln(r.out, r.mask.Replace(line+": "+f.text))
	}
}

// configError reports what start-up would refuse: every problem, named
// as start-up names it. A vault that cannot be read is the one problem
// configure reports then; it is classified like the destinations.
func (r *report) configError(err error) {
	var ve *vault.Error
	if errors.As(err, &ve) {
		st := statusUnreachable
		if ve.Kind == vault.BadCredentials || ve.Kind == vault.Forbidden {
			st = statusDenied
		}
		r.add(finding{st, "vault", oneLine(ve.Error())})
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			r.add(finding{statusConfig, "", line})
		}
	}
}

// finish prints the result line and returns the exit code.
func (r *report) finish() int {
	code, result := ExitOK, "ok"
	switch {
	case r.statuses[statusConfig] > 0:
		code, result = ExitConfig, "configuration error"
	case r.statuses[statusDenied] > 0:
		code, result = ExitDenied, "denied"
	case r.statuses[statusUnreachable] > 0:
		code, result = ExitUnreachable, "unreachable"
	}
	if n := r.statuses[statusWarn]; n > 0 {
		result += fmt.Sprintf(", %d warning", n)
		if n > 1 {
			result += "s"
		}
	}
	fmt.Fprintf(r.out, "result: %s (exit %d)\n", result, code)
	return code
}

// secrets collects the values of the service's secret variables as the
// configuration reads them, so that no finding can print one: the
// destinations keep secrets out of their errors, and this makes sure of
// it for text the SDKs wrote.
type secrets struct {
	names  map[string]bool
	mu     sync.Mutex
	values map[string]bool
}

func newSecrets(vars []config.Var, env config.Lookup) *secrets {
	s := &secrets{names: map[string]bool{}, values: map[string]bool{}}
	for _, v := range vars {
		if !v.Secret {
			continue
		}
		for _, n := range append([]string{v.Name}, v.Aliases...) {
			s.names[n] = true
			// The vault's own settings are read from env by the vault,
			// not through the tap.
			if val, ok := env(n); ok {
				s.add(val)
			}
		}
	}
	return s
}

func (s *secrets) tap(l config.Lookup) config.Lookup {
	return func(name string) (string, bool) {
		v, ok := l(name)
		if ok && s.names[name] {
			s.add(v)
		}
		return v, ok
	}
}

// add records a value and the parts of it a message could hold alone:
// each line of a PEM key (literal \n too), and the key or signature fields
// of a connection string.
func (s *secrets) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(v) >= 4 {
		s.values[v] = true
	}
	for _, line := range strings.Split(strings.ReplaceAll(v, `\n`, "\n"), "\n") {
		if line = strings.TrimSpace(line); len(line) >= 8 && !strings.HasPrefix(line, "-----") {
			s.values[line] = true
		}
	}
	for _, field := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(field, "=")
		if !ok || !secretField(k) {
			continue
		}
		if len(val) >= 8 {
			s.values[val] = true
		}
		// A SAS: its sig parameter.
		if q, err := url.ParseQuery(val); err == nil {
			for qk, qv := range q {
				for _, x := range qv {
					if len(x) >= 8 && (qk == "sig" || secretField(qk)) {
						s.values[x] = true
					}
				}
			}
		}
	}
}

// secretField reports whether a connection string's field (or a query
// parameter) holds a secret: a key, signature, secret, password or token,
// but not a name (SharedAccessKeyName, AccountName).
func secretField(k string) bool {
	k = strings.ToLower(strings.TrimSpace(k))
	if strings.HasSuffix(k, "name") {
		return false
	}
	for _, w := range []string{"key", "signature", "secret", "password", "token"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// replacer masks every recorded value, longest first, so that a value
// containing another is masked whole.
func (s *secrets) replacer() *strings.Replacer {
	s.mu.Lock()
	defer s.mu.Unlock()
	vals := make([]string, 0, len(s.values))
	for v := range s.values {
		vals = append(vals, v)
	}
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	var pairs []string
	for _, v := range vals {
		pairs = append(pairs, v, "(secret not shown)")
	}
	return strings.NewReplacer(pairs...)
}
