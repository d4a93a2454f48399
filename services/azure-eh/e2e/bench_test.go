package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/harness"
)

// measure publishes n messages of size bytes to a running, connected block
// and reports the CPU it spent on them and the rate it delivered them at.
func measure(b *testing.B, block *harness.Block, broker *harness.Mosquitto, n, size int) {
	pid := block.Proc().Cmd.Process.Pid
	pub := harness.NewPublisher(b, broker, "cloud-input", size)
	before, start := harness.CPUTime(b, pid), time.Now()
	pub.Publish(0, n, 0)
	block.WaitMetric("cloudblock_delivered_total", 2*time.Minute, func(v float64) bool { return v >= float64(n) })
	cpu, wall := harness.CPUTime(b, pid)-before, time.Since(start)
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-us/msg")
	b.ReportMetric(float64(n)/wall.Seconds(), "msgs/s")
	b.Logf("%d messages of %d bytes: block CPU %s (%.1f us/msg), %s wall", n, size, cpu, float64(cpu.Microseconds())/float64(n), wall.Round(time.Millisecond))
}

// BenchmarkCPUPerMessage measures the block's CPU per message over 20,000
// 200-byte messages sent to the fake Event Hubs, beside the file destination
// doing the same without a cloud SDK (what common costs). One run is one
// measurement: go test -run '^$' -bench CPUPerMessage -benchtime 1x ./services/azure-eh/e2e
func BenchmarkCPUPerMessage(b *testing.B) {
	const n, size = 20000, 200
	b.Run("azure-eh", func(b *testing.B) {
		for range b.N {
			e := newEnv(b, ehfake.Options{}, nil)
			e.start(b)
			measure(b, e.block, e.broker, n, size)
			e.waitAll(b, n, size, time.Minute)
		}
	})
	b.Run("filedest", func(b *testing.B) {
		for range b.N {
			broker := harness.StartMosquitto(b, harness.MosquittoOptions{})
			block := harness.NewBlock(b, harness.Build(b, "testenv/cmd/filedest"), broker,
				map[string]string{"FILE_SINK_PATH": filepath.Join(b.TempDir(), "out.ndjson")})
			block.Start()
			block.WaitMetric("cloudblock_mqtt_connected", time.Minute, func(v float64) bool { return v == 1 })
			measure(b, block, broker, n, size)
		}
	})
}
