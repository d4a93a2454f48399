package blocktest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// smallFS mounts a filesystem of size bytes for the spool and says which
// kind it is: a tmpfs, else ext4 on a loop device. Both need the right to
// mount (root here); without it the test is skipped with the reason, as no
// plain directory can run out of space on its own.
func smallFS(t *testing.T, size int64) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	unmount := func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", size), "tmpfs", dir).CombinedOutput()
	if err == nil {
		t.Cleanup(unmount)
		return dir, fmt.Sprintf("tmpfs of %d KiB", size>>10)
	}
	tmpfsErr := fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(out)))
	img := filepath.Join(t.TempDir(), "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err == nil {
		os.Truncate(img, size)
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err == nil {
			if out, err = exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err == nil {
				t.Cleanup(unmount)
				return dir, fmt.Sprintf("ext4 of %d KiB on a loop device (tmpfs refused: %s)", size>>10, tmpfsErr)
			}
			t.Skipf("cannot mount a small filesystem: tmpfs: %s; loop: %v: %s", tmpfsErr, err, out)
		} else {
			t.Skipf("cannot mount a small filesystem: tmpfs: %s; mkfs.ext4: %v: %s", tmpfsErr, err, out)
		}
	}
	t.Skipf("cannot mount a small filesystem: tmpfs: %s", tmpfsErr)
	return "", ""
}

// fill writes a file that leaves about free bytes on dir's filesystem.
func fill(t *testing.T, dir string, free int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	path := filepath.Join(dir, "filler")
	if err := os.WriteFile(path, make([]byte, max(avail-free, 0)), 0o600); err != nil {
		t.Fatalf("filler: %v", err)
	}
	return path
}

const diskSize = 1000 // bytes per message: few messages fill a small spool

