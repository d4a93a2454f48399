package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// fakeStore is a vault: set changes what it holds, Refresh reads it.
type fakeStore struct {
	mu        sync.Mutex
	held      map[string]string // in the vault now
	values    map[string]string // as last read
	gen       uint64
	refreshes int
}

func newFakeStore(vals map[string]string) *fakeStore {
	f := &fakeStore{held: map[string]string{}, values: map[string]string{}}
	for k, v := range vals {
		f.held[k], f.values[k] = v, v
	}
	return f
}

func (f *fakeStore) set(k, v string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[k] = v
}

func (f *fakeStore) Lookup(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.values[name]
	return v, ok
}

func (f *fakeStore) Refresh(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	var changed []string
	for k, v := range f.held {
		if f.values[k] != v {
			changed = append(changed, k)
			f.values[k] = v
		}
	}
	if len(changed) > 0 {
		f.gen++
	}
	return changed, nil
}

func (f *fakeStore) Generation() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gen
}

func (f *fakeStore) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// cloud accepts writes made with its valid token and counts deliveries.
type cloud struct {
	mu           sync.Mutex
	valid        map[string]bool
	refuseToken  string // Connect with this token fails once
	delivered    map[string]int
	byToken      map[string]int
	sinks        []*tokenSink
	writeOnClose int // writes seen on a closed or unconnected sink
}

func newCloud(valid ...string) *cloud {
	c := &cloud{valid: map[string]bool{}, delivered: map[string]int{}, byToken: map[string]int{}}
	for _, v := range valid {
		c.valid[v] = true
	}
	return c
}

func (c *cloud) setValid(tokens ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.valid = map[string]bool{}
	for _, v := range tokens {
		c.valid[v] = true
	}
}

func (c *cloud) count() (unique, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.delivered {
		unique++
		total += n
	}
	return unique, total
}

type tokenSink struct {
	c         *cloud
	token     string
	connected bool
	closed    bool
}

func (s *tokenSink) Connect(context.Context) error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.c.refuseToken == s.token {
		s.c.refuseToken = ""
		return errors.New("connection reset")
	}
	s.connected, s.closed = true, false
	return nil
}

func (s *tokenSink) Limits() sink.Limits { return sink.Limits{} }

func (s *tokenSink) WriteBatch(_ context.Context, batch []sink.Message) error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if !s.connected || s.closed {
		s.c.writeOnClose++
		return errors.New("not connected")
	}
	if !s.c.valid[s.token] {
		return &sink.AuthError{Err: errors.New("token expired")}
	}
	for _, m := range batch {
		s.c.delivered[m.ID]++
	}
	s.c.byToken[s.token] += len(batch)
	return nil
}

func (s *tokenSink) Close(context.Context) error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.closed = true
	return nil
}

// memSource is a spool in memory.
type memSource struct {
	mu    sync.Mutex
	recs  []spool.Record
	next  int
	acked uint64
}

func (m *memSource) add(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range n {
		seq := uint64(len(m.recs) + 1)
		m.recs = append(m.recs, spool.Record{Seq: seq, ID: fmt.Sprintf("m%05d", seq),
			Entry: spool.Entry{Topic: "t", Received: time.Now(), Payload: []byte("p")}})
	}
}

