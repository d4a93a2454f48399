package sqssink

import (
	"context"
	"testing"

	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/harness"
)

// BenchmarkWriteBatch sends batches of 10 200-byte messages through the
// real SDK client to the in-process fake: with -cpuprofile, the sink's and
// the SDK's share of a message's CPU, apart from MQTT and the spool.
func BenchmarkWriteBatch(b *testing.B) {
	be := newBackend(b)
	s, err := load(be.env(be.createQueue(b, false)), "bench")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	msgs := sinktest.Messages(10, func(i int) []byte { return harness.Payload(i, 200) })
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := s.WriteBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*10), "µs/msg")
}
