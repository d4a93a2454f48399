package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// openHold opens a spool in hold mode that syncs only when the window
// expires or memory is full, so that tests decide what reaches the disk.
func openHold(t *testing.T, dir string, interval time.Duration, mem int64) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: dir, MaxBytes: 4 << 20, SyncInterval: interval, MemoryBytes: mem, noQuiet: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// appendAsync appends n messages and returns a counter of those made safe.
func appendAsync(t *testing.T, s *Spool, from, n, size int) *atomic.Int64 {
	t.Helper()
	var safe atomic.Int64
	for i := from; i < from+n; i++ {
		e := Entry{Topic: "t", Received: time.Unix(0, int64(i)).UTC(), Payload: payload(i, size)}
		if err := s.Append(context.Background(), e, func(uint64) { safe.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	return &safe
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// crashCopy copies the spool directory as a kill -9 would leave it (what
// was written, synced or not, is in the page cache and survives).
func crashCopy(t *testing.T, dir string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", dir, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return to
}

func TestHoldDeliveredInTimeIsNeverWritten(t *testing.T) {
	s := openHold(t, t.TempDir(), SyncIntervalMax, 0)
	defer s.Close()
	base := s.Stats()
	safe := appendAsync(t, s, 0, 100, 200)
	recs := readN(t, s, 100)
	for i, r := range recs {
		if !bytes.Equal(r.Payload, payload(i, 200)) || r.ID != s.ID(r.Seq) {
			t.Fatalf("record %d differs", i)
		}
	}
	if safe.Load() != 0 {
		t.Fatalf("%d acknowledged before delivery or the window", safe.Load())
	}
	s.Ack(recs[99].Seq)
	if safe.Load() != 100 {
		t.Fatalf("%d acknowledged after delivery, want 100", safe.Load())
	}
	st := s.Stats()
	if st.WrittenBytes != base.WrittenBytes || st.Fsyncs != 0 || st.MarkFsyncs != base.MarkFsyncs || st.SafeByDelivery != 100 || st.Bytes != 0 {
		t.Fatalf("delivered from memory but wrote: before %+v after %+v", base, st)
	}
	if s.Backlog() != 0 {
		t.Fatalf("backlog %d", s.Backlog())
	}
}

func TestHoldWindowWritesOnceThenAcknowledges(t *testing.T) {
	dir := t.TempDir()
	s := openHold(t, dir, 50*time.Millisecond, 0)
	safe := appendAsync(t, s, 0, 10, 200)
	waitFor(t, "the window to expire", func() bool { return safe.Load() == 10 })
	st := s.Stats()
	if st.Fsyncs != 1 || st.Committed != 10 || st.SafeBySync != 10 {
		t.Fatalf("want one write of 10, got %+v", st)
	}
	ids := readN(t, s, 10)
	// A crash now: everything acknowledged is on disk with its id.
	s2 := openHold(t, crashCopy(t, dir), time.Second, 0)
	defer s2.Close()
	again := readN(t, s2, 10)
	for i := range again {
		if again[i].ID != ids[i].ID || !bytes.Equal(again[i].Payload, ids[i].Payload) {
			t.Fatalf("record %d after crash: %s, want %s", i, again[i].ID, ids[i].ID)
		}
	}
	s.Close()
}

func TestHoldMemoryBoundWritesAtOnce(t *testing.T) {
	s := openHold(t, t.TempDir(), SyncIntervalMax, 64<<10)
	defer s.Close()
	safe := appendAsync(t, s, 0, 400, 1000) // ~400 KB against a 64 KiB bound
	waitFor(t, "writes past the memory bound", func() bool { return safe.Load() >= 300 })
	if st := s.Stats(); st.HeldBytes > 128<<10 || st.Committed < 300 {
		t.Fatalf("memory bound not kept: %+v", st)
	}
}

func TestHoldArrivalsStopSyncsAtOnce(t *testing.T) {
	// With the longest window, acknowledgements still go out soon after the
	// stream stops: a broker with a full in-flight window is waiting for them.
	s, err := Open(Options{Dir: t.TempDir(), MaxBytes: 4 << 20, SyncInterval: SyncIntervalMax})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 50 {
		appendAsync(t, s, i, 1, 100)
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "a sync after arrivals stopped", func() bool { return s.Stats().SafeBySync == 50 })
}

func TestNoIDGivenTwiceAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := openHold(t, dir, SyncIntervalMax, 0)
	defer s.Close()
	appendAsync(t, s, 0, 20, 50)
	recs := readN(t, s, 20)
	s.Ack(recs[19].Seq) // delivered from memory: nothing on disk names these seqs
	s2 := openHold(t, crashCopy(t, dir), SyncIntervalMax, 0)
	defer s2.Close()
	appendAsync(t, s2, 100, 1, 50)
	r := readN(t, s2, 1)[0]
	if r.Seq <= recs[19].Seq {
		t.Fatalf("seq %d after the crash reuses one delivered before it (up to %d)", r.Seq, recs[19].Seq)
	}
}

func TestCleanRestartKeepsNumbering(t *testing.T) {
	dir := t.TempDir()
	s := openHold(t, dir, SyncIntervalMax, 0)
	appendAsync(t, s, 0, 5, 50)
	recs := readN(t, s, 5)
	s.Ack(recs[4].Seq)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openHold(t, dir, SyncIntervalMax, 0)
	defer s.Close()
	appendAsync(t, s, 5, 1, 50)
	if r := readN(t, s, 1)[0]; r.Seq != recs[4].Seq+1 {
		t.Fatalf("seq after a clean restart %d, want %d", r.Seq, recs[4].Seq+1)
	}
}

// A mark not yet stored at a crash only makes delivered messages come
// again, under the same ids and with the same bytes.
func TestStaleMarkOnlyResendsSameIDs(t *testing.T) {
	dir := t.TempDir()
	s := openHold(t, dir, SyncIntervalMax, 64<<10)
	defer s.Close()
	safe := appendAsync(t, s, 0, 300, 1000) // past the memory bound: on disk
	waitFor(t, "writes", func() bool { return safe.Load() == 300 || s.Stats().Committed >= 200 })
	recs := readN(t, s, 300)
	s.Ack(recs[99].Seq) // the first mark is stored at once
	waitFor(t, "the first mark", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.stored.acked == recs[99].Seq })
	s.Ack(recs[199].Seq) // coalesced: not stored within the window
	time.Sleep(20 * time.Millisecond)
	s2 := openHold(t, crashCopy(t, dir), SyncIntervalMax, 0)
	defer s2.Close()
	n := s2.Backlog()
	if n < 100 {
		t.Fatalf("backlog after the crash %d, want at least the 100 delivered past the stored mark", n)
	}
	again := readN(t, s2, 100)
	for i, r := range again {
		want := recs[100+i]
		if r.ID != want.ID || !bytes.Equal(r.Payload, want.Payload) {
			t.Fatalf("resend %d: id %s, want %s", i, r.ID, want.ID)
		}
	}
}

func TestDeliveredActiveSegmentIsReused(t *testing.T) {
	s := openHold(t, t.TempDir(), 20*time.Millisecond, 0)
	defer s.Close()
	safe := appendAsync(t, s, 0, 10, 200)
	waitFor(t, "the window", func() bool { return safe.Load() == 10 })
	recs := readN(t, s, 10)
	dirs := s.Stats().DirFsyncs
	s.Ack(recs[9].Seq)
	waitFor(t, "the segment to be emptied", func() bool { st := s.Stats(); return st.Bytes == 0 })
	if st := s.Stats(); st.Segments != 1 || st.DirFsyncs != dirs {
		t.Fatalf("delivered segment replaced instead of reused: %+v", st)
	}
	// And written again from its start.
	safe = appendAsync(t, s, 10, 3, 200)
	waitFor(t, "the window", func() bool { return safe.Load() == 3 })
	if got := readN(t, s, 3); got[0].Seq != recs[9].Seq+1 {
		t.Fatalf("after reuse read seq %d", got[0].Seq)
	}
}

func TestCursorOfTheFormerFormatIsRead(t *testing.T) {
	dir := t.TempDir()
	sdir := filepath.Join(dir, "spool")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	var slot [slotSize]byte
	binary.LittleEndian.PutUint64(slot[:], 1)   // generation
	binary.LittleEndian.PutUint64(slot[8:], 41) // acked
	binary.LittleEndian.PutUint32(slot[32:], crc32.Checksum(slot[:32], castagnoli))
	if err := os.WriteFile(filepath.Join(sdir, "cursor"), slot[:], 0o600); err != nil {
		t.Fatal(err)
	}
	s := openHold(t, dir, SyncIntervalMax, 0)
	defer s.Close()
	appendAsync(t, s, 0, 1, 10)
	if r := readN(t, s, 1)[0]; r.Seq != 42 {
		t.Fatalf("first seq after the old cursor %d, want 42", r.Seq)
	}
}
