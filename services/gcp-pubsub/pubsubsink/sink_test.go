package pubsubsink

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func TestEnvTable(t *testing.T) { sinktest.EnvTable(t, Service) }

func TestConformanceFake(t *testing.T) {
	f := newFakePub()
	sinktest.Run(t, sinktest.Harness{
		New: func(t *testing.T) sink.Sink { return fakeSink(t, f, nil) },
		NewBroken: func(t *testing.T) sink.Sink {
			s := fakeSink(t, f, nil)
			s.dial = func(context.Context, Config) (publisher, error) {
				return nil, status.Error(codes.Unavailable, "connection refused")
			}
			return s
		},
		ReadBack: func(t *testing.T, ids []string) map[string][]byte { return f.byID() },
	})
}

// connected returns a sink on f configured from env, connected.
func connected(t *testing.T, f *fakePub, env map[string]string) *Sink {
	t.Helper()
	return sinktest.Connected(t, fakeSink(t, f, env))
}

// msgs is a batch of the payloads; ids epoch-000000000001 and on.
func msgs(payloads ...string) []sink.Message {
	return sinktest.Batch("epoch", "cloud-input/sensors", time.Date(2024, 3, 5, 7, 8, 9, 123456000, time.FixedZone("x", 3600)), payloads...)
}

func TestMessageMapping(t *testing.T) {
	for _, mode := range []string{"none", "device", "topic"} {
		f := newFakePub()
		s := connected(t, f, map[string]string{"GCP_PUBSUB_ORDERING_KEY": mode})
		batch := msgs("{\"t\":21.5}", "")
		batch[1].Payload = []byte{0, 0xff, 0xfe}
		batch[1].Topic = "bad\xfftopic"
		if err := s.WriteBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
		if len(f.published) != 2 {
			t.Fatalf("%d published", len(f.published))
		}
		m := f.published[0]
		want := map[string]string{"id": "epoch-000000000001", "topic": "cloud-input/sensors", "received": "2024-03-05T06:08:09.123456Z", "device": "dev-1"}
		for k, v := range want {
			if m.Attributes[k] != v {
				t.Errorf("%s: attribute %s = %q, want %q", mode, k, m.Attributes[k], v)
			}
		}
		if len(m.Attributes) != len(want) || string(m.Data) != `{"t":21.5}` {
			t.Errorf("%s: got %v %q", mode, m.Attributes, m.Data)
		}
		// A topic that is not UTF-8 travels base64-encoded (protobuf strings must be UTF-8).
		b := f.published[1]
		if _, ok := b.Attributes["topic"]; ok || b.Attributes["topic_base64"] != "YmFk/3RvcGlj" || !bytes.Equal(b.Data, []byte{0, 0xff, 0xfe}) {
			t.Errorf("%s: got %v %q", mode, b.Attributes, b.Data)
		}
		wantKey := map[string][2]string{"none": {"", ""}, "device": {"dev-1", "dev-1"}, "topic": {"cloud-input/sensors", "YmFk/3RvcGlj"}}[mode]
		if m.OrderingKey != wantKey[0] || b.OrderingKey != wantKey[1] {
			t.Errorf("%s: ordering keys %q %q", mode, m.OrderingKey, b.OrderingKey)
		}
		if lim := s.Limits(); (lim.MaxInFlight == 1) != (mode != "none") || lim.MaxBatchMessages != 1000 || lim.MaxBatchBytes != 10_000_000-len("projects/p1/topics/tp1")-16 {
			t.Errorf("%s: limits %+v", mode, lim)
		}
	}
}

