// Package spool is the durable, bounded store-and-forward buffer between
// the MQTT subscription and the cloud.
//
// It is a segmented append-only log written by one goroutine in group
// commits: every message queued while the previous fsync ran is written
// with one write and made durable with one fsync, and only then is each
// message's onDurable callback (the MQTT PUBACK) called. Records carry a
// CRC-32C; start-up cuts a torn tail and cuts out (and sets aside) a corrupt
// range, keeping every intact record. Delivered messages are recorded in a
// small cursor file, and whole segments are deleted once delivered, so the
// disk footprint returns to zero when the cloud keeps up.
//
// Why our own log rather than an embedded store: bbolt rewrites B+tree
// pages and its freelist on every commit (several page writes per fsync,
// flash wear) and its file never shrinks; Badger and Pebble bring
// background compaction, tens of MiB of RSS and megabytes of binary. A FIFO
// that is appended and consumed in order needs none of that: sequential
// appends, one fsync per group, and unlink to reclaim.
package spool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Policy says what happens when the spool is full.
type Policy string

const (
	// Block stops acknowledging: MQTT messages stay unacknowledged, so the
	// broker holds them (up to its own queue limits) until space returns.
	Block Policy = "block"
	// DropOldest deletes the oldest segment, undelivered messages included,
	// and counts them as dropped.
	DropOldest Policy = "drop_oldest"
)

var (
	// ErrClosed is returned once the spool is closing.
	ErrClosed = errors.New("spool closed")
	// ErrTooLarge is returned for a message that can never fit in the spool.
	ErrTooLarge = errors.New("message larger than the spool's record limit")
)

// Options configure a spool.
type Options struct {
	Dir        string
	MaxBytes   int64
	Policy     Policy
	CommitWait time.Duration // how long a group may wait for more messages before its fsync
	Logger     *slog.Logger
}

// Record is a committed message read back from the spool.
type Record struct {
	Seq uint64
	ID  string
	Entry
}

// Stats are the spool's counters and gauges.
type Stats struct {
	Bytes           int64  // on disk, all segments
	Segments        int    // files
	Committed       uint64 // records made durable since start
	Fsyncs          uint64 // fsyncs of segment data
	Dropped         uint64 // undelivered messages removed by drop_oldest
	Full            bool   // appends are waiting for space (block policy)
	FullEvents      uint64 // times the spool became full
	WriteErrors     uint64 // failed writes or fsyncs (retried)
	Failing         string // the last write error while writes fail (a full disk); "" once one succeeds
	DamagedBytes    int64  // cut at start-up
	DamagedMessages uint64 // known lost to corruption at start-up
}

type segment struct {
	path        string
	first, last uint64 // seq range; last==0 while empty
	size        int64  // committed bytes
	count       int
	dropped     bool // removed by drop_oldest (set under mu and rdMu)
}

type pending struct {
	e         Entry
	onDurable func(seq uint64)
}

// Spool is safe for one writer goroutine (its own), any number of Append
// callers, one reader (Next) and any Ack callers.
type Spool struct {
	opt      Options
	log      *slog.Logger
	dir      string
	epoch    string
	maxBody  int
	segBytes int64
	maxGroup int // bytes a group may gather before its commit

	in       chan pending
	stopOnce sync.Once
	stopping chan struct{}
	written  chan struct{} // closed when the writer loop has exited

	mu        sync.Mutex
	cond      *sync.Cond
	segs      []*segment
	active    *os.File
	nextSeq   uint64
	committed uint64 // highest durable seq
	acked     uint64 // highest delivered seq
	closed    bool
	full      bool
	total     int64

	// intentFirst..intent is the batch in flight whose exact resend matters.
	intentFirst, intent uint64
	cursorMu            sync.Mutex // serialises cursor writes

	ackSignal chan struct{}
	ackQuit   chan struct{}
	ackDone   chan struct{}
	stopped   atomic.Bool
	cursor    *cursorFile

	rd reader
	// rdMu guards rd's file and position while Next reads outside mu, so
	// that dropOldest can close a segment the reader still holds open (its
	// disk space is only freed then). Lock order: mu, then rdMu.
	rdMu sync.Mutex

	nCommitted, nFsyncs, nDropped, nFullEvents, nWriteErrs atomic.Uint64
	failing                                                atomic.Pointer[string] // see Stats.Failing
	damagedBytes                                           int64
	damagedMsgs                                            uint64
}

