// Package mqtt subscribes to the local broker with a persistent session and
// manual acknowledgements: a message is acknowledged (PUBACK) only when the
// caller says so, after it is durably spooled.
package mqtt

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Options configure the subscription.
type Options struct {
	Broker    *url.URL
	Topics    []string // filters, wildcards allowed
	ClientID  string
	Username  string
	Password  string
	TLS       *tls.Config // nil: plain, unless the scheme asks for TLS
	KeepAlive time.Duration
	Logger    *slog.Logger
	// Journal is a file that keeps what recognising redeliveries needs
	// across a crash of the process ("": within the process only).
	Journal string
}

// Message is one received message. Ack sends its PUBACK (idempotent).
type Message struct {
	Topic    string
	Payload  []byte
	Received time.Time
	Ack      func()
}

// Handler receives messages in arrival order. It must hand the message off
// quickly: it runs on paho's single delivery goroutine.
type Handler func(Message)

// Subscriber is a running subscription.
type Subscriber struct {
	opt       Options
	client    paho.Client
	log       *slog.Logger
	connected atomic.Bool
	paused    atomic.Bool
	handler   Handler

	track *tracker // recognises redeliveries after a reconnect

	mu          sync.Mutex
	reconnects  uint64
	failures    uint64 // consecutive failed connection attempts
	lastConnErr string
}

// New prepares a subscriber; Start connects.
func New(opt Options, h Handler) *Subscriber {
	s := &Subscriber{opt: opt, log: opt.Logger, handler: h, track: newTracker()}
	s.track.log = opt.Logger
	if opt.Journal != "" {
		n, lastSent, err := s.track.withJournal(opt.Journal)
		switch {
		case err != nil:
			s.log.Warn("MQTT journal unavailable: redeliveries after a crash will not be recognised", "path", opt.Journal, "err", err)
		case n > 0:
			s.log.Info("MQTT journal: the last connection of the previous run", "messages", n, "last_acknowledged", lastSent)
		}
	}
	co := paho.NewClientOptions()
	co.AddBroker(BrokerURL(opt.Broker))
	co.SetClientID(opt.ClientID)
	// A persistent session with a fixed client id: the broker keeps the
	// subscription and queues QoS 1 messages while the block restarts.
	co.SetCleanSession(false)
	co.SetAutoAckDisabled(true)
	co.SetOrderMatters(true)
	co.SetAutoReconnect(true)
	co.SetConnectRetry(true)
	co.SetConnectRetryInterval(time.Second)
	// The broker is on the same device: an attempt costs nothing, and a
	// restarted broker (a container update) should be rejoined within
	// seconds, not after a backoff that grew while it was away (30 s made
	// the fault suite's 15 s broker restart a 16 s wait after it was back).
	co.SetMaxReconnectInterval(5 * time.Second)
	co.SetConnectTimeout(10 * time.Second)
	co.SetKeepAlive(opt.KeepAlive)
	co.SetWriteTimeout(10 * time.Second)
	if opt.Username != "" {
		co.SetUsername(opt.Username)
		co.SetPassword(opt.Password)
	}
	if opt.TLS != nil {
		co.SetTLSConfig(opt.TLS)
	}
	// paho calls this for every attempt, once the previous connection has
	// stopped delivering messages.
	co.SetCustomOpenConnectionFn(func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		gen := s.track.connecting()
		return openConnection(u, o, s.track, gen)
	})
	co.SetDefaultPublishHandler(s.onMessage)
	co.SetOnConnectHandler(s.onConnect)
	co.SetConnectionLostHandler(func(_ paho.Client, err error) {
		s.connected.Store(false)
		s.setErr(err)
		s.log.Warn("MQTT connection lost; reconnecting", "err", err)
	})
	co.SetConnectionNotificationHandler(s.onNotification)
	s.client = paho.NewClient(co)
	return s
}

// BrokerURL is u in a scheme paho knows, without user information: paho
// understands tcp/ssl/ws/wss (and mqtt/mqtts as aliases in v1.5); the rest
// are mapped so every documented scheme works.
func BrokerURL(u *url.URL) string {
	c := *u
	switch c.Scheme {
	case "mqtt":
		c.Scheme = "tcp"
	case "mqtts", "tls":
		c.Scheme = "ssl"
	}
	c.User = nil
	return c.String()
}

func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	return c.String()
}

// onNotification records why connecting fails: with connect retry on, paho
// reports it nowhere else, and /ready should say it (a wrong CA, say).
func (s *Subscriber) onNotification(_ paho.Client, n paho.ConnectionNotification) {
	var reason error
	switch n := n.(type) {
	case paho.ConnectionNotificationConnecting:
		if n.IsReconnect && n.Attempt == 1 {
			s.mu.Lock()
			s.reconnects++
			s.mu.Unlock()
		}
		return
	case paho.ConnectionNotificationBrokerFailed:
		reason = n.Reason
	case paho.ConnectionNotificationFailed:
		reason = n.Reason
	default:
		return
	}
	s.mu.Lock()
	s.failures++
	first := s.failures == 1 || s.failures%30 == 0
	s.mu.Unlock()
	s.setErr(reason)
	if first {
		s.log.Error("MQTT connect failed; retrying", "broker", redact(s.opt.Broker), "err", reason)
	}
}

