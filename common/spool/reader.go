package spool

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"
)

// ErrTimeout is returned by Next when its deadline passes first.
var ErrTimeout = errors.New("spool: no record before the deadline")

// reader reads committed records in order with large positional reads that
// never go past the committed size, so it never sees a half-written group.
type reader struct {
	next   uint64 // next seq wanted
	seg    *segment
	f      *os.File
	pos    int64  // file offset of the next record
	buf    []byte // bytes of the file from bufOff
	bufOff int64
}

func (r *reader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	r.seg = nil
}

const readChunk = 256 << 10

// Next blocks until the next undelivered record is available (on disk, or
// held in memory unless the spool is strict) and returns it. Records are returned once each, in order; what Next returned
// but was never acknowledged is returned again only after a restart. With a
// non-zero deadline it returns ErrTimeout once the deadline passes.
func (s *Spool) Next(ctx context.Context, deadline time.Time) (Record, error) {
	for {
		r, err := s.next(ctx, deadline)
		if err != errDropped {
			return r, err
		}
	}
}

// errDropped: the segment next chose was dropped before it could read it.
var errDropped = errors.New("spool: segment dropped while opening it")

func (s *Spool) next(ctx context.Context, deadline time.Time) (Record, error) {
	s.mu.Lock()
	waiting := false
	for {
		if s.closed {
			s.mu.Unlock()
			return Record{}, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return Record{}, err
		}
		if s.rd.next <= s.acked {
			s.rd.next = s.acked + 1 // start, or messages dropped under us
		}
		if s.rd.next <= s.durable {
			break // on disk
		}
		if rec, ok := s.fromMemory(); ok {
			s.mu.Unlock()
			return rec, nil
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			s.mu.Unlock()
			return Record{}, ErrTimeout
		}
		if !waiting {
			// Only a reader that has to wait pays for the wake-ups.
			waiting = true
			wake := func() {
				s.mu.Lock()
				s.cond.Broadcast()
				s.mu.Unlock()
			}
			stop := context.AfterFunc(ctx, wake)
			defer stop()
			if !deadline.IsZero() {
				t := time.AfterFunc(time.Until(deadline), wake)
				defer t.Stop()
			}
		}
		s.cond.Wait()
	}
	// Find the segment holding the first seq >= next (corruption can leave gaps).
	var seg *segment
	for _, sg := range s.segs {
		if sg.last >= s.rd.next && sg.count > 0 {
			seg = sg
			break
		}
	}
	if seg == nil {
		s.mu.Unlock()
		return Record{}, fmt.Errorf("spool: seq %d committed but in no segment", s.rd.next)
	}
	limit := seg.size
	s.mu.Unlock()

	s.rdMu.Lock()
	defer s.rdMu.Unlock()
	if seg.dropped {
		return Record{}, errDropped // between the two locks
	}
	r := &s.rd
	if r.seg != seg {
		r.close()
		f, err := os.Open(seg.path)
		if err != nil {
			return Record{}, fmt.Errorf("spool: %w", err)
		}
		r.f, r.seg, r.pos, r.buf, r.bufOff = f, seg, 0, r.buf[:0], 0
	}
	for {
		seq, e, n, err := s.readAt(r, limit)
		if err != nil {
			return Record{}, err
		}
		r.pos += int64(n)
		if seq < r.next {
			continue // delivered before a restart, or skipped after a drop
		}
		r.next = seq + 1
		return s.record(seq, e), nil
	}
}

// fromMemory returns the next record from those held in memory, when the
// mode allows reading them before they are written and their seq is within
// the durable reservation (so that its id is never given twice, whatever
// happens next). Caller holds mu.
func (s *Spool) fromMemory() (Record, bool) {
	if s.strict() || len(s.mem) == 0 {
		return Record{}, false
	}
	i := 0
	if s.rd.next > s.mem[0].seq {
		i = int(s.rd.next - s.mem[0].seq)
	}
	if i >= len(s.mem) || s.mem[i].seq >= s.stored.reserved {
		return Record{}, false
	}
	h := &s.mem[i]
	s.rd.next = h.seq + 1
	return s.record(h.seq, h.e), true
}

// readAt decodes the record at r.pos, refilling the buffer from the file as
// needed but never past limit. The payload is copied out of the buffer.
func (s *Spool) readAt(r *reader, limit int64) (uint64, Entry, int, error) {
	for {
		start := r.pos - r.bufOff
		if start >= 0 && start+headerSize <= int64(len(r.buf)) {
			n, sum, ok := parseHeader(r.buf[start:], s.maxBody)
			if !ok {
				return 0, Entry{}, 0, fmt.Errorf("spool: %s: invalid record header at offset %d", r.seg.path, r.pos)
			}
			if start+headerSize+int64(n) <= int64(len(r.buf)) {
				body := r.buf[start+headerSize : start+headerSize+int64(n)]
				if crc32.Checksum(body, castagnoli) != sum {
					return 0, Entry{}, 0, fmt.Errorf("spool: %s: checksum mismatch at offset %d", r.seg.path, r.pos)
				}
				seq, e, err := decodeBody(body)
				if err != nil {
					return 0, Entry{}, 0, fmt.Errorf("spool: %s: offset %d: %w", r.seg.path, r.pos, err)
				}
				e.Payload = append([]byte(nil), e.Payload...)
				return seq, e, headerSize + n, nil
			}
			// Need more than is buffered: make room for the whole record.
			if want := headerSize + n; cap(r.buf) < want {
				r.buf = make([]byte, 0, max(want, readChunk))
			}
		}
		if r.pos >= limit {
			return 0, Entry{}, 0, fmt.Errorf("spool: %s: read past committed end %d", r.seg.path, limit)
		}
		if cap(r.buf) < readChunk {
			r.buf = make([]byte, 0, readChunk)
		}
		want := min(int64(cap(r.buf)), limit-r.pos)
		b := r.buf[:want]
		m, err := r.f.ReadAt(b, r.pos)
		if int64(m) < want && err != nil && err != io.EOF {
			return 0, Entry{}, 0, fmt.Errorf("spool: %w", err)
		}
		if m == 0 {
			return 0, Entry{}, 0, fmt.Errorf("spool: %s: short read at %d", r.seg.path, r.pos)
		}
		r.buf, r.bufOff = b[:m], r.pos
		// Shrink a buffer that grew for one large record.
		if cap(r.buf) > 4*readChunk && m < readChunk {
			r.buf = append(make([]byte, 0, readChunk), r.buf...)
		}
	}
}