// Open recovers the spool in opt.Dir (creating it if needed) and starts its
// writer. Corrupt data is repaired or set aside and reported, never fatal.
func Open(opt Options) (*Spool, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.MaxBytes < 1<<20 {
		return nil, fmt.Errorf("spool: max bytes %d below 1MiB", opt.MaxBytes)
	}
	if opt.Policy == "" {
		opt.Policy = Block
	}
	s := &Spool{
		opt:       opt,
		log:       opt.Logger,
		dir:       filepath.Join(opt.Dir, "spool"),
		in:        make(chan pending, 4096),
		stopping:  make(chan struct{}),
		written:   make(chan struct{}),
		ackSignal: make(chan struct{}, 1),
		ackQuit:   make(chan struct{}),
		ackDone:   make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	// A segment is a sixteenth of the budget (64KiB..16MiB): small enough
	// that deleting whole delivered segments keeps the footprint near the
	// backlog, large enough that rolling is rare. One record may take at most
	// a quarter of the budget.
	s.segBytes = min(max(opt.MaxBytes/16, 64<<10), 16<<20)
	s.maxBody = int(min(opt.MaxBytes/4, 256<<20+1<<16))
	s.maxGroup = int(min(opt.MaxBytes/8, 4<<20))
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := s.recover(); err != nil {
		return nil, fmt.Errorf("spool: recover %s: %w", s.dir, err)
	}
	go s.writeLoop()
	go s.ackLoop()
	return s, nil
}

// MaxRecordPayload is the largest payload (plus topic) Append accepts.
func (s *Spool) MaxRecordPayload() int { return s.maxBody - bodyFixed }

// Epoch identifies this spool's lifetime; it prefixes every message ID.
func (s *Spool) Epoch() string { return s.epoch }

// ID formats the stable message id for seq: the spool's epoch (creation
// time and randomness, so ids never repeat if the volume is wiped) and the
// zero-padded sequence, so ids of one spool sort in receive order.
func (s *Spool) ID(seq uint64) string { return s.epoch + "-" + fmt.Sprintf("%012d", seq) }

func (s *Spool) recover() error {
	epoch, err := loadEpoch(filepath.Join(s.dir, "epoch"))
	if err != nil {
		return err
	}
	s.epoch = epoch
	cur, st, err := openCursor(filepath.Join(s.dir, "cursor"))
	if err != nil {
		return err
	}
	s.cursor, s.acked = cur, st.acked
	if st.intent > st.acked {
		s.intentFirst, s.intent = max(st.intentFirst, st.acked+1), st.intent
	}

	names, err := filepath.Glob(filepath.Join(s.dir, "*.seg"))
	if err != nil {
		return err
	}
	sort.Strings(names) // zero-padded first seq: lexical order is seq order
	aside := filepath.Join(s.opt.Dir, "corrupt")
	var prev uint64
	for _, name := range names {
		res, dmg, err := scanSegment(name, prev, s.maxBody, aside)
		if err != nil {
			return err
		}
		for _, d := range dmg {
			s.damagedBytes += d.Bytes
			s.damagedMsgs += d.Lost
			s.log.Warn("spool damage repaired at start-up", "segment", d.Segment, "offset", d.Offset,
				"bytes", d.Bytes, "lost", d.Lost, "torn_tail", d.Tail, "set_aside", d.SetAside)
		}
		if res.count == 0 || res.last <= s.acked {
			// Empty or fully delivered: nothing to keep.
			if err := os.Remove(name); err != nil {
				return err
			}
			continue
		}
		prev = res.last
		s.segs = append(s.segs, &segment{path: name, first: res.first, last: res.last, size: res.size, count: res.count})
		s.total += res.size
	}
	s.committed = max(prev, s.acked)
	s.nextSeq = s.committed + 1
	if len(s.segs) > 0 {
		s.log.Info("spool recovered", "dir", s.dir, "segments", len(s.segs), "bytes", s.total,
			"undelivered", s.committed-max(s.acked, s.segs[0].first-1))
	}
	return s.roll()
}

func loadEpoch(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		e := strings.TrimSpace(string(b))
		if len(e) == 12 {
			if _, err := hex.DecodeString(e); err == nil {
				return e, nil
			}
		}
	}
	var r [2]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	e := fmt.Sprintf("%08x%s", uint32(time.Now().Unix()), hex.EncodeToString(r[:]))
	if err := writeFileSync(path, []byte(e+"\n")); err != nil {
		return "", err
	}
	return e, syncDir(filepath.Dir(path))
}

