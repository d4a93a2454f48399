package sqssink

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// cpuTime is a process's user+system CPU time from /proc/<pid>/stat.
func cpuTime(b testing.TB, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

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
		env := map[string]string{}
		for _, kv := range strings.Fields(os.Getenv("BENCH_BLOCK_ENV")) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = v
			}
		}
		e := newBlockEnv(b, false, env)
		e.start(b)
		e.block.WaitMetric("cloudblock_destination_connected", 30*time.Second, func(v float64) bool { return v == 1 })
		pid := e.block.Proc().Cmd.Process.Pid
		pub := harness.NewPublisher(b, e.broker, "cloud-input", size)
		before := cpuTime(b, pid)
		start := time.Now()
		pub.Publish(0, n, rate)
		e.block.WaitMetric("cloudblock_delivered_total", 2*time.Minute, func(v float64) bool { return v >= n })
		cpu := cpuTime(b, pid) - before
		wall := time.Since(start)
		b.ReportMetric(float64(cpu.Microseconds())/n, "cpu-µs/msg")
		b.ReportMetric(n/wall.Seconds(), "msgs/s")
		b.Logf("%d messages of %d bytes in %s: block CPU %s = %.1f µs a message; batches %v",
			n, size, wall.Round(time.Millisecond), cpu, float64(cpu.Microseconds())/n, e.block.Metric("cloudblock_batches_total"))
	}
}
