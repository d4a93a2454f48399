package sinktest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Helpers the destinations' own tests share: variables from a map, a
// configuration or a sink loaded from them as run does, a sink connected, a
// batch of fixed messages, a log to search.

// Env serves variables from env the way config.Env serves the process
// environment: a name missing from env, or mapped to "", is unset.
func Env(env map[string]string) config.Lookup {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok && v != ""
	}
}

// With returns a copy of base with overrides set on top (an override of ""
// unsets the variable, as Env reads it). Neither map is changed.
func With(base, overrides map[string]string) map[string]string {
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, overrides)
	return out
}

// Load reads a destination's variables from env the way run does: build gets
// a loader over env that declares vars (the service's AllVars) and returns
// what it makes of them, a Config or a sink. The loader's problems come
// first; build's own error is returned when there are none.
func Load[T any](env map[string]string, vars []config.Var, build func(*config.Loader) (T, error)) (T, error) {
	l := config.NewLoader(Env(env), vars)
	v, err := build(l)
	if lerr := l.Err(); lerr != nil {
		return v, lerr
	}
	return v, err
}

// MustLoad is Load that fails the test on an error.
func MustLoad[T any](t testing.TB, env map[string]string, vars []config.Var, build func(*config.Loader) (T, error)) T {
	t.Helper()
	v, err := Load(env, vars, build)
	if err != nil {
		t.Fatalf("configuration: %v", err)
	}
	return v
}

// LoadSink builds svc's sink from env the way run does: svc.New with info
// (its Service set to svc.Name) over a loader of svc's variables. The
// loader's problems come first; New's own error is returned when there are
// none.
func LoadSink(svc run.Service, info run.Info, env map[string]string) (sink.Sink, error) {
	info.Service = svc.Name
	return Load(env, svc.AllVars(), func(l *config.Loader) (sink.Sink, error) { return svc.New(l, info) })
}

// MustLoadSink is LoadSink that fails the test on an error.
func MustLoadSink(t testing.TB, svc run.Service, info run.Info, env map[string]string) sink.Sink {
	t.Helper()
	s, err := LoadSink(svc, info, env)
	if err != nil {
		t.Fatalf("configuration: %v", err)
	}
	return s
}

// EnvTable checks the table of variables in svc's README (../README.md, seen
// from its sink's package) against the variables svc reads; with
// UPDATE_DOCS set, it writes the table instead.
func EnvTable(t testing.TB, svc run.Service) {
	t.Helper()
	if err := config.SyncTable("../README.md", svc.AllVars(), os.Getenv("UPDATE_DOCS") != ""); err != nil {
		t.Fatal(err)
	}
}

// Connected connects s, failing the test if it cannot within a minute, and
// closes s when the test ends (Close may be called again; a sink allows it).
// It returns s, to be used at once: sinktest.Connected(t, newSink(...)).
func Connected[S sink.Sink](t testing.TB, s S) S {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// Received is a fixed receive time for tests that check what a sink makes
// of it: in UTC, with nanoseconds, so a format shows how much it keeps.
var Received = time.Date(2024, 3, 5, 7, 8, 9, 123456789, time.UTC)

// Batch returns one message per payload, as the spool hands them to a sink:
// ids prefix-000000000001, prefix-000000000002, ... (the spool's form, so
// they ascend), all on topic and received at received. Change a message's
// fields afterwards for the odd one out.
func Batch[P ~string | ~[]byte](prefix, topic string, received time.Time, payloads ...P) []sink.Message {
	out := make([]sink.Message, len(payloads))
	for i, p := range payloads {
		out[i] = sink.Message{ID: spoolID(prefix, i+1), Topic: topic, Received: received, Payload: []byte(p)}
	}
	return out
}

// spoolID is the id of the nth message (from 1) of an epoch, in the spool's
// form: the epoch, a dash, the number in 12 digits.
func spoolID(epoch string, n int) string { return fmt.Sprintf("%s-%012d", epoch, n) }

// LogBuffer collects what a sink logs, so a test can look for what must (or
// must never, like a secret) be in it. Any number of goroutines may write
// while the test reads. The zero value is ready to use.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger returns a logger that writes JSON lines, debug level and up, to l:
// what a sink logs in production and more.
func (l *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Concurrency counts the calls a fake is serving at once, and the most it
// has served at once, for tests of how many requests a sink keeps in
// flight. The zero value is ready to use; any number of goroutines may use
// it.
type Concurrency struct {
	mu        sync.Mutex
	now, peak int
}

// Enter counts a call in. The func it returns counts it out:
// defer c.Enter()().
func (c *Concurrency) Enter() (leave func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now++
	c.peak = max(c.peak, c.now)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.now--
	}
}

// Now returns how many calls are in.
func (c *Concurrency) Now() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Peak returns the most calls that were in at once.
func (c *Concurrency) Peak() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak
}

// WantFindings checks a Checker's findings against want, in order: each a
// regular expression for the whole text, which is prefixed "warn: " for a
// warning.
func WantFindings(t testing.TB, fs []sink.Finding, want []string) {
	t.Helper()
	if len(fs) != len(want) {
		t.Fatalf("findings %+v, want %q", fs, want)
	}
	for i, f := range fs {
		text := f.Text
		if f.Warn {
			text = "warn: " + text
		}
		if !regexp.MustCompile("^" + want[i] + "$").MatchString(text) {
			t.Errorf("finding %q, want %s", text, want[i])
		}
	}
}

// WantCheck runs c's Check (with --write's option when write) and fails t
// unless it failed exactly when fails, with an AuthError exactly when auth,
// and its findings match want (WantFindings). It returns Check's error.
func WantCheck(t testing.TB, c sink.Checker, write, fails, auth bool, want []string) error {
	t.Helper()
	fs, err := c.Check(context.Background(), sink.CheckOptions{Write: write})
	if (err != nil) != fails || sink.IsAuth(err) != auth {
		t.Errorf("check's error %v: want one %v, an AuthError %v", err, fails, auth)
	}
	WantFindings(t, fs, want)
	return err
}

// CheckCase is one run of an object store's check against the store's
// fake, which answers each call as Refuse says.
type CheckCase struct {
	Name   string
	Write  bool                       // check --write
	Refuse func(op, key string) error // the fake's error for a call (nil: none)
	Want   []string                   // patterns of the findings, "warn: " marking warnings
	Auth   bool                       // the check fails, with an AuthError
	Left   int                        // test objects left in the store
}

// RunCheckCases runs each case as a subtest: open returns the sink,
// connected, with its fake refusing as c.Refuse says, and a count of the
// objects in the store. The check must give c's findings and error, leave
// c.Left objects, and say none of secrets in its error.
func RunCheckCases(t *testing.T, cases []CheckCase, secrets []string, open func(t *testing.T, c CheckCase) (sink.Checker, func() int)) {
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			s, objects := open(t, c)
			err := WantCheck(t, s, c.Write, c.Auth, c.Auth, c.Want)
			for _, secret := range secrets {
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("a secret (%.4s...) in the check's error: %v", secret, err)
				}
			}
			if n := objects(); n != c.Left {
				t.Errorf("%d test objects left, want %d", n, c.Left)
			}
		})
	}
}