func (m *memSource) Next(ctx context.Context, deadline time.Time) (spool.Record, error) {
	for {
		m.mu.Lock()
		if m.next < len(m.recs) {
			r := m.recs[m.next]
			m.next++
			m.mu.Unlock()
			return r, nil
		}
		m.mu.Unlock()
		if !deadline.IsZero() && time.Now().After(deadline) {
			return spool.Record{}, spool.ErrTimeout
		}
		select {
		case <-ctx.Done():
			return spool.Record{}, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (m *memSource) Ack(seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acked = max(m.acked, seq)
}

func (m *memSource) RecordedInFlight() (uint64, uint64, bool) { return 0, 0, false }
func (m *memSource) RecordInFlight(first, last uint64) error  { return nil }

type noDead struct{}

func (noDead) Put([]sink.Message, string) error {
	return errors.New("nothing may be dead-lettered here")
}

// rotation wires a token service, a fake vault and a pipeline as serve does.
type rotation struct {
	store *fakeStore
	cloud *cloud
	src   *memSource
	logs  *syncBuffer
	s     *settings
	stop  func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func startRotationTest(t *testing.T, token string, refresh time.Duration, c *cloud) *rotation {
	t.Helper()
	r := &rotation{store: newFakeStore(map[string]string{"TEST_TOKEN": token}), cloud: c, src: &memSource{}, logs: &syncBuffer{}}
	svc := Service{
		Name: "test",
		Vars: []config.Var{{Name: "TEST_TOKEN", Secret: true, Required: true, Doc: "Token."}},
		New: func(l *config.Loader, info Info) (sink.Sink, error) {
			tok := l.String("TEST_TOKEN")
			if !strings.HasPrefix(tok, "tok-") {
				l.Fail("TEST_TOKEN", tok, "a token starting with tok-")
			}
			s := &tokenSink{c: c, token: tok}
			c.mu.Lock()
			c.sinks = append(c.sinks, s)
			c.mu.Unlock()
			return s, nil
		},
	}
	env := func(string) (string, bool) { return "", false }
	log := slog.New(slog.NewJSONHandler(r.logs, nil))
	vs := &vaultState{store: r.store, env: env, refresh: refresh}
	l := config.NewLoader(vs.lookup(env), svc.AllVars())
	snk, err := svc.New(l, Info{Service: "test", Log: log})
	if err != nil || l.Err() != nil {
		t.Fatal(err, l.Err())
	}
	r.s = &settings{svc: svc, log: log, snk: snk, vault: vs}
	ctx, cancel := context.WithCancel(t.Context())
	onAuth, stopRotation := r.s.startRotation(ctx)
	pipe, err := pipeline.New(pipeline.Config{MaxMessages: 10, MaxWait: 5 * time.Millisecond, Concurrency: 3,
		RetryInitial: pipeline.RetryMin, RetryMax: 2 * pipeline.RetryMin},
		r.src, r.s.snk, noDead{}, pipeline.NewMetrics(metrics.NewRegistry()), log)
	if err != nil {
		t.Fatal(err)
	}
	pipe.OnAuthError = onAuth
	done := make(chan error, 1)
	go func() { done <- pipe.Run(ctx, ctx) }()
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pipeline: %v", err)
		}
		stopRotation()
		_ = r.s.snk.Close(context.Background())
	}
	return r
}

// waitDelivered waits until n distinct messages were delivered.
func (r *rotation) waitDelivered(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, _ := r.cloud.count()
		if u >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages delivered; logs:\n%s", u, n, r.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The destination rejects the old token: the vault is read again at once,
// the sink is rebuilt with the new token and swapped in, and every message
// is delivered.
func TestRotationOnAuthError(t *testing.T) {
	c := newCloud("tok-1")
	r := startRotationTest(t, "tok-1", 0, c)
	r.src.add(50)
	r.waitDelivered(t, 50)

	// The secret is rotated: the cloud takes only the new one, the vault holds it.
	c.setValid("tok-2")
	r.store.set("TEST_TOKEN", "tok-2")
	r.src.add(50)
	r.waitDelivered(t, 100)
	r.stop()

	if u, _ := c.count(); u != 100 {
		t.Errorf("%d messages delivered, want 100", u)
	}
	if c.byToken["tok-2"] != 50 {
		t.Errorf("by token %v", c.byToken)
	}
	if n := r.store.count(); n != 1 {
		t.Errorf("%d vault reads for one rotation; the authentication failures of every batch in flight should share one", n)
	}
	if len(c.sinks) != 2 || !c.sinks[0].closed {
		t.Errorf("%d sinks built; the old one closed: %v", len(c.sinks), len(c.sinks) > 0 && c.sinks[0].closed)
	}
	if c.writeOnClose != 0 {
		t.Errorf("%d writes reached a closed or unconnected sink", c.writeOnClose)
	}
	logs := r.logs.String()
	for _, want := range []string{`"msg":"values changed in Azure Key Vault"`, `"variables":["TEST_TOKEN"]`, "destination reconnected with the new values"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs miss %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "tok-1") || strings.Contains(logs, "tok-2") {
		t.Errorf("a secret value was logged:\n%s", logs)
	}
}

// On the refresh interval a changed secret is picked up before the old
// one stops working, while messages flow.
func TestRotationOnInterval(t *testing.T) {
	c := newCloud("tok-1", "tok-2")
	r := startRotationTest(t, "tok-1", 20*time.Millisecond, c)
	r.src.add(30)
	r.waitDelivered(t, 30)
	r.store.set("TEST_TOKEN", "tok-2")
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		r.src.add(10)
		r.waitDelivered(t, 40+10*i)
		c.mu.Lock()
		n := c.byToken["tok-2"]
		c.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new token was never used; logs:\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.stop()
	if c.writeOnClose != 0 {
		t.Errorf("%d writes reached a closed or unconnected sink", c.writeOnClose)
	}
	if _, total := c.count(); total < 40 {
		t.Errorf("total %d", total)
	}
}

// New values that do not validate leave the sink as it is, and are not
// tried again until they change; a new sink that fails to connect is
// tried again on the next refresh.
func TestRotationKeepsSinkOnBadValuesAndRetriesConnect(t *testing.T) {
	c := newCloud("tok-1", "tok-2")
	c.refuseToken = "tok-2"
	r := startRotationTest(t, "tok-1", 10*time.Millisecond, c)
	r.src.add(10)
	r.waitDelivered(t, 10)

	r.store.set("TEST_TOKEN", "not-a-token")
	waitFor(t, func() bool { return strings.Contains(r.logs.String(), "are not valid; keeping the destination") })
	reads := r.store.count()
	waitFor(t, func() bool { return r.store.count() > reads+3 })
	if n := strings.Count(r.logs.String(), "are not valid"); n != 1 {
		t.Errorf("invalid values tried %d times, want once", n)
	}

	r.store.set("TEST_TOKEN", "tok-2")
	waitFor(t, func() bool { return strings.Contains(r.logs.String(), "destination reconnected") })
	if !strings.Contains(r.logs.String(), "connecting with the new values from Azure Key Vault failed") {
		t.Errorf("the refused connect was not logged:\n%s", r.logs.String())
	}
	r.src.add(10)
	r.waitDelivered(t, 20)
	r.stop()
	if c.byToken["tok-2"] == 0 || c.writeOnClose != 0 {
		t.Errorf("by token %v, %d writes on a closed sink", c.byToken, c.writeOnClose)
	}
	if strings.Contains(r.logs.String(), "not-a-token") {
		t.Error("an invalid secret value was logged")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