func TestPartialFailureNamesOnlyTheFailed(t *testing.T) {
	f := newFakePub()
	f.fail = func(m *pubsub.Message, attempt int) error {
		if strings.HasSuffix(string(m.Data), "!") && attempt == 1 {
			return status.Error(codes.Unavailable, "try again")
		}
		return nil
	}
	s := connected(t, f, nil)
	batch := msgs("a", "b!", "c", "d!", "e")
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 2 || be.Failed[1] == nil || be.Failed[3] == nil || sink.IsPermanent(be.Failed[1]) {
		t.Fatalf("got %v", err)
	}
	if err := s.WriteBatch(context.Background(), []sink.Message{batch[1], batch[3]}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(f.published) != 5 {
		t.Errorf("%d published", len(f.published))
	}
}

func TestWholeBatchErrors(t *testing.T) {
	for _, tc := range []struct {
		code            codes.Code
		auth, permanent bool
		text            string
	}{
		{codes.PermissionDenied, true, false, "needs the Pub/Sub Publisher role"},
		{codes.Unauthenticated, true, false, "was refused"},
		{codes.NotFound, false, false, "topic projects/p1/topics/tp1 not found (create it, or check GCP_PUBSUB_TOPIC and GCP_PUBSUB_PROJECT_ID)"},
		{codes.Unavailable, false, false, "all 3 messages failed: pubsub: publishing to projects/p1/topics/tp1"},
		{codes.ResourceExhausted, false, false, "quota"},
	} {
		f := newFakePub()
		f.fail = func(*pubsub.Message, int) error { return status.Error(tc.code, "quota or whatever") }
		s := connected(t, f, nil)
		err := s.WriteBatch(context.Background(), msgs("a", "b", "c"))
		if err == nil || sink.IsAuth(err) != tc.auth || sink.IsPermanent(err) != tc.permanent || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: got %v (auth %v, permanent %v)", tc.code, err, sink.IsAuth(err), sink.IsPermanent(err))
		}
		var be *sink.BatchError
		if errors.As(err, &be) {
			t.Errorf("%s: a whole-batch failure came as a BatchError: %v", tc.code, err)
		}
	}
}

func TestTooLargeIsPermanent(t *testing.T) {
	f := newFakePub()
	f.fail = func(m *pubsub.Message, _ int) error {
		if string(m.Data) == "client-says-oversized" {
			return pubsub.ErrOversizedMessage
		}
		return nil
	}
	s := connected(t, f, map[string]string{"GCP_PUBSUB_MAX_MESSAGE_BYTES": "100"})
	batch := msgs(strings.Repeat("x", 100), strings.Repeat("x", 101), "ok", "client-says-oversized", "ok")
	batch[2].Topic = strings.Repeat("t", 1025)
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 3 {
		t.Fatalf("got %v", err)
	}
	for i, want := range map[int]string{
		1: "payload of 101 bytes exceeds GCP_PUBSUB_MAX_MESSAGE_BYTES (100)",
		2: `attribute "topic" of 1025 bytes exceeds Pub/Sub's limit of 1024`,
		3: "larger than a publish request may be",
	} {
		if e := be.Failed[i]; !sink.IsPermanent(e) || !strings.Contains(e.Error(), want) {
			t.Errorf("[%d] = %v, want permanent %q", i, e, want)
		}
	}
	// Checked before publishing: the client never saw them.
	if f.attempts["epoch-000000000002"] != 0 || f.attempts["epoch-000000000003"] != 0 {
		t.Errorf("oversized messages were published: %v", f.attempts)
	}
}

// A request Pub/Sub refuses fails every message in it; the sink publishes
// them again one by one to find the one refused for itself.
func TestInvalidArgumentIsolated(t *testing.T) {
	f := newFakePub()
	f.fail = func(m *pubsub.Message, attempt int) error {
		if attempt == 1 || string(m.Data) == "bad" {
			return status.Error(codes.InvalidArgument, "request refused")
		}
		return nil
	}
	s := connected(t, f, nil)
	err := s.WriteBatch(context.Background(), msgs("a", "bad", "c"))
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || !sink.IsPermanent(be.Failed[1]) {
		t.Fatalf("got %v", err)
	}
	if got := f.byID(); len(got) != 2 || string(got["epoch-000000000001"]) != "a" || string(got["epoch-000000000003"]) != "c" {
		t.Errorf("published %v", got)
	}
	// Alone in its batch, InvalidArgument is permanent at once.
	err = s.WriteBatch(context.Background(), msgs("bad"))
	if !errors.As(err, &be) || !sink.IsPermanent(be.Failed[0]) {
		t.Errorf("single: %v", err)
	}
}

