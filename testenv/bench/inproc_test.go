package bench

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/testenv/filesink"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// TestBenchInProcess runs the block inside the test process, so that
// `go test -cpuprofile` sees where its CPU goes (the publisher's share is
// in the paho and harness frames).
func TestBenchInProcess(t *testing.T) {
	skipUnlessBench(t)
	n := messages()
	broker := harness.StartMosquitto(t, harness.MosquittoOptions{})
	http := procs.Addr(procs.FreePort(t))
	env := map[string]string{
		"LOCAL_MQTT_HOST": broker.URL(), "BUFFER_DIR": t.TempDir(), "HTTP_LISTEN": http,
		"FILE_SINK_PATH": filepath.Join(t.TempDir(), "out"), "LOG_LEVEL": "warn", "BALENA_DEVICE_UUID": "bench",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run.Run(ctx, filesink.Service, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard, io.Discard)
	}()
	b := &harness.Block{HTTP: http}
	procs.WaitFor(ctx, 30*time.Second, func() error {
		if b.Metric("cloudblock_mqtt_connected") != 1 {
			return fmt.Errorf("not connected")
		}
		return nil
	})
	pub := harness.NewPublisher(t, broker, "cloud-input", size)
	pub.Window = 1000
	start := time.Now()
	pub.Publish(0, n, 0)
	procs.WaitFor(ctx, 5*time.Minute, func() error {
		if b.Metric("cloudblock_delivered_total") < float64(n) {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	fmt.Printf("in-process: %d messages in %s\n", n, time.Since(start))
	cancel()
	<-done
}
