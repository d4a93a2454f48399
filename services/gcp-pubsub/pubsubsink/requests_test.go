package pubsubsink

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// requestCounter is a pstest reactor that records the size of every publish
// request and lets the fake handle it.
type requestCounter struct {
	mu    sync.Mutex
	sizes []int
}

func (r *requestCounter) React(req any) (bool, any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sizes = append(r.sizes, len(req.(*pubsubpb.PublishRequest).GetMessages()))
	return false, nil, nil
}

func (r *requestCounter) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sizes
	r.sizes = nil
	return s
}

// The client's own batching is matched to the pipeline's: a batch goes out
// as one request, right away, whatever its size up to Pub/Sub's limit.
func TestOneRequestPerBatch(t *testing.T) {
	rc := &requestCounter{}
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "Publish", Reactor: rc})
	t.Cleanup(func() { srv.Close() })
	if _, err := srv.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: "projects/p1/topics/batches"}); err != nil {
		t.Fatal(err)
	}
	for _, ordering := range []string{"none", "device"} {
		s := sinktest.Connected(t, envSink(t, map[string]string{"GCP_PUBSUB_TOPIC": "batches", "GCP_PUBSUB_PROJECT_ID": "p1", "PUBSUB_EMULATOR_HOST": srv.Addr, "GCP_PUBSUB_ORDERING_KEY": ordering}))
		ctx := context.Background()
		for _, n := range []int{1, 10, 500, 1000} {
			batch := make([]sink.Message, n)
			for i := range batch {
				batch[i] = sink.Message{ID: fmt.Sprintf("%s-%d-%d", ordering, n, i), Topic: "t", Received: time.Now(), Payload: make([]byte, 200)}
			}
			start := time.Now()
			if err := s.WriteBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if got := rc.take(); len(got) != 1 || got[0] != n {
				t.Errorf("ordering %s: a batch of %d went out as requests of %v", ordering, n, got)
			}
			t.Logf("ordering %s: batch of %d published in %s", ordering, n, took.Round(time.Microsecond))
		}
		s.Close(ctx)
	}
}

// ackAll answers every publish at once without storing it, so the benchmark
// measures the client and the sink more than the fake.
type ackAll struct{}

func (ackAll) React(req any) (bool, any, error) {
	ids := make([]string, len(req.(*pubsubpb.PublishRequest).GetMessages()))
	for i := range ids {
		ids[i] = "m"
	}
	return true, &pubsubpb.PublishResponse{MessageIds: ids}, nil
}

// BenchmarkWriteBatch publishes batches of 500 messages of 200 bytes
// through the real client to an in-process pstest. cpu-ns/msg is the
// process's CPU time, the fake's share (gRPC decoding) included.
func BenchmarkWriteBatch(b *testing.B) {
	srv := pstest.NewServer(pstest.ServerReactorOption{FuncName: "Publish", Reactor: ackAll{}})
	b.Cleanup(func() { srv.Close() })
	env := map[string]string{"GCP_PUBSUB_TOPIC": "bench", "GCP_PUBSUB_PROJECT_ID": "p1", "PUBSUB_EMULATOR_HOST": srv.Addr}
	s := sinktest.Connected(b, newSink(sinktest.MustLoad(b, env, Service.AllVars(), loadDev), dialSDK))
	ctx := context.Background()
	batch := make([]sink.Message, 500)
	for i := range batch {
		batch[i] = sink.Message{ID: fmt.Sprintf("6b0a8d958a8b-%012d", i), Topic: "cloud-input", Received: time.Now(), Payload: make([]byte, 200)}
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	start := cpu()
	for range b.N {
		if err := s.WriteBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	msgs := float64(b.N * len(batch))
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/msgs, "ns/msg")
	b.ReportMetric(float64((cpu()-start).Nanoseconds())/msgs, "cpu-ns/msg")
}
