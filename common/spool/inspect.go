package spool

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// What the operator's commands read (spool stats, peek, export). Each reads
// a snapshot taken under the lock, then the segment files without it, so
// the service goes on taking and delivering messages meanwhile. Nothing
// here consumes a message: the sender still gets every one.

// SegmentInfo is the health of one segment file, as read back now.
type SegmentInfo struct {
	Name        string
	Bytes       int64  // committed bytes
	First, Last uint64 // seqs
	Records     int    // intact records read
	Undelivered int    // of them, not yet delivered
	// Damaged is a description of the first record that failed its
	// checksum or framing since start-up ("" when the segment reads clean);
	// the records after it in this file are not counted.
	Damaged string
}

// Inspection is what Inspect found.
type Inspection struct {
	Segments    []SegmentInfo
	Undelivered uint64    // messages not yet delivered, on disk and in memory
	Held        int       // of them, held in memory (not written yet)
	Oldest      time.Time // receive time of the oldest undelivered message (zero if none)
	OldestID    string
}

// snapshot is the state the readers below need, copied under the lock.
type snapshot struct {
	segs []segment
	disk ranges
	mem  []held
}

func (s *Spool) snapshot() snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sn snapshot
	for _, g := range s.segs {
		if !g.dropped {
			sn.segs = append(sn.segs, *g)
		}
	}
	sn.disk = slices.Clone(s.disk)
	sn.mem = slices.Clone(s.mem)
	return sn
}

// has says whether seq is in r (ascending runs).
func (r ranges) has(seq uint64) bool {
	for _, x := range r {
		if seq < x.lo {
			return false
		}
		if seq <= x.hi {
			return true
		}
	}
	return false
}

// errStop ends a walk early.
var errStop = errors.New("stop")

// walk reads seg's records up to its committed size and calls fn for each;
// it returns a description of damage met ("" if none). A segment deleted
// meanwhile (delivered) reads as empty.
func (s *Spool) walk(seg segment, fn func(seq uint64, e Entry) error) (string, error) {
	f, err := os.Open(seg.path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.LimitReader(f, seg.size), 64<<10)
	var hdr [headerSize]byte
	var off int64
	for off < seg.size {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			// Shorter than its committed size: truncated for reuse once
			// delivered, or damaged.
			return damaged(seg, off, "ends early", err), nil
		}
		n, sum, ok := parseHeader(hdr[:], s.maxBody)
		if !ok {
			return damaged(seg, off, "invalid record header", nil), nil
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return damaged(seg, off, "ends inside a record", err), nil
		}
		if crc32.Checksum(body, castagnoli) != sum {
			return damaged(seg, off, "checksum mismatch", nil), nil
		}
		seq, e, err := decodeBody(body)
		if err != nil {
			return damaged(seg, off, "invalid record", err), nil
		}
		if err := fn(seq, e); err != nil {
			return "", err
		}
		off += int64(headerSize + n)
	}
	return "", nil
}

func damaged(seg segment, off int64, what string, err error) string {
	d := fmt.Sprintf("%s at offset %d of %d committed bytes", what, off, seg.size)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		d += ": " + err.Error()
	}
	return d
}

// Undelivered calls fn with each message not yet delivered, oldest first
// (those on disk, then those held in memory), until fn returns false. The
// messages stay where they are: this is a copy.
func (s *Spool) Undelivered(fn func(Record) bool) error {
	sn := s.snapshot()
	for _, seg := range sn.segs {
		_, err := s.walk(seg, func(seq uint64, e Entry) error {
			if !sn.disk.has(seq) {
				return nil
			}
			if !fn(s.record(seq, e)) {
				return errStop
			}
			return nil
		})
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	for _, h := range sn.mem {
		if !fn(s.record(h.seq, h.e)) {
			return nil
		}
	}
	return nil
}

// Inspect reads every segment back (checksums included) and reports each
// one's health, the backlog and its oldest message.
func (s *Spool) Inspect() (Inspection, error) {
	sn := s.snapshot()
	var in Inspection
	note := func(seq uint64, e Entry) {
		in.Undelivered++
		if in.OldestID == "" {
			in.Oldest, in.OldestID = e.Received, s.record(seq, e).ID
		}
	}
	for _, seg := range sn.segs {
		info := SegmentInfo{Name: filepath.Base(seg.path), Bytes: seg.size, First: seg.first, Last: seg.last}
		d, err := s.walk(seg, func(seq uint64, e Entry) error {
			info.Records++
			if sn.disk.has(seq) {
				info.Undelivered++
				note(seq, e)
			}
			return nil
		})
		if err != nil {
			return in, err
		}
		if d != "" && s.unchanged(seg) {
			info.Damaged = d
		}
		in.Segments = append(in.Segments, info)
	}
	for _, h := range sn.mem {
		in.Held++
		note(h.seq, h.e)
	}
	return in, nil
}

// unchanged says whether seg still holds what the snapshot saw: a segment
// deleted or truncated for reuse meanwhile (everything in it delivered)
// reads short without being damaged.
func (s *Spool) unchanged(seg segment) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.segs {
		if g.path == seg.path {
			return !g.dropped && g.first == seg.first && g.size >= seg.size
		}
	}
	return false
}
