package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, dir string, max int64, p Policy) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: dir, MaxBytes: max, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func appendN(t *testing.T, s *Spool, from, n int, size int) {
	t.Helper()
	var wg sync.WaitGroup
	wg.Add(n)
	for i := from; i < from+n; i++ {
		e := Entry{Topic: "t", Received: time.Unix(0, int64(i)).UTC(), Payload: payload(i, size)}
		if err := s.Append(context.Background(), e, func(uint64) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

func payload(i, size int) []byte {
	p := bytes.Repeat([]byte{byte(i)}, size)
	copy(p, fmt.Sprintf("m%07d", i))
	return p
}

func readN(t *testing.T, s *Spool, n int) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []Record
	for range n {
		r, err := s.Next(ctx, time.Time{})
		if err != nil {
			t.Fatalf("after %d records: %v", len(out), err)
		}
		out = append(out, r)
	}
	return out
}

func TestAppendReadAckRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4<<20, Block)
	appendN(t, s, 0, 1000, 200)
	recs := readN(t, s, 1000)
	for i, r := range recs {
		if !bytes.Equal(r.Payload, payload(i, 200)) || r.Topic != "t" || r.Seq != uint64(i+1) {
			t.Fatalf("record %d: seq %d topic %q", i, r.Seq, r.Topic)
		}
	}
	s.Ack(recs[499].Seq)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 4<<20, Block)
	defer s.Close()
	again := readN(t, s, 500)
	if again[0].Seq != 501 || again[0].ID != recs[500].ID {
		t.Fatalf("after restart got seq %d id %s, want 501 %s", again[0].Seq, again[0].ID, recs[500].ID)
	}
	appendN(t, s, 1000, 1, 10)
	r := readN(t, s, 1)[0]
	if r.Seq != 1001 {
		t.Fatalf("seq after restart %d, want 1001", r.Seq)
	}
}

func TestDeliveredSegmentsDeleted(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 2<<20, Block) // 128KiB segments
	defer s.Close()
	appendN(t, s, 0, 1500, 500)
	recs := readN(t, s, 1500)
	if st := s.Stats(); st.Segments < 3 {
		t.Fatalf("want many segments, got %d", st.Segments)
	}
	s.Ack(recs[len(recs)-1].Seq)
	// All delivered: within a moment of idleness the spool takes no disk.
	deadline := time.Now().Add(10 * time.Second)
	for st := s.Stats(); st.Segments > 1 || st.Bytes > 0; st = s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("segments not reclaimed: %+v", s.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFullBlockThenResume(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20, Block)
	defer s.Close()
	// 3 MB into a 1 MiB spool, from a goroutine: once the disk is full
	// the appends wait (for memory) until deliveries free space.
	const n = 3000
	done := make(chan uint64, n)
	appended := make(chan error, 1)
	go func() {
		for i := range n {
			e := Entry{Topic: "t", Received: time.Now(), Payload: payload(i, 1000)}
			if err := s.Append(context.Background(), e, func(seq uint64) { done <- seq }); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	waitFor(t, "the spool to become full", func() bool { return s.Stats().Full })
	acked := len(done)
	if acked >= n {
		t.Fatalf("all %d acknowledged while full", acked)
	}
	// Deliver everything: space returns and the rest is acknowledged.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for got := 0; got < n; got++ {
		r, err := s.Next(ctx, time.Time{})
		if err != nil {
			t.Fatalf("read %d: %v", got, err)
		}
		s.Ack(r.Seq)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every message acknowledged", func() bool { return len(done) == n })
	if st := s.Stats(); st.FullEvents == 0 || st.Full {
		t.Fatalf("stats %+v", st)
	}
}

func TestFullDropOldest(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20, DropOldest)
	defer s.Close()
	appendN(t, s, 0, 3000, 1000) // 3 MB into a 1 MiB spool
	st := s.Stats()
	if st.Dropped == 0 || st.Bytes > 1<<20 {
		t.Fatalf("stats %+v", st)
	}
	// What is left is the newest messages, in order, ending with the last.
	left := int(s.Backlog())
	recs := readN(t, s, left)
	if !bytes.Equal(recs[len(recs)-1].Payload, payload(2999, 1000)) {
		t.Fatal("newest message missing")
	}
	if uint64(left)+st.Dropped != 3000 {
		t.Fatalf("left %d + dropped %d != 3000", left, st.Dropped)
	}
}

func segments(t *testing.T, dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "spool", "*.seg"))
	if len(m) == 0 {
		t.Fatal("no segments")
	}
	return m
}

// Cut the last record at every byte offset: start-up keeps the intact ones.
func TestTornTailEveryOffset(t *testing.T) {
	base := t.TempDir()
	s := open(t, base, 4<<20, Block)
	appendN(t, s, 0, 10, 100)
	s.Close()
	seg := segments(t, base)[0]
	full, _ := os.ReadFile(seg)
	recSize := (&Entry{Topic: "t", Payload: make([]byte, 100)}).Size()
	for cut := 1; cut < recSize; cut++ {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "spool"), 0o700)
		os.WriteFile(filepath.Join(dir, "spool", filepath.Base(seg)), full[:len(full)-cut], 0o600)
		s := open(t, dir, 4<<20, Block)
		if got := s.Backlog(); got != 9 {
			t.Fatalf("cut %d: backlog %d, want 9", cut, got)
		}
		recs := readN(t, s, 9)
		if !bytes.Equal(recs[8].Payload, payload(8, 100)) {
			t.Fatalf("cut %d: wrong last record", cut)
		}
		appendN(t, s, 10, 1, 100)
		if r := readN(t, s, 1)[0]; r.Seq != 10 {
			t.Fatalf("cut %d: new record seq %d", cut, r.Seq)
		}
		s.Close()
	}
}

