package emulators

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// PubSub is Google's pstest fake served by testenv/cmd/pstest-server. It is
// in memory: Stop loses all messages; Start re-creates the topics and
// subscriptions made with CreateTopicSubscription.
//
// Read messages back with Pull: streaming Receive is throttled to ~100
// messages/s by the fake's delivery timer.
type PubSub struct {
	Host    string // the PUBSUB_EMULATOR_HOST value: 127.0.0.1:PORT
	Project string // the project the helpers use
	*process
	admin *pubsub.Client // for the helpers; reconnects by itself after Start

	mu     sync.Mutex
	routes [][2]string // topic, subscription
}

var pstestBuild struct {
	once sync.Once
	path string
	err  error
}

// pstestServer builds cmd/pstest-server into .cache/bin once per test
// binary. The build holds a file lock, so test binaries of several packages
// never write the file at once; go build relinks only when the binary is out
// of date (a second or two otherwise) and replaces it by a new file, so a
// server still running from the old one is unaffected.
func pstestServer(t testing.TB) string {
	t.Helper()
	b := &pstestBuild
	b.once.Do(func() { b.path, b.err = buildPstestServer() })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildPstestServer() (string, error) {
	dir := filepath.Join(RepoRoot, ".cache", "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "pstest-server")
	unlock, err := procs.LockFile(bin + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pstest-server")
	cmd.Dir = filepath.Join(RepoRoot, "testenv")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pstest-server: %w\n%s", err, out)
	}
	return bin, nil
}

// StartPubSub builds (once) and starts pstest-server.
func StartPubSub(t testing.TB) *PubSub {
	t.Helper()
	bin := pstestServer(t)
	p := &PubSub{Project: "test-project"}
	p.process = startProcess(t, true, func(port int) procs.Spec {
		return procs.Spec{
			Name:  "pstest-server",
			Path:  bin,
			Args:  []string{"-listen", procs.Addr(port)},
			Ready: procs.TCPReady(procs.Addr(port)),
		}
	})
	p.Host = p.addr()
	p.admin = p.Client(t)
	return p
}

// Env returns PUBSUB_EMULATOR_HOST for a process under test.
func (p *PubSub) Env() []string { return []string{"PUBSUB_EMULATOR_HOST=" + p.Host} }

// ClientOptions do what the client does for PUBSUB_EMULATOR_HOST (plain
// gRPC, no credentials) without touching the environment, so tests may run
// in parallel. They also cap gRPC's reconnect back-off at one second: with
// the default, the first call after a 3 s outage waited ~8 s for the channel
// to try again.
func (p *PubSub) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(p.Host),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithGRPCDialOption(grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		})),
		option.WithoutAuthentication(),
		option.WithTelemetryDisabled(),
		// Without it the options are rejected: no credentials and a
		// non-Google endpoint look like a misconfiguration.
		internaloption.SkipDialSettingsValidation(),
	}
}

// Client returns a client for Project, closed when the test ends.
func (p *PubSub) Client(t testing.TB) *pubsub.Client {
	t.Helper()
	c, err := pubsub.NewClient(context.Background(), p.Project, p.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// CreateTopicSubscription creates topic and a subscription sub on it in
// Project; Start re-creates both after an outage.
func (p *PubSub) CreateTopicSubscription(t testing.TB, topic, sub string) {
	t.Helper()
	p.createRoute(t, topic, sub)
	p.mu.Lock()
	p.routes = append(p.routes, [2]string{topic, sub})
	p.mu.Unlock()
}

func (p *PubSub) createRoute(t testing.TB, topic, sub string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := p.admin.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: p.TopicName(topic)})
	if err != nil {
		t.Fatalf("create topic %q: %v", topic, err)
	}
	_, err = p.admin.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:  p.SubscriptionName(sub),
		Topic: tp.GetName(),
	})
	if err != nil {
		t.Fatalf("create subscription %q: %v", sub, err)
	}
}

// TopicName is the full resource name of topic in Project.
func (p *PubSub) TopicName(topic string) string {
	return fmt.Sprintf("projects/%s/topics/%s", p.Project, topic)
}

// SubscriptionName is the full resource name of sub in Project.
func (p *PubSub) SubscriptionName(sub string) string {
	return fmt.Sprintf("projects/%s/subscriptions/%s", p.Project, sub)
}

// Pull reads n messages from sub with synchronous pulls and acknowledges
// them, failing the test if they do not arrive within 30 s.
func (p *PubSub) Pull(t testing.TB, sub string, n int) []*pubsubpb.PubsubMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := p.admin.SubscriptionAdminClient
	var msgs []*pubsubpb.PubsubMessage
	for len(msgs) < n {
		resp, err := sc.Pull(ctx, &pubsubpb.PullRequest{
			Subscription: p.SubscriptionName(sub),
			MaxMessages:  int32(min(n-len(msgs), 1000)),
		})
		if err != nil {
			t.Fatalf("pull %q: got %d of %d messages: %v", sub, len(msgs), n, err)
		}
		var ids []string
		for _, m := range resp.GetReceivedMessages() {
			msgs = append(msgs, m.GetMessage())
			ids = append(ids, m.GetAckId())
		}
		if len(ids) == 0 {
			continue
		}
		err = sc.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: p.SubscriptionName(sub), AckIds: ids})
		if err != nil {
			t.Fatalf("ack %q: %v", sub, err)
		}
	}
	return msgs
}

// Start runs the fake again on the same port and re-creates the topics and
// subscriptions.
func (p *PubSub) Start() {
	p.process.t.Helper()
	if !p.restart() {
		return
	}
	p.mu.Lock()
	routes := append([][2]string(nil), p.routes...)
	p.mu.Unlock()
	for _, r := range routes {
		p.createRoute(p.process.t, r[0], r[1])
	}
}