// roll starts a new active segment named after the next seq. Caller holds
// mu or is single-threaded (recovery).
func (s *Spool) roll() error {
	if s.active != nil {
		if err := s.active.Close(); err != nil {
			return err
		}
		s.active = nil
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", s.nextSeq))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.active = f
	s.segs = append(s.segs, &segment{path: path})
	return nil
}

// Append queues e for the next group commit; onDurable is called (from the
// writer goroutine, in order) once e is on disk. It blocks while the queue
// is full, which is how a full spool (block policy) pushes back on MQTT.
func (s *Spool) Append(ctx context.Context, e Entry, onDurable func(seq uint64)) error {
	if len(e.Topic) > maxTopicLen || bodyFixed+len(e.Topic)+len(e.Payload) > s.maxBody {
		return ErrTooLarge
	}
	select {
	case <-s.stopping:
		return ErrClosed
	default:
	}
	select {
	case s.in <- pending{e: e, onDurable: onDurable}:
		return nil
	case <-s.stopping:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Spool) writeLoop() {
	defer close(s.written)
	var group []pending
	var buf []byte
	var timer *time.Timer
	// When appends pause and everything written was delivered, start a new
	// segment so the delivered one can be deleted: an idle spool then takes
	// no disk at all, instead of keeping its last segment until the next roll.
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		group = group[:0]
		select {
		case <-idle.C:
			s.rollIfDelivered()
			continue
		case p := <-s.in:
			group = append(group, p)
		case <-s.stopping:
			// Drain what was queued before the stop: it is committed and acknowledged.
			for {
				select {
				case p := <-s.in:
					group = append(group, p)
					continue
				default:
				}
				break
			}
			if len(group) > 0 {
				s.commit(group, &buf)
			}
			return
		}
		size := group[0].e.Size()
		// Take everything already queued; then, if asked, wait a little for more.
		var deadline <-chan time.Time
		if s.opt.CommitWait > 0 {
			if timer == nil {
				timer = time.NewTimer(s.opt.CommitWait)
			} else {
				timer.Reset(s.opt.CommitWait)
			}
			deadline = timer.C
		}
	gather:
		for size < s.maxGroup {
			select {
			case p := <-s.in:
				group = append(group, p)
				size += p.e.Size()
				continue
			default:
			}
			if deadline == nil {
				break
			}
			select {
			case p := <-s.in:
				group = append(group, p)
				size += p.e.Size()
			case <-deadline:
				deadline = nil
				break gather
			case <-s.stopping:
				break gather
			}
		}
		if deadline != nil && !timer.Stop() {
			<-timer.C
		}
		s.commit(group, &buf)
		idle.Reset(time.Second)
	}
}

// rollIfDelivered rolls a fully delivered active segment; the ack loop then
// deletes it. Writer goroutine only.
func (s *Spool) rollIfDelivered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	act := s.segs[len(s.segs)-1]
	if act.size == 0 || act.last == 0 || act.last > s.acked {
		return
	}
	if err := s.roll(); err != nil {
		s.log.Warn("spool: starting a new segment failed", "err", err)
		return
	}
	s.signalAck()
}

// commit writes group as one write and one fsync, then calls each onDurable.
// On a write error it cuts the partial write off and retries with backoff
// (the messages stay unacknowledged meanwhile), so a full disk stalls
// instead of losing or corrupting anything.
func (s *Spool) commit(group []pending, buf *[]byte) {
	need := int64(0)
	for i := range group {
		need += int64(group[i].e.Size())
	}
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		seq, err := s.tryCommit(group, need, buf)
		if err == nil {
			if attempt > 0 {
				s.failing.Store(nil)
				s.log.Info("spool writes succeed again; acknowledging resumes")
			}
			for i := range group {
				group[i].onDurable(seq + uint64(i))
			}
			return
		}
		if errors.Is(err, ErrClosed) {
			return // messages stay unacknowledged: the broker redelivers them
		}
		s.nWriteErrs.Add(1)
		msg := err.Error()
		s.failing.Store(&msg)
		if s.opt.Policy == DropOldest && errors.Is(err, syscall.ENOSPC) && s.dropForSpace() {
			continue // the disk filled before BUFFER_MAX_BYTES: the policy applies as well
		}
		if attempt == 0 || attempt%20 == 0 {
			s.log.Error("spool write failed; retrying, messages stay unacknowledged", "err", err, "attempt", attempt+1)
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 5*time.Second)
		if s.stopped.Load() {
			return // still unacknowledged: the broker redelivers after restart
		}
	}
}

