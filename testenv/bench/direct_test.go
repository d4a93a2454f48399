package bench

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// direct feeds n messages straight to svc's sink, built from env as the
// block builds it, in batches of batch messages, as many at once as the
// pipeline would send (the sink's MaxInFlight, 1 for stable batches, else
// BATCH_CONCURRENCY's default): the emulator's own ceiling for the batches
// the block sent, without MQTT or the spool.
func direct(t *testing.T, svc run.Service, env map[string]string, n, batch int) time.Duration {
	t.Helper()
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	l := config.NewLoader(lookup, svc.AllVars())
	s, err := svc.New(l, run.Info{Service: svc.Name, Device: "bench-direct", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil {
		err = l.Err()
	}
	if err != nil {
		t.Fatalf("%s: %v", svc.Name, err)
	}
	ctx := context.Background()
	defer s.Close(ctx)
	if err := procs.WaitFor(ctx, 30*time.Second, func() error { return s.Connect(ctx) }); err != nil {
		t.Fatalf("%s: connect: %v", svc.Name, err)
	}
	lim := s.Limits()
	conc := 4
	switch {
	case lim.StableBatches:
		conc = 1
	case lim.MaxInFlight > 0:
		conc = lim.MaxInFlight
	}
	if lim.MaxBatchMessages > 0 {
		batch = min(batch, lim.MaxBatchMessages)
	}
	batch = max(batch, 1)
	msgs := sinktest.Messages(n, func(i int) []byte { return harness.Payload(i, size) })
	work := make(chan []sink.Message)
	var wg sync.WaitGroup
	var once sync.Once
	var failed error
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if err := s.WriteBatch(ctx, b); err != nil {
					once.Do(func() { failed = err })
				}
			}
		}()
	}
	for i := 0; i < n; i += batch {
		work <- msgs[i:min(i+batch, n)]
	}
	close(work)
	wg.Wait()
	if failed != nil {
		t.Fatalf("%s: direct write: %v", svc.Name, failed)
	}
	return time.Since(start)
}

// meanBatch is the block's mean batch size as its metrics tell.
func meanBatch(b *harness.Block) int {
	batches := b.Metric("cloudblock_batches_total")
	if batches < 1 {
		return 1
	}
	return max(1, int(b.Metric("cloudblock_delivered_total")/batches+0.5))
}
