package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A message that keeps its id is read back under it, before and after a
// restart, between messages that get the spool's ids.
func TestKeptIDsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4<<20, Block)
	appendN(t, s, 0, 2, 100)
	kept := Entry{ID: "abc-000000000042", Topic: "t/kept", Received: time.Unix(7, 0).UTC(), Payload: []byte("kept")}
	done := make(chan struct{})
	if err := s.Append(context.Background(), kept, func(uint64) { close(done) }); err != nil {
		t.Fatal(err)
	}
	<-done
	appendN(t, s, 2, 1, 100)
	check := func(s *Spool) {
		t.Helper()
		recs := readN(t, s, 4)
		if recs[2].ID != kept.ID || recs[2].Topic != kept.Topic || !bytes.Equal(recs[2].Payload, kept.Payload) || !recs[2].Received.Equal(kept.Received) {
			t.Errorf("kept record read back as %+v", recs[2])
		}
		for _, i := range []int{0, 1, 3} {
			if recs[i].ID != s.ID(recs[i].Seq) {
				t.Errorf("record %d: id %s, want the spool's %s", i, recs[i].ID, s.ID(recs[i].Seq))
			}
		}
	}
	check(s)
	s.Close()
	s = open(t, dir, 4<<20, Block)
	defer s.Close()
	check(s)

	for _, bad := range []string{"has space", strings.Repeat("x", MaxIDLen+1), "slash/no"} {
		if err := s.Append(context.Background(), Entry{ID: bad, Payload: []byte("x")}, func(uint64) {}); err == nil {
			t.Errorf("id %q accepted", bad)
		}
	}
}

// Undelivered and Inspect see what the sender has not delivered, on disk
// and in memory, without taking it from the sender.
func TestUndeliveredAndInspect(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4<<20, Block)
	defer s.Close()
	appendN(t, s, 0, 10, 100)
	recs := readN(t, s, 4)
	for _, r := range recs {
		s.Ack(r.Seq)
	}
	var seen []uint64
	if err := s.Undelivered(func(r Record) bool { seen = append(seen, r.Seq); return true }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 6 || seen[0] != recs[3].Seq+1 {
		t.Errorf("undelivered seqs %v, want the 6 after %d", seen, recs[3].Seq)
	}
	n := 0
	s.Undelivered(func(Record) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("Undelivered went on after fn returned false: %d calls", n)
	}
	in, err := s.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if in.Undelivered != 6 || in.OldestID != s.ID(seen[0]) || in.Oldest.IsZero() {
		t.Errorf("Inspect: %+v", in)
	}
	for _, g := range in.Segments {
		if g.Damaged != "" {
			t.Errorf("segment %s damaged in a healthy spool: %s", g.Name, g.Damaged)
		}
	}
	// The sender still gets every one of them.
	next := readN(t, s, 6)
	if next[0].Seq != seen[0] {
		t.Errorf("after Undelivered the sender reads from %d, want %d", next[0].Seq, seen[0])
	}

	// A bit flipped on disk since start-up is reported, not hidden.
	seg := filepath.Join(dir, "spool", in.Segments[0].Name)
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-5] ^= 0x40
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	in, _ = s.Inspect()
	if len(in.Segments) == 0 || !strings.Contains(in.Segments[0].Damaged, "checksum") {
		t.Errorf("a flipped bit not reported: %+v", in.Segments)
	}
}

// One process at a time: a second Open of the same directory is refused
// until the first closes.
func TestOpenIsExclusive(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 4<<20, Block)
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Open: %v, want ErrInUse", err)
	}
	s.Close()
	s2, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}
