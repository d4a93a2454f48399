package pubsubsink

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// pstestMaxMessage fits pstest, whose gRPC server takes at most 4 MiB a
// request (grpc-go's default): the payload plus attributes and framing.
const pstestMaxMessage = 4<<20 - 4<<10

// puller reads a subscription with synchronous pulls (the fake's streaming
// pull is throttled to ~100 messages/s) and remembers what it read.
type puller struct {
	ps  *emulators.PubSub
	sub string

	mu   sync.Mutex
	got  []*pubsubpb.PubsubMessage
	byID map[string][]byte
}

func newPuller(ps *emulators.PubSub, sub string) *puller {
	return &puller{ps: ps, sub: sub, byID: map[string][]byte{}}
}

// pull reads and acknowledges whatever is available now.
func (p *puller) pull(t testing.TB) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := p.ps.Client(t).SubscriptionAdminClient
	n := 0
	for {
		resp, err := sc.Pull(ctx, &pubsubpb.PullRequest{Subscription: p.ps.SubscriptionName(p.sub), MaxMessages: 1000, ReturnImmediately: true})
		if err != nil {
			t.Fatalf("pull %s: %v", p.sub, err)
		}
		var acks []string
		p.mu.Lock()
		for _, m := range resp.GetReceivedMessages() {
			p.got = append(p.got, m.GetMessage())
			p.byID[m.GetMessage().GetAttributes()[attrID]] = m.GetMessage().GetData()
			acks = append(acks, m.GetAckId())
		}
		p.mu.Unlock()
		if len(acks) == 0 {
			return n
		}
		n += len(acks)
		if err := sc.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: p.ps.SubscriptionName(p.sub), AckIds: acks}); err != nil {
			t.Fatalf("ack %s: %v", p.sub, err)
		}
	}
}

// find pulls until every id was read (or 30 s pass) and returns the payloads.
func (p *puller) find(t testing.TB, ids []string) map[string][]byte {
	t.Helper()
	procs.WaitFor(context.Background(), 30*time.Second, func() error {
		p.pull(t)
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, id := range ids {
			if _, ok := p.byID[id]; !ok {
				return context.DeadlineExceeded
			}
		}
		return nil
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]byte{}
	for _, id := range ids {
		if d, ok := p.byID[id]; ok {
			out[id] = d
		}
	}
	return out
}

// messages returns everything read so far.
func (p *puller) messages() []*pubsubpb.PubsubMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*pubsubpb.PubsubMessage(nil), p.got...)
}

// envSink is the real sink configured from env.
func envSink(t *testing.T, env map[string]string) *Sink {
	t.Helper()
	return newSink(sinktest.MustLoad(t, env, Service.AllVars(), loadDev), dialSDK)
}

func emulatorEnv(ps *emulators.PubSub, topic string) map[string]string {
	return map[string]string{
		"GCP_PUBSUB_TOPIC":             topic,
		"GCP_PUBSUB_PROJECT_ID":        ps.Project,
		"PUBSUB_EMULATOR_HOST":         ps.Host,
		"GCP_PUBSUB_MAX_MESSAGE_BYTES": strconv.Itoa(pstestMaxMessage),
	}
}

func TestConformanceEmulator(t *testing.T) {
	ps := emulators.StartPubSub(t)
	ps.CreateTopicSubscription(t, "conformance", "conformance-sub")
	env := emulatorEnv(ps, "conformance")
	p := newPuller(ps, "conformance-sub")
	sinktest.Run(t, sinktest.Harness{
		New: func(t *testing.T) sink.Sink { return envSink(t, env) },
		NewBroken: func(t *testing.T) sink.Sink {
			broken := map[string]string{}
			for k, v := range env {
				broken[k] = v
			}
			broken["PUBSUB_EMULATOR_HOST"] = procs.Addr(procs.FreePort(t))
			s := envSink(t, broken)
			s.cfg.publishTimeout = 3 * time.Second
			return s
		},
		ReadBack: func(t *testing.T, ids []string) map[string][]byte { return p.find(t, ids) },
	})
}

// The real client against the emulator: attributes and ordering keys as a
// subscriber sees them, a missing topic is a retryable error naming it.
func TestEmulatorAttributesAndErrors(t *testing.T) {
	ps := emulators.StartPubSub(t)
	ps.CreateTopicSubscription(t, "attrs", "attrs-sub")
	env := emulatorEnv(ps, "attrs")
	env["GCP_PUBSUB_ORDERING_KEY"] = "topic"
	s := sinktest.Connected(t, envSink(t, env))
	ctx := context.Background()
	batch := msgs("one", "two")
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	p := newPuller(ps, "attrs-sub")
	p.find(t, []string{batch[0].ID, batch[1].ID})
	for _, m := range p.messages() {
		a := m.GetAttributes()
		if a["topic"] != "cloud-input/sensors" || a["device"] != "dev-1" || a["received"] != "2024-03-05T06:08:09.123456Z" || m.GetOrderingKey() != "cloud-input/sensors" {
			t.Errorf("message %s: attributes %v, ordering key %q", m.GetData(), a, m.GetOrderingKey())
		}
	}

	env["GCP_PUBSUB_TOPIC"] = "missing"
	s2 := envSink(t, env)
	s2.Connect(ctx)
	defer s2.Close(ctx)
	err := s2.WriteBatch(ctx, msgs("x"))
	if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) {
		t.Fatalf("publish to a missing topic: %v", err)
	}
	if want := "topic projects/test-project/topics/missing not found"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}