// Disk: the spool's filesystem or its budget fills up. The configured full
// policy is applied, counted and logged, the process stays up and says so
// on /ready, and it recovers when space returns.
func disk(t *testing.T, tg *target, sc Scale) {
	// The budget (BUFFER_MAX_BYTES) fills while the cloud is away.
	t.Run("budget-block", func(t *testing.T) {
		const n = 3000
		dir, how := smallFS(t, 8<<20)
		r := newRig(t, tg, rigOpts{env: map[string]string{"BUFFER_DIR": dir, "BUFFER_MAX_BYTES": "1MiB", "BUFFER_FULL_POLICY": "block"}})
		r.start()
		r.down()
		pub := harness.NewPublisher(t, r.broker, "cloud-input", diskSize)
		go pub.Publish(0, n, 0)
		r.waitMetric("cloudblock_spool_full", time.Minute, func(v float64) bool { return v == 1 })
		body := r.waitReady(503, 30*time.Second, "spool is full")
		acked := r.metric("cloudblock_acknowledged_total")
		time.Sleep(2 * time.Second) // the block holds: nothing more is acknowledged
		if a := r.metric("cloudblock_acknowledged_total"); a != acked || a >= n {
			t.Errorf("acknowledged %v then %v of %d while full", acked, a, n)
		}
		if b := r.metric("cloudblock_spool_bytes"); b > 1<<20 {
			t.Errorf("spool uses %v bytes, over its 1MiB budget", b)
		}
		if !r.block.Running() || !r.logContains("spool full", time.Second) {
			t.Errorf("running %v; full not logged", r.block.Running())
		}
		full := r.metric("cloudblock_spool_full_total")
		r.up()
		tl, _ := r.waitAll(n, diskSize, 3*time.Minute, true)
		note := fmt.Sprintf("%s; 1MiB budget full with the cloud away: %v acknowledged of %d, full %v time(s), /ready %.80s", how, acked, n, full, body)
		t.Logf("%s: %s; %s", tg.name, tl, note)
		r.report("disk-budget-block", tl, 0, note)
	})

	t.Run("budget-drop_oldest", func(t *testing.T) {
		// Twice what the budget and the batches the sender holds in
		// memory take together, so that some are really dropped.
		const n = 6000
		dir, how := smallFS(t, 8<<20)
		r := newRig(t, tg, rigOpts{env: map[string]string{"BUFFER_DIR": dir, "BUFFER_MAX_BYTES": "1MiB", "BUFFER_FULL_POLICY": "drop_oldest"}})
		r.start()
		r.down()
		pub := harness.NewPublisher(t, r.broker, "cloud-input", diskSize)
		pub.Publish(0, n, 0)
		r.waitMetric("cloudblock_acknowledged_total", time.Minute, func(v float64) bool { return v >= n })
		dropped := int(r.metric("cloudblock_dropped_total"))
		if dropped <= 0 || !r.logContains("drop_oldest", time.Second) {
			t.Errorf("dropped %d; drop logged: %v", dropped, r.logContains("drop_oldest", time.Second))
		}
		r.up()
		r.waitMetric("cloudblock_spool_messages", 2*time.Minute, func(v float64) bool { return v == 0 })
		tl := count(n, diskSize, r.be.read(t))
		note := fmt.Sprintf("%s; 1MiB budget, cloud away: %d oldest dropped and counted", how, dropped)
		t.Logf("%s: %s; %s", tg.name, tl, note)
		// Missing more than counted is a loss; fewer means the count
		// includes messages that were delivered anyway (the sender had
		// them in memory). The dropped ones are one run: the oldest of
		// those still only on disk.
		if tl.Lost != dropped {
			t.Errorf("%d missing (from %v) but cloudblock_dropped_total says %d", tl.Lost, tl.Missing, dropped)
		}
		if tl.Lost > 0 && tl.LastMissing-tl.Missing[0]+1 != tl.Lost {
			t.Errorf("the %d missing are not one run: from %d to %d", tl.Lost, tl.Missing[0], tl.LastMissing)
		}
		r.report("disk-budget-drop_oldest", tl, dropped, note)
	})

	// The filesystem fills before the budget does (a volume smaller than
	// BUFFER_MAX_BYTES, or shared with something else): writes fail
	// with ENOSPC. In the strict mode, so that every message needs the
	// disk: with the default window a destination that is up takes
	// everything from memory and a full disk changes nothing.
	t.Run("enospc-block", func(t *testing.T) {
		const n = 2000
		dir, how := smallFS(t, 4<<20)
		r := newRig(t, tg, rigOpts{env: map[string]string{"BUFFER_DIR": dir, "BUFFER_MAX_BYTES": "64MiB", "BUFFER_FULL_POLICY": "block", "BUFFER_SYNC_INTERVAL": "0"}})
		r.start()
		filler := fill(t, dir, 256<<10)
		pub := harness.NewPublisher(t, r.broker, "cloud-input", diskSize)
		go pub.Publish(0, n, 0)
		r.waitMetric("cloudblock_spool_write_errors_total", time.Minute, func(v float64) bool { return v > 0 })
		acked := r.metric("cloudblock_acknowledged_total")
		time.Sleep(2 * time.Second)
		if a := r.metric("cloudblock_acknowledged_total"); a >= n || a != acked {
			t.Errorf("acknowledged %v then %v of %d with the disk full", acked, a, n)
		}
		if !r.block.Running() || !r.logContains("spool write failed", time.Second) {
			t.Errorf("running %v; write failure not logged", r.block.Running())
		}
		// /ready must not claim all is well while nothing can be stored.
		code, body := r.ready()
		if code != 503 || !(strings.Contains(body, "spool") || strings.Contains(body, "disk") || strings.Contains(body, "space")) {
			t.Errorf("/ready with the spool's disk full = %d %s", code, body)
		}
		errs := r.metric("cloudblock_spool_write_errors_total")
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		freed := time.Now()
		if err := waitCond(time.Minute, func() bool { return r.metric("cloudblock_acknowledged_total") >= n }); err != nil {
			t.Errorf("not recovered when space returned: %v acknowledged of %d; running %v", r.metric("cloudblock_acknowledged_total"), n, r.block.Running())
		}
		resumed := time.Since(freed)
		stuck := 0
		var tl tally
		if r.block.Running() {
			tl, _ = r.waitAll(n, diskSize, 3*time.Minute, true)
		} else {
			t.Errorf("the block exited with its disk full: %s", lastError(r.block.Logs()))
			tl = count(n, diskSize, r.be.read(t))
			stuck = tl.Lost // still at the broker or in the spool's files
		}
		note := fmt.Sprintf("%s, filled to 256 KiB free: %v write errors (retried), %v acknowledged of %d meanwhile; all acknowledged %s after space returned; /ready said %d %.80s; running at the end: %v",
			how, errs, acked, n, resumed.Round(100*time.Millisecond), code, body, r.block.Running())
		t.Logf("%s: %s; %s", tg.name, tl, note)
		r.reportStuck("disk-enospc-block", tl, 0, stuck, note)
	})

	t.Run("enospc-drop_oldest", func(t *testing.T) {
		const n = 6000 // 6 MB into a 4 MiB filesystem
		dir, how := smallFS(t, 4<<20)
		r := newRig(t, tg, rigOpts{env: map[string]string{"BUFFER_DIR": dir, "BUFFER_MAX_BYTES": "64MiB", "BUFFER_FULL_POLICY": "drop_oldest"}})
		r.start()
		r.down()
		pub := harness.NewPublisher(t, r.broker, "cloud-input", diskSize)
		go pub.Publish(0, n, 0)
		r.waitMetric("cloudblock_spool_write_errors_total", time.Minute, func(v float64) bool { return v > 0 })
		// drop_oldest keeps taking new messages, dropping old ones.
		applied := true
		if err := waitCond(time.Minute, func() bool { return r.metric("cloudblock_acknowledged_total") >= n }); err != nil {
			applied = false
			t.Errorf("drop_oldest not applied when the filesystem filled: %v acknowledged of %d, %v dropped, %v write errors",
				r.metric("cloudblock_acknowledged_total"), n, r.metric("cloudblock_dropped_total"), r.metric("cloudblock_spool_write_errors_total"))
		}
		dropped := int(r.metric("cloudblock_dropped_total"))
		if !r.block.Running() {
			t.Error("the block exited")
		}
		r.up()
		// With the cloud back, delivering frees the spool: the rest is
		// taken whatever the policy did.
		if err := waitCond(2*time.Minute, func() bool {
			return r.metric("cloudblock_acknowledged_total") >= n && r.metric("cloudblock_spool_messages") == 0
		}); err != nil {
			t.Errorf("not recovered %s after the cloud returned: %v acknowledged of %d, %v in the spool, %v write errors",
				err, r.metric("cloudblock_acknowledged_total"), n, r.metric("cloudblock_spool_messages"), r.metric("cloudblock_spool_write_errors_total"))
		}
		tl := count(n, diskSize, r.be.read(t))
		// What the block did not acknowledge is still at the broker; what
		// it did but could not deliver is in its spool.
		acked, inSpool := r.metric("cloudblock_acknowledged_total"), r.metric("cloudblock_spool_messages")
		stuck := n - int(acked) + int(max(inSpool, 0))
		if !r.block.Running() {
			t.Errorf("the block exited with its disk full: %s", lastError(r.block.Logs()))
			stuck = tl.Lost // still at the broker or in the spool's files
		}
		note := fmt.Sprintf("%s, BUFFER_MAX_BYTES=64MiB, cloud away: policy applied %v, %d dropped, %v write errors; running at the end: %v",
			how, applied, dropped, r.metric("cloudblock_spool_write_errors_total"), r.block.Running())
		t.Logf("%s: %s; %s", tg.name, tl, note)
		if tl.Lost != dropped {
			t.Errorf("%d missing but cloudblock_dropped_total says %d", tl.Lost, dropped)
		}
		r.reportStuck("disk-enospc-drop_oldest", tl, dropped, stuck, note)
	})
}

// lastError is the last error line of a block's log.
func lastError(logs string) string {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], `"level":"ERROR"`) {
			return lines[i]
		}
	}
	return "(no error logged)"
}

// waitCond polls cond until it holds or timeout passes.
func waitCond(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
