package pubsubsink

import (
	"context"
	"slices"
	"sync"
	"testing"

	"cloud.google.com/go/pubsub/v2"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// fakePub stands in for the SDK's publisher. Like the client, it pauses an
// ordering key after a failure: later messages of that key fail with
// ErrPublishingPaused until ResumePublish.
type fakePub struct {
	mu sync.Mutex
	// fail, if set, returns the error for a message (nil publishes it).
	fail func(m *pubsub.Message, attempt int) error
	// hold, if set, keeps every result pending until it is closed.
	hold chan struct{}

	published []*pubsub.Message
	attempts  map[string]int // by id attribute
	paused    map[string]bool
	resumed   []string
	stops     int

	// For the check: GetTopic's error, and the permissions granted.
	topicErr error
	granted  []string
}

func newFakePub() *fakePub {
	return &fakePub{attempts: map[string]int{}, paused: map[string]bool{}}
}

type fakeResult struct {
	err   error
	ready <-chan struct{}
}

func (r fakeResult) Get(ctx context.Context) (string, error) {
	if r.ready != nil {
		select {
		case <-r.ready:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if r.err != nil {
		return "", r.err
	}
	return "server-id", nil
}

func (f *fakePub) Publish(_ context.Context, m *pubsub.Message) result {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := m.Attributes[attrID]
	f.attempts[id]++
	var err error
	switch {
	case m.OrderingKey != "" && f.paused[m.OrderingKey]:
		err = pubsub.ErrPublishingPaused{OrderingKey: m.OrderingKey}
	case f.fail != nil:
		err = f.fail(m, f.attempts[id])
	}
	if err != nil && m.OrderingKey != "" {
		f.paused[m.OrderingKey] = true
	}
	if err == nil {
		f.published = append(f.published, m)
	}
	return fakeResult{err: err, ready: f.hold}
}

func (f *fakePub) Flush() {}

func (f *fakePub) ResumePublish(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.paused, key)
	f.resumed = append(f.resumed, key)
}

func (f *fakePub) Stop() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stops++
	return nil
}

func (f *fakePub) getTopic(context.Context, string) error { return f.topicErr }

func (f *fakePub) testPermissions(_ context.Context, _ string, perms []string) ([]string, error) {
	var out []string
	for _, p := range perms {
		if slices.Contains(f.granted, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// byID returns the published payloads by id attribute.
func (f *fakePub) byID() map[string][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]byte{}
	for _, m := range f.published {
		out[m.Attributes[attrID]] = m.Data
	}
	return out
}

// fakeEnv is the least the sink needs besides a test's own variables.
var fakeEnv = map[string]string{"GCP_PUBSUB_TOPIC": "tp1", "GCP_PUBSUB_PROJECT_ID": "p1"}

// loadDev is the service's load for the device the tests use.
func loadDev(l *config.Loader) (Config, error) { return load(l, "dev-1"), nil }

// loadEnv reads the service's variables from env the way run does.
func loadEnv(env map[string]string) (Config, error) {
	return sinktest.Load(env, Service.AllVars(), loadDev)
}

// fakeSink returns a sink on f configured from env (plus a topic and project).
func fakeSink(t *testing.T, f *fakePub, env map[string]string) *Sink {
	t.Helper()
	cfg := sinktest.MustLoad(t, sinktest.With(fakeEnv, env), Service.AllVars(), loadDev)
	return newSink(cfg, func(context.Context, Config) (publisher, error) { return f, nil })
}
