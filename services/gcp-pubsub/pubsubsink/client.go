package pubsubsink

import (
	"context"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	vkit "cloud.google.com/go/pubsub/v2/apiv1"
	gax "github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/cloud-block/cloud-block/common/gcpcreds"
)

// publisher is the part of *pubsub.Publisher the sink uses. Publish returns
// an interface because the SDK's PublishResult cannot be made outside it, so
// a fake could not return one.
type publisher interface {
	Publish(ctx context.Context, msg *pubsub.Message) result
	// Flush sends what is queued and waits until it was sent.
	Flush()
	ResumePublish(orderingKey string)
	// Stop sends what is queued, stops the publisher and closes its client.
	Stop() error
}

// result is the part of *pubsub.PublishResult the sink uses.
type result interface {
	Get(ctx context.Context) (serverID string, err error)
}

// dialer creates the client and its publisher for the topic.
type dialer func(ctx context.Context, cfg Config) (publisher, error)

type sdkPublisher struct {
	client *pubsub.Client
	pub    *pubsub.Publisher
	// mu puts every Flush before Stop: the client's Flush reads the flag
	// Stop sets without taking its lock.
	mu sync.RWMutex
}

func (p *sdkPublisher) Publish(ctx context.Context, msg *pubsub.Message) result {
	return p.pub.Publish(ctx, msg)
}

func (p *sdkPublisher) Flush() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	p.pub.Flush()
}

func (p *sdkPublisher) ResumePublish(key string) { p.pub.ResumePublish(key) }

func (p *sdkPublisher) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pub.Stop()
	return p.client.Close()
}

// noRetry leaves retrying to the pipeline, which retries only the failed
// messages with its own backoff (RETRY_*), logs each failure and reports it
// on /ready. The client's default retries a failed request for up to a
// minute, backing off to 60 s, which hides an outage and delays the drain
// after it.
var noRetry = gax.WithRetry(func() gax.Retryer { return gax.OnCodes(nil, gax.Backoff{}) })

// reconnect bounds gRPC's wait between connection attempts (default up to
// 2 minutes), so the backlog starts draining within seconds of the network
// or the service coming back.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
	MinConnectTimeout: 20 * time.Second,
}

// liveness makes gRPC notice a connection the network silently dropped (a
// NAT that forgot it, a cellular link that changed): without it every
// publish waits its SEND_TIMEOUT on the dead connection and is retried on
// it again, until TCP gives up after many minutes. With it, a connection
// quiet for 30 s is pinged and closed when no answer comes within 20 s, and
// the next attempt dials afresh. Google's front ends accept pings this
// often while calls are active; none are sent while idle.
var liveness = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second}

// dialSDK creates the Pub/Sub client. Nothing is sent until the first
// publish: Connect cannot check the topic, as the Publisher role it needs
// does not allow reading it.
func dialSDK(ctx context.Context, cfg Config) (publisher, error) {
	opts := []option.ClientOption{
		// One connection: the default opens up to four per client, far more
		// than a device publishing a few thousand messages a second needs.
		option.WithGRPCConnectionPool(1),
		option.WithTelemetryDisabled(),
		option.WithGRPCDialOption(grpc.WithConnectParams(reconnect)),
		option.WithGRPCDialOption(grpc.WithKeepaliveParams(liveness)),
	}
	switch {
	case cfg.emulator != "":
		// What the client does itself when PUBSUB_EMULATOR_HOST is in the
		// process environment; done here too so the value may come from the
		// configuration lookup like any other.
		opts = append(opts,
			option.WithEndpoint(cfg.emulator),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
			option.WithoutAuthentication(),
			internaloption.SkipDialSettingsValidation(),
		)
	case cfg.creds.Type == gcpcreds.ExternalAccount:
		creds, err := federated(cfg.creds, cfg.tokens)
		if err != nil {
			return nil, err
		}
		opts = append(opts, option.WithAuthCredentials(creds))
	case cfg.creds.JSON != nil:
		opts = append(opts, option.WithAuthCredentialsJSON(option.CredentialsType(cfg.creds.Type), cfg.creds.JSON))
	}
	if cfg.endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.endpoint))
	}
	project := cfg.project
	if project == "" {
		project = pubsub.DetectProjectID
	}
	client, err := pubsub.NewClientWithConfig(ctx, project, &pubsub.ClientConfig{
		TopicAdminCallOptions: &vkit.TopicAdminCallOptions{Publish: []gax.CallOption{noRetry}},
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub: creating the client: %w", err)
	}
	pub := client.Publisher(cfg.topic)
	pub.PublishSettings = publishSettings(cfg)
	pub.EnableMessageOrdering = cfg.ordering != orderNone
	return &sdkPublisher{client: client, pub: pub}, nil
}

// publishSettings match the client's own batching to the pipeline's: a
// batch arrives whole, so the client should send it as one request at once
// rather than wait to fill a request of its own.
func publishSettings(cfg Config) pubsub.PublishSettings {
	s := pubsub.DefaultPublishSettings
	// A request is cut only at Pub/Sub's limits, which are also the biggest
	// batch the sink accepts. WriteBatch flushes once the batch is queued;
	// the delay only keeps the client's timer from cutting a batch in two
	// while it is being queued (the default 10 ms is less than queuing 1,000
	// messages takes on a small device).
	s.CountThreshold = pubsub.MaxPublishRequestCount
	s.ByteThreshold = maxBatchBytes(cfg.topic)
	s.DelayThreshold = time.Second
	if cfg.publishTimeout > 0 {
		s.Timeout = cfg.publishTimeout
	}
	// The pipeline bounds what is in flight (BATCH_CONCURRENCY batches); the
	// client's flow control must never block a Publish on top of that, or a
	// batch larger than its budget would wait for itself.
	s.FlowControlSettings = pubsub.FlowControlSettings{LimitExceededBehavior: pubsub.FlowControlIgnore}
	return s
}
