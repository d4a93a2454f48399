package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// TestBenchSDCard prints the rate the block sustains when every fsync takes
// 20 ms, as on an SD card (the spool's test seam, SPOOL_SEAM_FSYNC_DELAY),
// beside the machine's own fsync, with Mosquitto's default window of 20
// messages in flight and the compose files' 100, in the default window mode
// and the strict mode, with the destination up and down (the file
// destination: the spool is the same under every destination). Each row is
// BENCH_SDCARD_MESSAGES (20,000) 200-byte messages published as fast as the
// broker takes them, timed until the block acknowledged the last.
func TestBenchSDCard(t *testing.T) {
	skipUnlessBench(t)
	n := 20000
	if v := os.Getenv("BENCH_SDCARD_MESSAGES"); v != "" {
		fmt.Sscan(v, &n)
	}
	bin := harness.BuildTags(t, "testenv/cmd/filedest", harness.SeamBuildTag)
	rows := []string{
		"| max_inflight_messages | fsync | destination | window 1s: msg/s | strict: msg/s | window / strict | window: data fsyncs |",
		"|---|---|---|---|---|---|---|",
	}
	for _, inflight := range []int{20, 100} {
		for _, delay := range []string{"0", "20ms"} {
			for _, up := range []bool{true, false} {
				var rate [2]float64
				var fsyncs float64
				for i, interval := range []string{"1s", "0"} {
					t.Run(fmt.Sprintf("%d/%s/up=%v/%s", inflight, delay, up, interval), func(t *testing.T) {
						broker := harness.StartMosquitto(t, harness.MosquittoOptions{MaxInflight: inflight})
						env := map[string]string{"FILE_SINK_PATH": os.DevNull, "FILE_SINK_FSYNC": "false",
							"LOG_LEVEL": "warn", "BUFFER_SYNC_INTERVAL": interval, "SPOOL_SEAM_FSYNC_DELAY": delay}
						if !up {
							fail := filepath.Join(t.TempDir(), "down")
							if err := os.WriteFile(fail, nil, 0o600); err != nil {
								t.Fatal(err)
							}
							env["FILE_SINK_FAIL_FILE"] = fail
						}
						b := harness.NewBlock(t, bin, broker, env)
						b.Start()
						defer b.Stop()
						pub := harness.NewPublisher(t, broker, "cloud-input", size)
						start := time.Now()
						go pub.Publish(0, n, 0)
						err := procs.WaitFor(context.Background(), 5*time.Minute, func() error {
							if v := b.Metric("cloudblock_acknowledged_total"); v < float64(n) {
								time.Sleep(5 * time.Millisecond)
								return fmt.Errorf("acknowledged %v of %d", v, n)
							}
							return nil
						})
						if err != nil {
							t.Fatal(err)
						}
						rate[i] = float64(n) / time.Since(start).Seconds()
						if i == 0 {
							fsyncs = b.Metric("cloudblock_spool_fsyncs_total")
						}
					})
				}
				state := "up"
				if !up {
					state = "down"
				}
				label := delay
				if delay == "0" {
					label = "this disk's"
				}
				rows = append(rows, fmt.Sprintf("| %d | %s | %s | %.0f | %.0f | %.2fx | %.0f |",
					inflight, label, state, rate[0], rate[1], rate[0]/rate[1], fsyncs))
				t.Log(rows[len(rows)-1])
			}
		}
	}
	fmt.Printf("\nSD card: %d messages of 200 B per cell, as fast as the broker sends them\n\n%s\n", n, strings.Join(rows, "\n"))
}
