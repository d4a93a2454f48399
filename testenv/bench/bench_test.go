// Package bench measures the pipeline against the plain-subscriber ceiling
// within one run (the machine is shared and noisy: only ratios measured
// side by side mean anything). Run with `make bench`; skipped otherwise.
package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

const size = 200

func messages() int {
	if v := os.Getenv("BENCH_MESSAGES"); v != "" {
		var n int
		fmt.Sscan(v, &n)
		return n
	}
	return 50000
}

func skipUnlessBench(t *testing.T) {
	if os.Getenv("CLOUDBLOCK_BENCH") == "" {
		t.Skip("benchmarks run with `make bench` (CLOUDBLOCK_BENCH=1)")
	}
}

// ceiling: a paho client that only counts, persistent session, auto-ack.
func ceiling(t *testing.T, broker *harness.Mosquitto, n int) time.Duration {
	var got atomic.Int64
	done := make(chan struct{})
	o := paho.NewClientOptions().AddBroker("tcp://" + broker.Addr()).SetClientID("bench-counter").
		SetCleanSession(false).SetOrderMatters(false)
	o.SetDefaultPublishHandler(func(paho.Client, paho.Message) {
		if got.Add(1) == int64(n) {
			close(done)
		}
	})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe("cloud-input", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := harness.NewPublisher(t, broker, "cloud-input", size)
	pub.Window = 1000
	start := time.Now()
	pub.Publish(0, n, 0)
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("subscriber got %d of %d", got.Load(), n)
	}
	return time.Since(start)
}

type result struct {
	dur                  time.Duration
	cpu                  time.Duration
	idleRSS, peakRSS     int64
	fsyncs, deliveredMsg float64
	batch                int // mean messages per batch sent
}

func pipeline(t *testing.T, broker *harness.Mosquitto, n int, env map[string]string) result {
	out := filepath.Join(t.TempDir(), "out.ndjson")
	all := map[string]string{"FILE_SINK_PATH": out, "LOG_LEVEL": "warn"}
	for k, v := range env {
		all[k] = v
	}
	return runBlock(t, harness.Build(t, "testenv/cmd/filedest"), broker, n, all)
}

// runBlock runs bin with env, publishes n messages and measures until all
// are delivered.
func runBlock(t *testing.T, bin string, broker *harness.Mosquitto, n int, all map[string]string) result {
	// BENCH_BLOCK_ENV="GOGC=200 GOMAXPROCS=1" tries runtime settings on the block.
	for k, v := range harness.EnvFields(os.Getenv("BENCH_BLOCK_ENV")) {
		all[k] = v
	}
	b := harness.NewBlock(t, bin, broker, all)
	b.Start()
	defer b.Stop()
	b.WaitMetric("cloudblock_mqtt_connected", 30*time.Second, func(v float64) bool { return v == 1 })
	time.Sleep(2 * time.Second) // settle, then read idle memory
	idle, err := harness.ReadProcStat(b.PID())
	if err != nil {
		t.Fatal(err)
	}
	fs0 := b.Metric("cloudblock_spool_fsyncs_total")
	pub := harness.NewPublisher(t, broker, "cloud-input", size)
	pub.Window = 1000
	start := time.Now()
	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.Publish(0, n, 0)
	}()
	err = procs.WaitFor(context.Background(), 10*time.Minute, func() error {
		if v := b.Metric("cloudblock_delivered_total"); v < float64(n) {
			return fmt.Errorf("delivered %v", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := result{dur: time.Since(start)}
	// Everything was delivered, so every publish was acknowledged; wait for
	// the publisher to see that before the broker goes away under it.
	<-published
	if rp := pub.Republish.Load(); rp > 0 {
		t.Logf("publisher resent %d messages (acknowledgements slower than 10 s)", rp)
	}
	end, _ := harness.ReadProcStat(b.PID())
	r.cpu = end.CPU - idle.CPU
	r.idleRSS, r.peakRSS = idle.RSS, end.MaxRSS
	r.fsyncs = b.Metric("cloudblock_spool_fsyncs_total") - fs0
	r.deliveredMsg = b.Metric("cloudblock_delivered_total")
	r.batch = meanBatch(b)
	return r
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// TestBenchPipeline prints the pipeline's rate against the subscriber
// ceiling, CPU per message, idle and peak RSS and fsyncs, for Mosquitto's
// default in-flight window (20) and the compose files' (1000).
func TestBenchPipeline(t *testing.T) {
	skipUnlessBench(t)
	n := messages()
	var rows []string
	for _, inflight := range []int{20, 1000} {
		broker := harness.StartMosquitto(t, harness.MosquittoOptions{MaxInflight: inflight})
		ceil := ceiling(t, broker, n)
		r := pipeline(t, broker, n, nil)
		ceilRate := float64(n) / ceil.Seconds()
		rate := float64(n) / r.dur.Seconds()
		rows = append(rows, fmt.Sprintf("| %d | %d | %.0f | %.0f | %.0f %% | %.1f us | %s | %s | %.0f/s | %.0f |",
			inflight, n, ceilRate, rate, 100*rate/ceilRate, float64(r.cpu.Microseconds())/float64(n),
			mib(r.idleRSS), mib(r.peakRSS), r.fsyncs/r.dur.Seconds(), float64(n)/max(r.fsyncs, 1)))
	}
	fmt.Printf("\nPipeline to the file destination (fsync on), %d-byte messages:\n", size)
	fmt.Println("| max_inflight_messages | messages | ceiling msg/s | pipeline msg/s | ratio | CPU/msg | idle RSS | peak RSS | fsyncs | msgs/fsync |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	fmt.Println(strings.Join(rows, "\n"))
}