// With ordering keys the client pauses a key after a failure; the sink
// resumes it so the retried messages (and later batches) go through.
func TestOrderingKeyResumedAfterFailure(t *testing.T) {
	f := newFakePub()
	f.fail = func(m *pubsub.Message, attempt int) error {
		if string(m.Data) == "b" && attempt == 1 {
			return status.Error(codes.Unavailable, "blip")
		}
		return nil
	}
	s := connected(t, f, map[string]string{"GCP_PUBSUB_ORDERING_KEY": "device"})
	batch := msgs("a", "b", "c", "d")
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 3 || be.Failed[0] != nil {
		t.Fatalf("got %v", err)
	}
	var paused pubsub.ErrPublishingPaused
	if !errors.As(be.Failed[2], &paused) || sink.IsPermanent(be.Failed[2]) {
		t.Errorf("[2] = %v", be.Failed[2])
	}
	if len(f.resumed) != 1 || f.resumed[0] != "dev-1" {
		t.Errorf("resumed %v", f.resumed)
	}
	if err := s.WriteBatch(context.Background(), batch[1:]); err != nil {
		t.Fatalf("retry: %v", err)
	}
	var order []string
	for _, m := range f.published {
		order = append(order, string(m.Data))
	}
	if strings.Join(order, "") != "abcd" {
		t.Errorf("order %v", order)
	}
}