func (s *Spool) tryCommit(group []pending, need int64, buf *[]byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.makeRoom(need); err != nil {
		return 0, err
	}
	act := s.segs[len(s.segs)-1]
	if act.size > 0 && act.size+need > s.segBytes {
		if err := s.roll(); err != nil {
			return 0, err
		}
		act = s.segs[len(s.segs)-1]
	}
	first := s.nextSeq
	b := (*buf)[:0]
	for i := range group {
		b = appendRecord(b, first+uint64(i), &group[i].e)
	}
	*buf = b
	if cap(b) > 2*int(s.maxGroup) {
		*buf = nil // do not keep a one-off huge buffer alive
	}
	// Write and fsync outside the lock would let readers and ackers run
	// meanwhile; they only need committed state, which changes below.
	s.mu.Unlock()
	_, werr := s.active.WriteAt(b, act.size)
	if werr == nil {
		werr = s.active.Sync()
	}
	s.nFsyncs.Add(1)
	s.mu.Lock()
	if werr != nil {
		// Drop whatever part of the write landed so the file stays a clean log.
		_ = s.active.Truncate(act.size)
		return 0, werr
	}
	n := uint64(len(group))
	if act.first == 0 {
		act.first = first
	}
	act.last = first + n - 1
	act.size += int64(len(b))
	act.count += len(group)
	s.total += int64(len(b))
	s.nextSeq += n
	s.committed = act.last
	s.nCommitted.Add(n)
	s.cond.Broadcast()
	return first, nil
}

// makeRoom applies the full policy until need more bytes fit. Caller holds mu.
func (s *Spool) makeRoom(need int64) error {
	for s.total+need > s.opt.MaxBytes {
		if s.closed || s.stopped.Load() {
			return ErrClosed
		}
		if s.opt.Policy == DropOldest {
			if err := s.dropOldest(); err != nil {
				return err
			}
			continue
		}
		if !s.full {
			s.full = true
			s.nFullEvents.Add(1)
			s.log.Warn("spool full: not acknowledging new MQTT messages until space returns; the broker holds them",
				"bytes", s.total, "max_bytes", s.opt.MaxBytes)
		}
		s.cond.Wait()
	}
	if s.full {
		s.full = false
		s.log.Info("spool has space again; acknowledging resumes", "bytes", s.total)
	}
	return nil
}

// dropOldest removes the oldest segment (rolling first if it is the active
// one) and moves the delivered mark past it. Caller holds mu.
func (s *Spool) dropOldest() error {
	if len(s.segs) == 1 {
		if err := s.roll(); err != nil {
			return err
		}
	}
	old := s.segs[0]
	// Of the undelivered messages in the segment, those the sender already
	// took (seq < rd.next) are in its batches in memory and are still
	// delivered; only the others are lost, and counted.
	lost, taken := uint64(0), uint64(0)
	s.rdMu.Lock()
	defer s.rdMu.Unlock()
	old.dropped = true
	if s.rd.seg == old {
		s.rd.close()
	}
	if old.last > s.acked {
		from := max(s.acked, old.first-1) // undelivered: from+1 .. old.last
		if s.rd.next > from+1 {           // the sender took from+1 .. rd.next-1
			took := min(s.rd.next-1, old.last)
			taken, from = took-from, took
		}
		lost = old.last - from
		s.acked = old.last
	}
	if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.segs = s.segs[1:]
	s.total -= old.size
	s.nDropped.Add(lost)
	s.log.Warn("spool full: dropped the oldest undelivered messages (policy drop_oldest)",
		"dropped", lost, "bytes", old.size, "still_in_memory", taken)
	s.signalAck()
	return nil
}

