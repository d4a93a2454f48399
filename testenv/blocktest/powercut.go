package blocktest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// recordSize is the spool's on-disk size of one message: 8 bytes of
// length and checksum, 18 of seq, time and topic length, then topic and
// payload (common/spool/record.go).
func recordSize(topic string, payload int) int { return 8 + 18 + len(topic) + payload }

// segments lists the spool's segment files in order.
func segments(t *testing.T, bufDir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(bufDir, "spool", "*.seg"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no spool segments in %s (%v)", bufDir, err)
	}
	sort.Strings(segs)
	return segs
}

// lastNonEmpty returns the last segment holding records.
func lastNonEmpty(t *testing.T, segs []string) (string, int64) {
	t.Helper()
	for i := len(segs) - 1; i >= 0; i-- {
		if fi, err := os.Stat(segs[i]); err == nil && fi.Size() > 0 {
			return segs[i], fi.Size()
		}
	}
	t.Fatal("every segment is empty")
	return "", 0
}

// Power cut, through every destination's binary: the spool holds a
// backlog when the power goes; its last record is torn (cut at a random
// offset, with a page of zeroes after it, as a file extended but never
// written) and a bit flips in the middle of its first segment. Start-up
// keeps every intact record, reports the damage, and never crashes: exactly
// the two damaged messages are missing.
func powerCut(t *testing.T, tg *target, sc Scale) {
	const n, size = 1500, 200
	// 4 MiB: 256 KiB segments, so the backlog spans two of them.
	r := newRig(t, tg, rigOpts{env: map[string]string{"BUFFER_MAX_BYTES": "4MiB"}})
	r.down()
	r.start()
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, n, 0)
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == n })
	// Held messages count in the spool before they are written: wait
	// until every one was written and acknowledged, so that the broker
	// has nothing to send again and the damage below is all that is lost.
	r.waitMetric("cloudblock_acknowledged_total", time.Minute, func(v float64) bool { return v == n })
	r.block.Kill()

	segs := segments(t, r.block.BufDir)
	first, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	first[len(first)/2] ^= 0x08
	if err := os.WriteFile(segs[0], first, 0o600); err != nil {
		t.Fatal(err)
	}
	last, sz := lastNonEmpty(t, segs)
	rec := int64(recordSize("cloud-input", size))
	keep := 1 + rand.Int64N(rec-1) // of the last record's bytes
	tornAt := sz - rec + keep
	if err := os.Truncate(last, tornAt); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096))
	f.Close()

	r.up()
	r.block.Start()
	r.waitMetric("cloudblock_spool_messages", 2*time.Minute, func(v float64) bool { return v == 0 })
	got := r.be.read(t)
	tl := count(n, size, got)
	dmgMsgs, dmgBytes := r.metric("cloudblock_spool_damaged_messages"), r.metric("cloudblock_spool_damaged_bytes")
	aside, _ := filepath.Glob(filepath.Join(r.block.BufDir, "corrupt", "*"))
	note := fmt.Sprintf("bit flipped mid-segment, last record torn after %d of %d bytes + 4 KiB of zeroes; block reports %v damaged messages, %v bytes; %d file(s) set aside",
		keep, rec, dmgMsgs, dmgBytes, len(aside))
	t.Logf("%s: %s; %s", tg.name, tl, note)
	if !r.block.Running() {
		t.Error("the block is not running after start-up on a damaged spool")
	}
	if tl.Lost != 2 || tl.Corrupt != 0 || tl.Copies != 0 {
		t.Errorf("want exactly the 2 damaged messages missing, nothing corrupt or twice: %s, missing %v", tl, tl.Missing)
	}
	if len(tl.Missing) > 0 && tl.Missing[len(tl.Missing)-1] != n-1 {
		t.Errorf("the torn last message %d was delivered (missing %v)", n-1, tl.Missing)
	}
	if dmgMsgs < 1 || dmgBytes < 4096 {
		t.Errorf("damage not reported in the metrics: %v messages, %v bytes", dmgMsgs, dmgBytes)
	}
	if !strings.Contains(r.block.Logs(), "spool damage repaired") {
		t.Error("damage not logged")
	}
	if len(aside) == 0 {
		t.Error("the corrupt range was not set aside")
	}
	r.report("powercut", tl, 2, note)
}

// The torn tail at every byte offset of one record, with and without a
// page of zeroes after it, through the binary (the file destination; the
// spool's recovery is the same code under every destination). Every cut
// keeps the intact records and loses only the torn one, and the block
// starts every time. It runs for the file destination only.
func tornTail(t *testing.T, tg *target, _ Scale) {
	const n, size = 10, 13 // the smallest numbered payload: 50-byte records
	r := newRig(t, tg, rigOpts{env: map[string]string{"BATCH_MAX_WAIT": "0s"}})
	r.down()
	r.start()
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, n, 0)
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == n })
	r.waitMetric("cloudblock_acknowledged_total", time.Minute, func(v float64) bool { return v == n })
	r.block.Stop()
	orig := r.block.BufDir
	seg, sz := lastNonEmpty(t, segments(t, orig))
	rec := recordSize("cloud-input", size)
	if sz != int64(n*rec) {
		t.Fatalf("segment of %d bytes, want %d records of %d", sz, n, rec)
	}
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	r.up()
	failures, runs := 0, 0
	began := time.Now()
	for _, zeroes := range []bool{false, true} {
		for keep := 0; keep < rec; keep++ {
			dir := t.TempDir()
			copyDir(t, orig, dir)
			torn := append([]byte(nil), data[:len(data)-rec+keep]...)
			if zeroes {
				torn = append(torn, make([]byte, 4096)...)
			}
			if err := os.WriteFile(filepath.Join(dir, "spool", filepath.Base(seg)), torn, 0o600); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out.ndjson")
			r.block.Env["BUFFER_DIR"], r.block.Env["FILE_SINK_PATH"] = dir, out
			r.block.Start()
			runs++
			r.waitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
			fb := &fileBackend{path: out}
			tl := count(n, size, fb.read(t))
			running := r.block.Running()
			r.block.Stop()
			if !running || tl.Lost != 1 || tl.Missing[0] != n-1 || tl.Corrupt != 0 || tl.Copies != 0 {
				failures++
				t.Errorf("cut after %d of %d bytes (zero page %v): running %v, %s, missing %v", keep, rec, zeroes, running, tl, tl.Missing)
			}
		}
	}
	note := fmt.Sprintf("%d starts: last record cut at each of its %d offsets, with and without 4 KiB of zeroes (%s); %d failed",
		runs, rec, time.Since(began).Round(time.Second), failures)
	t.Log(note)
	// Each run published the same n messages; the table counts them once.
	record(row{Scenario: "torn-tail-sweep", Target: tg.name, Published: n * runs, Delivered: (n - 1) * (runs - failures),
		Expected: runs, Note: note})
}

// copyDir copies the spool directory tree (small files) from src to dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}
