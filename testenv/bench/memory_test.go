package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// TestBenchMemory prints each destination's resident memory at rest
// (nothing published, BENCH_MEMORY_SECONDS, default 30, after start-up)
// beside its floor: the bare program of testenv/bare, which holds only the
// paho subscription and the SDK client as the service connects it. Both
// are built as the images build them (static, stripped) and run at the
// same time against the same emulator and broker.
func TestBenchMemory(t *testing.T) {
	skipUnlessBench(t)
	rest := 30 * time.Second
	if v := os.Getenv("BENCH_MEMORY_SECONDS"); v != "" {
		var s int
		fmt.Sscan(v, &s)
		rest = time.Duration(s) * time.Second
	}
	var mu sync.Mutex
	rows := map[string]string{}
	t.Run("all", func(t *testing.T) {
		for _, d := range destinations {
			blockBin := harness.BuildRelease(t, "services/"+d.name)
			bareBin := harness.BuildRelease(t, "testenv/cmd/bare/"+d.name)
			t.Run(d.name, func(t *testing.T) {
				t.Parallel()
				env := d.start(t)
				env["LOG_LEVEL"] = "warn"
				broker := harness.StartMosquitto(t, harness.MosquittoOptions{})
				b := harness.NewBlock(t, blockBin, broker, env)
				b.Start()
				ready := filepath.Join(t.TempDir(), "ready")
				var benv []string
				for k, v := range env {
					benv = append(benv, k+"="+v)
				}
				benv = append(benv, "BARE_MQTT_URL=tcp://"+broker.Addr(), "BARE_READY_FILE="+ready,
					"BALENA_DEVICE_UUID=bench", "BUFFER_DIR="+t.TempDir())
				bare := procs.Start(t, procs.Spec{Name: "bare-" + d.name, Path: bareBin, Env: benv,
					Ready: func() error { _, err := os.Stat(ready); return err }, Timeout: time.Minute})
				time.Sleep(rest)
				bs, err := harness.ReadProcStat(b.PID())
				if err != nil {
					t.Fatal(err)
				}
				fs, err := harness.ReadProcStat(bare.Cmd.Process.Pid)
				if err != nil {
					t.Fatal(err)
				}
				mib := func(n int64) float64 { return float64(n) / (1 << 20) }
				row := fmt.Sprintf("| %s | %.1f MiB | %.1f MiB | %+.1f MiB | %.1f / %.1f MiB |", d.name,
					mib(bs.RSS), mib(fs.RSS), mib(bs.RSS-fs.RSS), mib(bs.MaxRSS), mib(fs.MaxRSS))
				t.Log(row)
				mu.Lock()
				rows[d.name] = row
				mu.Unlock()
			})
		}
	})
	out := []string{"| destination | block | bare program | block - bare | peak: block / bare |", "|---|---|---|---|---|"}
	for _, d := range destinations {
		if r, ok := rows[d.name]; ok {
			out = append(out, r)
		}
	}
	fmt.Printf("\nMemory at rest (VmRSS) %v after start-up, static stripped builds\n\n%s\n", rest, strings.Join(out, "\n"))
}