func TestZeroPageAndFlippedBit(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4<<20, Block)
	appendN(t, s, 0, 100, 100)
	s.Close()
	seg := segments(t, dir)[0]
	data, _ := os.ReadFile(seg)
	recSize := len(data) / 100
	data[50*recSize+30] ^= 0x10                // flip a bit inside record 50
	data = append(data, make([]byte, 4096)...) // a page of zeroes at the tail
	os.WriteFile(seg, data, 0o600)
	s = open(t, dir, 4<<20, Block)
	defer s.Close()
	st := s.Stats()
	if st.DamagedMessages != 1 || st.DamagedBytes != int64(recSize+4096) {
		t.Fatalf("stats %+v, record size %d", st, recSize)
	}
	recs := readN(t, s, 99)
	for i, r := range recs {
		want := i
		if i >= 50 {
			want = i + 1
		}
		if !bytes.Equal(r.Payload, payload(want, 100)) {
			t.Fatalf("record %d is not message %d", i, want)
		}
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "corrupt", "*"))
	if len(aside) != 1 {
		t.Fatalf("set aside %v", aside)
	}
}

func TestTooLarge(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20, Block)
	defer s.Close()
	err := s.Append(context.Background(), Entry{Topic: "t", Payload: make([]byte, 300<<10)}, func(uint64) {})
	if err != ErrTooLarge {
		t.Fatalf("got %v", err)
	}
}

// Ids for refused messages sort among the records' ids in receive order,
// and never repeat, even when the clock does.
func TestRefusedIDSortsInReceiveOrder(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20, Block)
	defer s.Close()
	at := time.Now()
	a := s.RefusedID(at)
	appendN(t, s, 0, 1, 10)
	b, c := s.RefusedID(at), s.RefusedID(at)
	appendN(t, s, 1, 1, 10)
	r1, err := s.Next(context.Background(), time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Next(context.Background(), time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ids := []string{a, r1.ID, b, c, r2.ID}; !sort.StringsAreSorted(ids) || b == c {
		t.Errorf("ids not in receive order: %q", ids)
	}
	if !strings.HasPrefix(b, r1.ID+"-") {
		t.Errorf("refused id %s does not extend the previous id %s", b, r1.ID)
	}
}

// A zero field with a default gets it; every field out of its range is
// reported at once, by name, and nothing is created.
func TestOptionsDefaultsAndRanges(t *testing.T) {
	o := Options{Dir: t.TempDir()}.withDefaults()
	if o.MaxBytes != DefaultMaxBytes || o.Policy != Block || o.MemoryBytes != DefaultMemoryBytes || o.Logger == nil {
		t.Errorf("defaults %+v", o)
	}
	if err := o.validate(); err != nil {
		t.Errorf("defaults refused: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "never")
	_, err := Open(Options{Dir: dir, MaxBytes: MaxBytesMin - 1, Policy: "panic", SyncInterval: SyncIntervalMax + 1,
		MemoryBytes: MemoryBytesMax + 1, MarkEvery: -1, CommitWait: -1})
	for _, field := range []string{"MaxBytes 1048575", "Policy panic", "SyncInterval 1m0.000000001s",
		"MemoryBytes 1073741825", "MarkEvery -1", "CommitWait -1ns"} {
		if err == nil || !strings.Contains(err.Error(), "spool: "+field+": want ") {
			t.Errorf("error %v does not report %q", err, field)
		}
	}
	if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
		t.Errorf("Open with bad options created %s", dir)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, 7, &Entry{Topic: "a/b", Received: time.Unix(1, 2), Payload: []byte("hello")}))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{0xff}, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, e, n, err := DecodeRecord(b, 1<<20)
		if err != nil {
			return
		}
		if n > len(b) || n < headerSize+bodyFixed {
			t.Fatalf("size %d of %d", n, len(b))
		}
		again := appendRecord(nil, seq, &e)
		if !bytes.Equal(again, b[:n]) {
			t.Fatal("re-encoding differs")
		}
	})
}

// Messages the sender already took are still delivered from memory when
// drop_oldest removes their segment: only the others count as dropped.
func TestDropOldestCountsOnlyWhatTheSenderHasNotTaken(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20, DropOldest)
	defer s.Close()
	appendN(t, s, 0, 500, 1000)
	taken := readN(t, s, 200) // in the sender's hands, not acknowledged
	appendN(t, s, 500, 2500, 1000)
	st := s.Stats()
	left := s.Backlog()
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", st)
	}
	// Everything is either still spooled, taken, or counted as dropped.
	if uint64(len(taken))+left+st.Dropped != 3000 {
		t.Fatalf("taken %d + left %d + dropped %d != 3000", len(taken), left, st.Dropped)
	}
	// Reading on continues after what was taken, with the oldest kept one.
	next := readN(t, s, 1)
	if next[0].Seq <= taken[len(taken)-1].Seq {
		t.Fatalf("read seq %d again after %d", next[0].Seq, taken[len(taken)-1].Seq)
	}
}
