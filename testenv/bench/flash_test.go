package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// flash is what a run cost the flash, per message.
type flash struct {
	msgs               int
	written            int64 // bytes the process sent to storage
	disk               int64 // bytes the block device took (-1: unknown)
	data, mark, dir    float64
	byDelivery, bySync float64
	cpu                time.Duration
	dur                time.Duration
}

func (f flash) row(name, mode string, rate float64, up bool) string {
	n := float64(f.msgs)
	state := "up"
	if !up {
		state = "down"
	}
	disk := "n/a"
	if f.disk >= 0 {
		disk = fmt.Sprintf("%.0f B (%.1fx)", float64(f.disk)/n, float64(f.disk)/n/size)
	}
	return fmt.Sprintf("| %s | %s | %g | %s | %.1f B (%.2fx) | %s | %.2f | %.2f | %.0f / %.0f | %.0f us |",
		name, mode, rate, state, float64(f.written)/n, float64(f.written)/n/size, disk,
		(f.data+f.mark+f.dir)/f.dur.Seconds(), (f.data+f.mark+f.dir)/n, f.byDelivery, f.bySync,
		float64(f.cpu.Microseconds())/n)
}

func flashSeconds() time.Duration {
	if v, err := strconv.Atoi(os.Getenv("BENCH_FLASH_SECONDS")); err == nil && v > 0 {
		return time.Duration(v) * time.Second
	}
	return 60 * time.Second
}

func flashRates() []float64 {
	v := os.Getenv("BENCH_FLASH_RATES")
	if v == "" {
		v = "1,10,100"
	}
	var out []float64
	for _, f := range strings.Split(v, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err == nil && r > 0 {
			out = append(out, r)
		}
	}
	return out
}

// idleDisk is what the disk holding dir takes per second with no block
// running (other processes, the filesystem's own housekeeping), measured
// over the bench's time; -1 when dir is not on a block device.
func idleDisk(t *testing.T, dir string) float64 {
	d0, err := harness.DiskWritten(dir)
	if err != nil {
		t.Logf("disk bytes not measured: %v", err)
		return -1
	}
	start := time.Now()
	time.Sleep(flashSeconds())
	d1, _ := harness.DiskWritten(dir)
	return float64(d1-d0) / time.Since(start).Seconds()
}