// dropForSpace applies drop_oldest when the filesystem itself is full
// (before BUFFER_MAX_BYTES is reached): removing the oldest segment frees
// its space. It reports whether it dropped; with nothing of its own on
// disk, the disk is filled by something else and the write is retried.
func (s *Spool) dropForSpace() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.total == 0 {
		return false
	}
	if err := s.dropOldest(); err != nil {
		s.log.Warn("spool: dropping the oldest segment to free disk space failed", "err", err)
		return false
	}
	return true
}

// Ack records that every message up to and including seq was delivered.
// The mark is persisted asynchronously (coalesced) and delivered segments
// are deleted after it is.
func (s *Spool) Ack(seq uint64) {
	s.mu.Lock()
	if seq > s.acked && seq <= s.committed {
		s.acked = seq
		s.signalAck()
	}
	s.mu.Unlock()
}

func (s *Spool) signalAck() {
	select {
	case s.ackSignal <- struct{}{}:
	default:
	}
}

func (s *Spool) ackLoop() {
	defer close(s.ackDone)
	var stored uint64
	for {
		select {
		case <-s.ackSignal:
		case <-s.ackQuit:
			return
		}
		s.mu.Lock()
		acked := s.acked
		s.mu.Unlock()
		if acked != stored {
			if err := s.storeCursor(); err != nil {
				s.log.Error("spool: storing the delivered mark failed; will retry", "err", err)
				time.Sleep(100 * time.Millisecond)
				s.signalAck()
				continue
			}
			stored = acked
		}
		s.mu.Lock()
		for len(s.segs) > 1 && s.segs[0].last != 0 && s.segs[0].last <= stored {
			old := s.segs[0]
			if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Error("spool: removing a delivered segment failed", "segment", old.path, "err", err)
				break
			}
			s.segs = s.segs[1:]
			s.total -= old.size
		}
		s.cond.Broadcast()
		s.mu.Unlock()
	}
}

// storeCursor durably writes the delivered mark and the intent.
func (s *Spool) storeCursor() error {
	s.cursorMu.Lock()
	defer s.cursorMu.Unlock()
	s.mu.Lock()
	st := cursorState{acked: s.acked, intentFirst: s.intentFirst, intent: s.intent}
	s.mu.Unlock()
	return s.cursor.store(st)
}

// Intent returns the seq range of the batch that was in flight when the
// process stopped, if the sink asked for exact resends (SetIntent) and it
// was not delivered; ok is false otherwise.
func (s *Spool) Intent() (first, last uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.intent <= s.acked {
		return 0, 0, false
	}
	return max(s.intentFirst, s.acked+1), s.intent, true
}

// SetIntent durably records that the records first..last are about to be
// sent as one batch, so that after a crash they are resent as exactly that
// batch (same object key, overwritten rather than duplicated).
func (s *Spool) SetIntent(first, last uint64) error {
	s.mu.Lock()
	s.intentFirst, s.intent = first, last
	s.mu.Unlock()
	return s.storeCursor()
}

// Stats returns current counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	failing := ""
	if p := s.failing.Load(); p != nil {
		failing = *p
	}
	return Stats{
		Bytes: s.total, Segments: len(s.segs), Committed: s.nCommitted.Load(), Fsyncs: s.nFsyncs.Load(),
		Dropped: s.nDropped.Load(), Full: s.full, FullEvents: s.nFullEvents.Load(), WriteErrors: s.nWriteErrs.Load(),
		Failing: failing, DamagedBytes: s.damagedBytes, DamagedMessages: s.damagedMsgs,
	}
}

// Backlog returns how many committed messages are not yet delivered.
func (s *Spool) Backlog() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed - s.acked
}

// StopWriting stops accepting messages, commits (and acknowledges) what was
// already queued, and returns when the writer is done.
func (s *Spool) StopWriting() {
	s.stopOnce.Do(func() {
		s.stopped.Store(true)
		close(s.stopping)
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	<-s.written
}

// Close stops the writer, wakes a blocked reader, persists the delivered
// mark and closes files.
func (s *Spool) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.StopWriting()
	close(s.ackQuit)
	<-s.ackDone
	err := s.storeCursor()
	s.rdMu.Lock()
	s.rd.close()
	s.rdMu.Unlock()
	if cerr := s.cursor.close(); err == nil {
		err = cerr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != nil {
		if cerr := s.active.Close(); err == nil {
			err = cerr
		}
		s.active = nil
	}
	return err
}
