package sqssink

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// BenchmarkBlockCPUPerMessage runs the real binary against the queue and
// reports the block's CPU time per delivered message (goal: 60 µs), from
// the moment it is connected until the last message is stored. Run it with
//
//	go test -run '^$' -bench BlockCPU -benchtime 1x ./services/aws-sqs/...
//
// BENCH_RATE limits publishes per second (default: as fast as the broker takes them).
func BenchmarkBlockCPUPerMessage(b *testing.B) {
	const n, size = 20000, 200
	rate, _ := strconv.ParseFloat(os.Getenv("BENCH_RATE"), 64)
	for range b.N {
		// BENCH_BLOCK_ENV="GOGC=200" tries runtime settings on the block.
		e := newBlockEnv(b, false, harness.EnvFields(os.Getenv("BENCH_BLOCK_ENV")))
		e.start(b)
		e.block.WaitMetric("cloudblock_destination_connected", 30*time.Second, func(v float64) bool { return v == 1 })
		pid := e.block.Proc().Cmd.Process.Pid
		pub := harness.NewPublisher(b, e.broker, "cloud-input", size)
		before := harness.CPUTime(b, pid)
		start := time.Now()
		pub.Publish(0, n, rate)
		e.block.WaitMetric("cloudblock_delivered_total", 2*time.Minute, func(v float64) bool { return v >= n })
		cpu := harness.CPUTime(b, pid) - before
		wall := time.Since(start)
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/msg")
		b.ReportMetric(n/wall.Seconds(), "msgs/s")
		b.Logf("%d messages of %d bytes in %s: block CPU %s = %.1f µs a message; batches %v",
			n, size, wall.Round(time.Millisecond), cpu, float64(cpu.Microseconds())/n, e.block.Metric("cloudblock_batches_total"))
	}
}