func (s *Subscriber) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastConnErr = err.Error()
	}
}

func (s *Subscriber) onConnect(c paho.Client) {
	// Subscribe on every (re)connect: a broker restarted without persistence
	// has forgotten the session. Wait off paho's goroutine, and keep trying
	// while the connection stays up (a broker's ACL may be fixed meanwhile).
	go func() {
		filters := make(map[string]byte, len(s.opt.Topics))
		for _, t := range s.opt.Topics {
			filters[t] = 1
		}
		for attempt := 1; c.IsConnectionOpen(); attempt++ {
			if err := s.subscribe(c, filters); err != nil {
				s.setErr(err)
				s.log.Error("MQTT subscribe failed; retrying", "topics", s.opt.Topics, "err", err, "attempt", attempt)
				time.Sleep(min(time.Duration(attempt)*time.Second, 30*time.Second))
				continue
			}
			s.setErr(nil)
			s.mu.Lock()
			s.failures = 0
			s.mu.Unlock()
			s.connected.Store(true)
			s.log.Info("MQTT connected and subscribed", "broker", redact(s.opt.Broker), "topics", s.opt.Topics, "client_id", s.opt.ClientID)
			return
		}
	}()
}

func (s *Subscriber) subscribe(c paho.Client, filters map[string]byte) error {
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(30 * time.Second) {
		return errors.New("no SUBACK within 30s")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("broker refused the subscription to %q (check its ACL)", topic)
			}
		}
	}
	return nil
}

func (s *Subscriber) onMessage(_ paho.Client, m paho.Message) {
	if s.paused.Load() {
		return // shutting down: not acknowledged, so the broker sends it again
	}
	repeat, ack := s.track.arrived(m.MessageID(), m.Duplicate(), m.Topic(), m.Payload(), m.Ack)
	if repeat {
		return // already held: acknowledged with the message it repeats
	}
	s.handler(Message{Topic: m.Topic(), Payload: m.Payload(), Received: time.Now().UTC(), Ack: ack})
}

// Redeliveries counts messages the broker sent again (DUP=1) and, of them,
// those recognised as messages already held and not spooled again.
func (s *Subscriber) Redeliveries() (redelivered, recognised uint64) {
	rec, red := s.track.counts()
	return red, rec
}

// Start connects in the background (retrying until it succeeds); it returns
// at once. Connected reports progress.
func (s *Subscriber) Start() {
	tok := s.client.Connect()
	go func() {
		tok.Wait()
		if err := tok.Error(); err != nil {
			s.setErr(err)
			s.log.Error("MQTT connect failed", "broker", redact(s.opt.Broker), "err", err)
		}
	}()
}

// Connected reports whether the subscription is up.
func (s *Subscriber) Connected() bool { return s.connected.Load() && s.client.IsConnectionOpen() }

// Reconnects counts reconnections (not attempts) since start.
func (s *Subscriber) Reconnects() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

// LastError is the last connection error ("" after a successful subscribe).
func (s *Subscriber) LastError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastConnErr
}

// Pause stops handing messages to the handler; later ones stay unacknowledged.
func (s *Subscriber) Pause() { s.paused.Store(true) }

// Disconnect closes the connection after giving queued PUBACKs time to go out.
// It never unsubscribes: the persistent session keeps queueing for us.
func (s *Subscriber) Disconnect(quiesce time.Duration) {
	s.client.Disconnect(uint(quiesce.Milliseconds()))
	s.connected.Store(false)
	s.track.closeJournal()
}

// LoadPEM returns v itself when it holds PEM text, else the content of the
// file v names.
func LoadPEM(v string) ([]byte, error) {
	if strings.Contains(v, "-----BEGIN") {
		return []byte(v), nil
	}
	b, err := os.ReadFile(v)
	if err != nil {
		return nil, fmt.Errorf("neither PEM text nor a readable file: %w", err)
	}
	return b, nil
}

// ErrNoTopics is returned when no topic filter is given.
var ErrNoTopics = errors.New("no topic filter")

// ParseTopics splits a comma-separated list of filters and validates each.
func ParseTopics(s string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		if err := validFilter(t); err != nil {
			return nil, fmt.Errorf("%q: %w", t, err)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, ErrNoTopics
	}
	return out, nil
}

func validFilter(f string) error {
	if len(f) > 65535 {
		return errors.New("longer than 65535 bytes")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return errors.New("'#' must be a whole level and the last one")
		}
		if strings.Contains(l, "+") && l != "+" {
			return errors.New("'+' must be a whole level")
		}
	}
	if strings.ContainsRune(f, 0) {
		return errors.New("contains a NUL byte")
	}
	return nil
}