func TestContextEndsTheWait(t *testing.T) {
	f := newFakePub()
	f.hold = make(chan struct{})
	defer close(f.hold)
	s := connected(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.WriteBatch(ctx, msgs("a", "b"))
	if !errors.Is(err, context.DeadlineExceeded) || sink.IsPermanent(err) || time.Since(start) > 5*time.Second {
		t.Errorf("got %v after %s", err, time.Since(start))
	}
}

func TestCloseIdempotentAndBounded(t *testing.T) {
	f := newFakePub()
	s := connected(t, f, nil)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil || f.stops != 1 {
		t.Errorf("second close: %v, stops %d", err, f.stops)
	}
	if err := s.WriteBatch(context.Background(), msgs("a")); err == nil || sink.IsPermanent(err) {
		t.Errorf("write after close: %v", err)
	}
	// Never connected.
	if err := fakeSink(t, f, nil).Close(context.Background()); err != nil {
		t.Error(err)
	}
	// A Stop that hangs (publishing to an unreachable server) ends with the context.
	s = fakeSink(t, nil, nil)
	block := make(chan struct{})
	defer close(block)
	s.dial = func(context.Context, Config) (publisher, error) { return stuckPub{block}, nil }
	s.Connect(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("close with a stuck client: %v", err)
	}
}

type stuckPub struct{ block chan struct{} }

func (stuckPub) Publish(context.Context, *pubsub.Message) result { return nil }
func (stuckPub) Flush()                                          {}
func (stuckPub) ResumePublish(string)                            {}
func (p stuckPub) Stop() error                                   { <-p.block; return nil }

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GCP_PUBSUB_TOPIC is not set: required: Topic to publish to: its id (in GCP_PUBSUB_PROJECT_ID) or its full name `projects/<project>/topics/<id>`. It must exist; the service account needs the Pub/Sub Publisher role on it."},
		{map[string]string{"GCP_PUBSUB_TOPIC": "tp1"}, "GCP_PUBSUB_PROJECT_ID is not set: required when GCP_PUBSUB_TOPIC is a topic id and the credentials name no project_id"},
		{map[string]string{"GCP_PUBSUB_TOPIC": "1abc", "GCP_PUBSUB_PROJECT_ID": "p"},
			`GCP_PUBSUB_TOPIC="1abc" is invalid: want a topic id (3 to 255 letters, digits and - _ . ~ + %, starting with a letter) or projects/<project>/topics/<id>`},
		{map[string]string{"GCP_PUBSUB_TOPIC": "projects/p/subscriptions/s"},
			`GCP_PUBSUB_TOPIC="projects/p/subscriptions/s" is invalid: want a topic id (3 to 255 letters, digits and - _ . ~ + %, starting with a letter) or projects/<project>/topics/<id>`},
		{map[string]string{"GCP_PUBSUB_TOPIC": "projects/p/topics/tp1", "GCP_PUBSUB_ORDERING_KEY": "partition"},
			`GCP_PUBSUB_ORDERING_KEY="partition" is invalid: want one of none, device, topic`},
		{map[string]string{"GCP_PUBSUB_TOPIC": "projects/p/topics/tp1", "GCP_PUBSUB_MAX_MESSAGE_BYTES": "20MB"},
			`GCP_PUBSUB_MAX_MESSAGE_BYTES="20MB" is invalid: want a size such as 262144, 256KiB or 64MiB, from 1 to 9995904`},
		{map[string]string{"GCP_PUBSUB_TOPIC": "projects/p/topics/tp1", "GCP_PUBSUB_CLIENT_EMAIL": "sa@p.iam.gserviceaccount.com"},
			"GCP_PUBSUB_PRIVATE_KEY is not set: required when GCP_PUBSUB_CLIENT_EMAIL is set"},
		{map[string]string{"GCP_PUBSUB_TOPIC": "projects/p/topics/tp1", "GCP_PUBSUB_ENDPOINT": "https://pubsub.example.com"},
			`GCP_PUBSUB_ENDPOINT="https://pubsub.example.com" is invalid: want host:port, such as localhost:8085 (a port from 1 to 65535)`},
		{map[string]string{"GCP_PUBSUB_TOPIC": "projects/p/topics/tp1", "GCP_PUBSUB_ENDPOINT": "europe-west1-pubsub.googleapis.com:443", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"},
			`GCP_PUBSUB_ENDPOINT="europe-west1-pubsub.googleapis.com:443" is invalid: want unset when PUBSUB_EMULATOR_HOST is set: an emulator is reached without TLS or credentials, an endpoint with both`},
	} {
		_, err := loadEnv(tc.env)
		if err == nil || err.Error() != tc.want {
			t.Errorf("env %v:\n got %v\nwant %s", tc.env, err, tc.want)
		}
	}
	// The full name carries the project; the subscription is accepted.
	cfg, err := loadEnv(map[string]string{"GCP_PUBSUB_TOPIC": "projects/other/topics/t.1", "GCP_PUBSUB_SUBSCRIPTION": "s"})
	if err != nil || cfg.topic != "projects/other/topics/t.1" || cfg.project != "other" || cfg.maxMessage != 9995904 {
		t.Errorf("got %+v %v", cfg, err)
	}
}

// The client takes the key built from the original block's variables (no
// network is needed to create it: nothing is sent until a publish).
func TestDialWithServiceAccountKey(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	key := strings.ReplaceAll(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "\n", `\n`)
	cfg, err := loadEnv(map[string]string{"GCP_PUBSUB_TOPIC": "tp1", "GCP_PUBSUB_PROJECT_ID": "p1",
		"GCP_PUBSUB_CLIENT_EMAIL": "sa@p1.iam.gserviceaccount.com", "GCP_PUBSUB_PRIVATE_KEY": key})
	if err != nil {
		t.Fatal(err)
	}
	p, err := dialSDK(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Error(err)
	}
}