// measureFlash publishes 200-byte messages at rate for the bench's time and
// returns what the block wrote until every one was acknowledged (PUBACK),
// read from /proc/<pid>/io, the block device's counters less the idle
// baseline (bytes per second), and the block's own fsync counters.
func measureFlash(t *testing.T, bin string, broker *harness.Mosquitto, rate, idle float64, env map[string]string) flash {
	b := harness.NewBlock(t, bin, broker, env)
	b.Start()
	defer b.Stop()
	b.WaitMetric("cloudblock_mqtt_connected", 30*time.Second, func(v float64) bool { return v == 1 })
	time.Sleep(2 * time.Second) // start-up writes (epoch, cursor, first segment) are not the steady state
	pid := b.PID()
	w0, err := harness.WrittenBytes(pid)
	if err != nil {
		t.Fatal(err)
	}
	m0, _ := b.Metrics()
	cpu0 := harness.CPUTime(t, pid)
	disk0, derr := harness.DiskWritten(b.BufDir)
	n := int(rate * flashSeconds().Seconds())
	pub := harness.NewPublisher(t, broker, "cloud-input", size)
	start := time.Now()
	pub.Publish(0, n, rate)
	err = procs.WaitFor(context.Background(), 5*time.Minute, func() error {
		if v := b.Metric("cloudblock_acknowledged_total"); v < float64(n) {
			return fmt.Errorf("acknowledged %v of %d", v, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dur := time.Since(start)
	w1, _ := harness.WrittenBytes(pid)
	disk := int64(-1)
	if disk1, err := harness.DiskWritten(b.BufDir); err == nil && derr == nil && idle >= 0 {
		disk = max(0, disk1-disk0-int64(idle*dur.Seconds()))
	}
	m1, _ := b.Metrics()
	d := func(k string) float64 { return m1[k] - m0[k] }
	return flash{msgs: n, written: w1 - w0, disk: disk, dur: dur, cpu: harness.CPUTime(t, pid) - cpu0,
		data: d("cloudblock_spool_fsyncs_total"), mark: d("cloudblock_spool_mark_fsyncs_total"), dir: d("cloudblock_spool_dir_fsyncs_total"),
		byDelivery: d("cloudblock_acknowledged_by_delivery_total"), bySync: d("cloudblock_acknowledged_by_sync_total")}
}

// TestBenchFlash prints what the spool costs an SD card: bytes the process
// wrote and fsyncs per message at sensor rates, with the default window
// (BUFFER_SYNC_INTERVAL=1s) beside the strict mode (0) in the same run,
// per destination with its emulator up (object stores with their own
// minute-long batches), and the file destination down (every send fails).
// BENCH_FLASH_SECONDS (60) and BENCH_FLASH_RATES (1,10,100) shorten it;
// BENCH_SERVICES picks destinations ("file" for the pipeline alone).
func TestBenchFlash(t *testing.T) {
	skipUnlessBench(t)
	want := func(name string) bool {
		w := os.Getenv("BENCH_SERVICES")
		return w == "" || strings.Contains(","+w+",", ","+name+",")
	}
	modes := []struct{ name, interval string }{{"window 1s", "1s"}, {"strict", "0"}}
	rows := []string{
		"| destination | mode | msg/s | destination | written per message (x payload) | disk per message | fsyncs per second | fsyncs per message | acknowledged by delivery / by sync | CPU per message |",
		"|---|---|---|---|---|---|---|---|---|---|",
	}
	idle := idleDisk(t, t.TempDir())
	run := func(name, bin string, env func(t *testing.T) map[string]string, up bool) {
		for _, rate := range flashRates() {
			if !up && rate != 10 {
				continue
			}
			for _, m := range modes {
				t.Run(fmt.Sprintf("%s/%g/%s", name, rate, m.interval), func(t *testing.T) {
					broker := harness.StartMosquitto(t, harness.MosquittoOptions{})
					e := env(t)
					e["LOG_LEVEL"] = "warn"
					e["BUFFER_SYNC_INTERVAL"] = m.interval
					f := measureFlash(t, bin, broker, rate, idle, e)
					rows = append(rows, f.row(name, m.name, rate, up))
					t.Log(rows[len(rows)-1])
				})
			}
		}
	}
	if want("file") {
		bin := harness.Build(t, "testenv/cmd/filedest")
		// The file destination writes what it delivers: to /dev/null here,
		// so that only the spool's writes count.
		run("file", bin, func(t *testing.T) map[string]string {
			return map[string]string{"FILE_SINK_PATH": os.DevNull, "FILE_SINK_FSYNC": "false"}
		}, true)
		run("file", bin, func(t *testing.T) map[string]string {
			fail := filepath.Join(t.TempDir(), "down")
			if err := os.WriteFile(fail, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return map[string]string{"FILE_SINK_PATH": os.DevNull, "FILE_SINK_FSYNC": "false", "FILE_SINK_FAIL_FILE": fail}
		}, false)
	}
	for _, d := range destinations {
		if !want(d.name) {
			continue
		}
		bin := harness.Build(t, "services/"+d.name)
		run(d.name, bin, func(t *testing.T) map[string]string {
			e := d.start(t)
			delete(e, "BATCH_MAX_WAIT") // the object stores' own minute-long batches
			return e
		}, true)
	}
	fmt.Printf("\nFlash: %v of 200-byte messages per row, written = /proc/<pid>/io write_bytes less cancelled_write_bytes;\n"+
		"disk = sectors the block device wrote (journal included, after sync) less the idle %.0f B/s measured first\n\n%s\n",
		flashSeconds(), idle, strings.Join(rows, "\n"))
}
