package emulators

import (
	"bytes"
	"context"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
)

func publish(t *testing.T, ctx context.Context, pub *pubsub.Publisher, data []byte) {
	t.Helper()
	if _, err := pub.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func TestPubSub(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	began := time.Now()
	p := StartPubSub(t)
	t.Logf("pstest-server built and started in %s at %s", time.Since(began), p.Host)
	p.CreateTopicSubscription(t, "tp", "sub")
	pub := p.Client(t).Publisher("tp")
	defer pub.Stop()

	body := payload(64 << 10)
	publish(t, ctx, pub, body)
	if got := p.Pull(t, "sub", 1); !bytes.Equal(got[0].GetData(), body) {
		t.Fatalf("pulled %d bytes differ from the %d published", len(got[0].GetData()), len(body))
	}

	p.Stop()
	// Checked with an admin call, not a publish: the publisher keeps
	// retrying a publish whose Get timed out and may deliver it after Start.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := p.Client(t).TopicAdminClient.GetTopic(short, &pubsubpb.GetTopicRequest{Topic: p.TopicName("tp")})
	cancel()
	if err == nil {
		t.Fatal("request succeeded while pstest-server was stopped")
	}
	began = time.Now()
	p.Start()
	t.Logf("pstest-server restarted in %s", time.Since(began))

	// The topic and subscription were re-created by Start; the same
	// publisher reaches them again.
	began = time.Now()
	publish(t, ctx, pub, []byte("after restart"))
	t.Logf("first publish after restart took %s", time.Since(began))
	if got := p.Pull(t, "sub", 1); string(got[0].GetData()) != "after restart" {
		t.Fatalf("pulled %q after restart", got[0].GetData())
	}
}
