// Package spool is the durable, bounded store-and-forward buffer between
// the MQTT subscription and the cloud.
//
// A message is acknowledged to the broker (its onSafe callback) as soon as
// it is safe: delivered to the destination, or durably written here,
// whichever comes first. Each message gets its sequence number (its stable
// id) on arrival and is held in memory, readable by the sender at once; what
// the destination confirms within SyncInterval is acknowledged and never
// written anywhere, and what it does not is written with everything else
// held, in one write and one fsync, then acknowledged. Flash is written only
// for what the cloud has not taken in time. SyncInterval 0 is the strict
// mode: every message is written and fsynced (in group commits) before its
// acknowledgement, and the sender reads only what is on disk.
//
// On disk it is a segmented append-only log. Records carry a CRC-32C;
// start-up cuts a torn tail and cuts out (and sets aside) a corrupt range,
// keeping every intact record. Seqs on disk may have gaps where messages
// were delivered from memory. A small cursor file holds the delivered mark
// (written only when it passes records that are on disk, at most once per
// SyncInterval: a stale mark only makes delivered messages be sent again
// under their ids), the batch in flight for exact resends, and a
// reservation of seqs, so that an id given to a message delivered from
// memory is never given again after a crash. Whole delivered segments are
// deleted and a delivered active segment is truncated and reused, so the
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
	// ErrInUse is returned by Open while another process has the spool
	// open (the service, or an operator's command).
	ErrInUse = errors.New("spool in use by another process")
)

// reserveChunk is how many seqs one cursor write reserves: a write a day at
// sensor rates, one every minute at 20,000 messages a second.
const reserveChunk = 1 << 20

// Options configure a spool. A zero field with a default gets it; Open
// refuses a value outside its range. common/run reads the BUFFER_*
// variables within the same ranges, so that a bad value is reported under
// its variable's name.
type Options struct {
	Dir string // required; the spool lives in Dir/spool
	// MaxBytes is the disk the spool may use, DefaultMaxBytes if 0, from
	// MaxBytesMin to MaxBytesMax. A record may take a quarter of it.
	MaxBytes int64
	Policy   Policy // Block if ""
	// SyncInterval is how long a message may wait in memory, unacknowledged,
	// for the destination to confirm it before it is written and fsynced,
	// at most SyncIntervalMax. 0 writes every message before acknowledging
	// it (strict mode).
	SyncInterval time.Duration
	// MemoryBytes bounds the records held in memory; past it they are
	// written at once. DefaultMemoryBytes if 0, from MemoryBytesMin to
	// MemoryBytesMax.
	MemoryBytes int64
	// MarkEvery bounds what a crash can make the sender send again: once
	// this many records on disk were delivered since the delivered mark was
	// last stored, it is stored at once instead of at the next SyncInterval.
	// 0: the interval alone.
	MarkEvery int
	// CommitWait (strict mode) is how long a group may wait for more
	// messages before its fsync, at most CommitWaitMax.
	CommitWait time.Duration
	Logger     *slog.Logger // discarded if nil

	noQuiet bool // tests: only the window and the memory bound trigger a sync
}

// Defaults and ranges of Options.
const (
	DefaultMaxBytes    = 256 << 20
	DefaultMemoryBytes = 1 << 20

	// A segment is a sixteenth of MaxBytes and at least 64 KiB; a record
	// at most a quarter.
	MaxBytesMin int64 = 1 << 20
	MaxBytesMax int64 = 1 << 40 // int64: over an int on 32-bit ARM
	// Below 64 KiB, held messages would be written in tiny groups.
	MemoryBytesMin = 64 << 10
	MemoryBytesMax = 1 << 30
	// A held message is not acknowledged: the broker's in-flight window
	// waits for it.
	SyncIntervalMax = time.Minute
	CommitWaitMax   = time.Second
)

// withDefaults fills in the zero fields that have a default.
func (o Options) withDefaults() Options {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Policy == "" {
		o.Policy = Block
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate reports every field outside its range.
func (o Options) validate() error {
	var errs []error
	out := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("spool: %s %v: want %s", field, v, want))
	}
	if o.Dir == "" {
		out("Dir", `""`, "a directory")
	}
	if o.MaxBytes < MaxBytesMin || o.MaxBytes > MaxBytesMax {
		out("MaxBytes", o.MaxBytes, fmt.Sprint(MaxBytesMin, " to ", MaxBytesMax))
	}
	if o.Policy != Block && o.Policy != DropOldest {
		out("Policy", o.Policy, fmt.Sprint(Block, " or ", DropOldest))
	}
	if o.SyncInterval < 0 || o.SyncInterval > SyncIntervalMax {
		out("SyncInterval", o.SyncInterval, fmt.Sprint("0s to ", SyncIntervalMax))
	}
	if o.MemoryBytes < MemoryBytesMin || o.MemoryBytes > MemoryBytesMax {
		out("MemoryBytes", o.MemoryBytes, fmt.Sprint(MemoryBytesMin, " to ", MemoryBytesMax))
	}
	if o.MarkEvery < 0 {
		out("MarkEvery", o.MarkEvery, "0 or more")
	}
	if o.CommitWait < 0 || o.CommitWait > CommitWaitMax {
		out("CommitWait", o.CommitWait, fmt.Sprint("0s to ", CommitWaitMax))
	}
	return errors.Join(errs...)
}

// Record is a message read back from the spool. ID is its id: the one
// its Entry keeps, or the spool's for its seq.
type Record struct {
	Seq uint64
	ID  string
	Entry
}

// Stats are the spool's counters and gauges.
type Stats struct {
	Bytes          int64     // on disk, all segments
	Segments       int       // files
	Committed      uint64    // records written and fsynced since start
	Fsyncs         uint64    // fsyncs of segment data
	MarkFsyncs     uint64    // fsyncs of the cursor (delivered mark, batch in flight, seq reservation)
	DirFsyncs      uint64    // fsyncs of the spool directory (a new segment)
	WrittenBytes   uint64    // bytes written to segments and the cursor
	SafeByDelivery uint64    // messages acknowledged because the destination confirmed them first
	SafeBySync     uint64    // messages acknowledged because they were written first
	HeldBytes      int64     // records held in memory, not yet written nor delivered
	Dropped        uint64    // undelivered messages removed by drop_oldest
	Full           bool      // appends are waiting for space (block policy)
	FullEvents     uint64    // times the spool became full
	WriteErrors    uint64    // failed writes or fsyncs (retried)
	Failing        string    // the last write error while writes fail (a full disk); "" once one succeeds
	FailingSince   time.Time // when writes began to fail (zero when they succeed)
	// CommitStarted is when the write (and fsync) in progress began; zero
	// between writes. One that never returns is a dead disk.
	CommitStarted   time.Time
	DamagedBytes    int64  // cut at start-up
	DamagedMessages uint64 // lost to corruption found at start-up (at most: gaps in seq)
}

type segment struct {
	path        string
	first, last uint64 // seq range; last==0 while empty
	size        int64  // committed bytes
	count       int
	dropped     bool // removed by drop_oldest (set under mu and rdMu)
}

// held is a message in memory: neither on disk nor delivered.
type held struct {
	seq    uint64
	e      Entry
	onSafe func(seq uint64)
	at     time.Time // arrival, for SyncInterval
}

type safeCall struct {
	f   func(seq uint64)
	seq uint64
}

// Spool is safe for any number of Append callers, one reader (Next) and any
// Ack callers. A writer goroutine writes what memory holds; a meta
// goroutine writes the cursor and deletes delivered segments.
type Spool struct {
	opt      Options
	log      *slog.Logger
	dir      string
	epoch    string
	maxBody  int
	segBytes int64
	maxGroup int   // bytes one write may take
	memHard  int64 // Append waits while memory holds this much

	stopOnce sync.Once
	stopping chan struct{}
	written  chan struct{} // closed when the writer loop has exited
	kick     chan struct{} // wakes the writer
	metaKick chan struct{} // wakes the meta loop

	mu       sync.Mutex
	cond     *sync.Cond
	segs     []*segment
	active   *os.File
	nextSeq  uint64
	durable  uint64 // highest seq on disk
	acked    uint64 // highest delivered seq (everything up to it is delivered)
	mem      []held // contiguous seqs above durable, in order
	memBytes int64
	writing  int    // mem[:writing] is being written
	disk     ranges // undelivered seqs on disk
	closed   bool
	full     bool
	total    int64

	lastArrival time.Time
	gap         time.Duration // moving average of the time between arrivals (0: none yet)
	lastRefused int64         // the suffix of the last RefusedID (unix ns)

	// inFlightFirst..inFlightLast is the batch in flight to a destination
	// with StableBatches (RecordInFlight): after a crash exactly these seqs
	// are resent as one batch. inFlightStored says whether the cursor on
	// disk holds the range.
	inFlightFirst, inFlightLast uint64
	inFlightStored              bool
	flushTo                     uint64      // write what memory holds up to this seq now (RecordInFlight)
	markDirty                   bool        // records on disk were delivered since the mark was stored
	unmarked                    uint64      // records on disk delivered since the mark was stored
	stored                      cursorState // what the cursor file holds
	cursorMu                    sync.Mutex  // serialises cursor writes

	safeMu sync.Mutex // runs onSafe callbacks one batch at a time, in seq order
	safeQ  []safeCall

	ackQuit chan struct{}
	ackDone chan struct{}
	stopped atomic.Bool
	cursor  *cursorFile
	lock    *os.File // holds the spool's flock while open

	rd reader
	// rdMu guards rd's file and position while Next reads outside mu, so
	// that dropOldest can close a segment the reader still holds open (its
	// disk space is only freed then). Lock order: mu, then rdMu.
	rdMu sync.Mutex

	nCommitted, nFsyncs, nMarkFsyncs, nDirFsyncs, nWritten atomic.Uint64
	nSafeDelivery, nSafeSync                               atomic.Uint64
	nDropped, nFullEvents, nWriteErrs                      atomic.Uint64
	failing                                                atomic.Pointer[string] // see Stats.Failing
	failingSince, commitStarted                            atomic.Int64           // unix ns; see Stats
	damagedBytes                                           int64
	damagedMsgs                                            uint64
}

// Open recovers the spool in opt.Dir (creating it if needed) and starts its
// writer. Corrupt data is repaired or set aside and reported, never fatal.
func Open(opt Options) (*Spool, error) {
	opt = opt.withDefaults()
	if err := opt.validate(); err != nil {
		return nil, err
	}
	s := &Spool{
		opt:      opt,
		log:      opt.Logger,
		dir:      filepath.Join(opt.Dir, "spool"),
		stopping: make(chan struct{}),
		written:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		metaKick: make(chan struct{}, 1),
		ackQuit:  make(chan struct{}),
		ackDone:  make(chan struct{}),
	}
	s.cond = sync.NewCond(&s.mu)
	// A segment is a sixteenth of the budget (64KiB..16MiB): small enough
	// that deleting whole delivered segments keeps the footprint near the
	// backlog, large enough that rolling is rare. One record may take at most
	// a quarter of the budget.
	s.segBytes = min(max(opt.MaxBytes/16, 64<<10), 16<<20)
	s.maxBody = int(min(opt.MaxBytes/4, 256<<20+1<<16))
	s.maxGroup = int(min(opt.MaxBytes/8, 4<<20))
	s.memHard = max(2*opt.MemoryBytes, int64(s.maxGroup))
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := lockDir(s.dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool: recover %s: %w", s.dir, err)
	}
	go s.writeLoop()
	go s.metaLoop()
	return s, nil
}

// MaxRecordPayload is the largest payload (plus topic) Append accepts.
func (s *Spool) MaxRecordPayload() int { return s.maxBody - bodyFixed }

// ID formats the stable message id for seq: the spool's epoch (creation
// time and randomness, so ids never repeat if the volume is wiped) and the
// zero-padded sequence, so ids of one spool sort in receive order.
func (s *Spool) ID(seq uint64) string { return s.epoch + "-" + fmt.Sprintf("%012d", seq) }

// record is the Record for seq: its id is the one the entry keeps, if any.
func (s *Spool) record(seq uint64, e Entry) Record {
	id := e.ID
	if id == "" {
		id = s.ID(seq)
	}
	return Record{Seq: seq, ID: id, Entry: e}
}

// RefusedID gives a message that Append refused (ErrTooLarge) an id in the
// same scheme, so that it sorts among the others in receive order. It gets
// no seq of its own: seqs number the records without gaps in memory (the
// reader indexes held records by seq), so one cannot be spent without a
// record. The id is that of the seq before the next one given, followed by
// the receive time in nanoseconds: it sorts after every id given before it
// and before every id given after it. The suffix only grows (by 1 ns past
// the last one if the clock repeats), so two refusals never share an id.
func (s *Spool) RefusedID(received time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := max(received.UnixNano(), s.lastRefused+1)
	s.lastRefused = ns
	return fmt.Sprintf("%s-%019d", s.ID(s.nextSeq-1), ns)
}

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
	s.cursor, s.acked, s.stored = cur, st.acked, st
	if st.inFlightLast > st.acked {
		s.inFlightFirst, s.inFlightLast, s.inFlightStored = max(st.inFlightFirst, st.acked+1), st.inFlightLast, true
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
				"bytes", d.Bytes, "lost_at_most", d.Lost, "torn_tail", d.Tail, "set_aside", d.SetAside)
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
		for _, r := range res.runs {
			if r.hi > s.acked {
				s.disk.addRange(max(r.lo, s.acked+1), r.hi)
			}
		}
	}
	s.durable = max(prev, s.acked)
	// Seqs below the reservation may have gone to messages delivered from
	// memory before a crash: never give them again.
	s.nextSeq = max(s.durable+1, st.reserved)
	if len(s.segs) > 0 {
		s.log.Info("spool recovered", "dir", s.dir, "segments", len(s.segs), "bytes", s.total,
			"undelivered", s.disk.count())
	}
	if err := s.storeCursor(); err != nil { // the first reservation
		return err
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

// roll starts a new active segment named after the seq above everything
// written so far (seqs are handed out ahead of writes, so the next seq could
// name two segments alike). It sorts after every older segment and before
// every newer one. Caller holds mu or is single-threaded (recovery).
func (s *Spool) roll() error {
	if s.active != nil {
		if err := s.active.Close(); err != nil {
			return err
		}
		s.active = nil
	}
	path := filepath.Join(s.dir, fmt.Sprintf("%020d.seg", s.durable+1))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	s.nDirFsyncs.Add(1)
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.active = f
	s.segs = append(s.segs, &segment{path: path})
	return nil
}

func (s *Spool) strict() bool { return s.opt.SyncInterval <= 0 }

// Append takes e, gives it the next seq and holds it until it is safe:
// onSafe is called once (in seq order, from the spool's goroutines or an
// Ack caller) when e is delivered or durably written. Append waits while
// memory holds its bound, which is how a slow or full disk pushes back on
// MQTT.
func (s *Spool) Append(ctx context.Context, e Entry, onSafe func(seq uint64)) error {
	if e.ID != "" && !ValidID(e.ID) {
		return fmt.Errorf("spool: id %q: want 1 to %d letters, digits, '.', '_' or '-'", e.ID, MaxIDLen)
	}
	if len(e.Topic) > maxTopicLen || e.bodySize() > s.maxBody {
		return ErrTooLarge
	}
	s.mu.Lock()
	if s.memBytes >= s.memHard && !s.stopped.Load() && ctx.Err() == nil {
		stop := context.AfterFunc(ctx, func() {
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
		})
		for s.memBytes >= s.memHard && !s.stopped.Load() && ctx.Err() == nil {
			s.cond.Wait()
		}
		stop()
	}
	if s.stopped.Load() {
		s.mu.Unlock()
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	now := time.Now()
	firstPace := false // the writer's deadline may move earlier: wake it
	if !s.lastArrival.IsZero() {
		// A moving average quick enough to learn a burst's pace within a few
		// messages; an idle spell counts as one window, not as hours.
		sample := min(now.Sub(s.lastArrival), s.opt.SyncInterval)
		if s.gap == 0 {
			s.gap, firstPace = sample, true
		} else {
			s.gap += (sample - s.gap) / 4
		}
	}
	s.lastArrival = now
	size := int64(e.Size())
	wake := len(s.mem) == 0 || firstPace || (s.memBytes < s.opt.MemoryBytes && s.memBytes+size >= s.opt.MemoryBytes)
	s.mem = append(s.mem, held{seq: s.nextSeq, e: e, onSafe: onSafe, at: now})
	s.nextSeq++
	s.memBytes += size
	reserve := s.nextSeq+reserveChunk/2 > s.stored.reserved
	if !s.strict() {
		s.cond.Broadcast() // the reader may take it from memory
	}
	s.mu.Unlock()
	if wake {
		signal(s.kick)
	}
	if reserve {
		signal(s.metaKick)
	}
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// syncDue says whether what memory holds should be written now, and if not,
// how long until it should (0: nothing held). Caller holds mu.
func (s *Spool) syncDue(now time.Time) (bool, time.Duration) {
	if len(s.mem) == 0 {
		return false, 0
	}
	if s.strict() {
		due := s.mem[0].at.Add(s.opt.CommitWait)
		if !now.Before(due) || s.memBytes >= int64(s.maxGroup) {
			return true, 0
		}
		return false, due.Sub(now)
	}
	if s.memBytes >= s.opt.MemoryBytes || s.flushTo >= s.mem[0].seq {
		return true, 0
	}
	// The window: nothing waits unacknowledged longer than SyncInterval.
	due := s.mem[0].at.Add(s.opt.SyncInterval)
	// Arrivals stopped while acknowledgements are held: the broker may be
	// waiting for them (its in-flight window is full), so holding them any
	// longer would only stall the stream. "Stopped" is judged against the
	// recent pace: four average gaps without a message. Before a second
	// message there is no pace to judge by (and a first message alone
	// rarely fills a window): the first after start waits like the rest,
	// rather than being written at once.
	if quiet := s.lastArrival.Add(min(4*s.gap, s.opt.SyncInterval)); s.gap > 0 && quiet.Before(due) && !s.opt.noQuiet {
		due = quiet
	}
	if !now.Before(due) {
		return true, 0
	}
	return false, due.Sub(now)
}

func (s *Spool) writeLoop() {
	defer close(s.written)
	var buf []byte
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mu.Lock()
		stopping := s.stopped.Load()
		due, wait := s.syncDue(time.Now())
		if stopping {
			// Write what is held before the stop: it is acknowledged.
			due = len(s.mem) > 0
		}
		s.mu.Unlock()
		if due {
			if !s.commit(&buf) {
				return
			}
			continue
		}
		if stopping {
			return
		}
		s.reuseIfDelivered()
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case <-s.kick:
		case <-timer.C:
		case <-s.stopping:
		}
		timer.Stop()
	}
}

// reuseIfDelivered truncates the active segment once everything in it is
// delivered and the mark says so, instead of starting a new file (a file
// creation, a directory fsync and an unlink each time). Writer only.
func (s *Spool) reuseIfDelivered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	act := s.segs[len(s.segs)-1]
	if act.size == 0 || act.last > s.stored.acked {
		return
	}
	s.rdMu.Lock()
	if s.rd.seg == act {
		s.rd.close()
	}
	s.rdMu.Unlock()
	if err := s.active.Truncate(0); err != nil {
		s.log.Warn("spool: truncating the delivered segment failed", "err", err)
		return
	}
	s.total -= act.size
	act.first, act.last, act.size, act.count = 0, 0, 0, 0
	s.cond.Broadcast()
}

// commit writes what memory holds (at most maxGroup bytes) as one write and
// one fsync, then acknowledges it. On a write error it cuts the partial
// write off and retries with backoff (the messages stay unacknowledged
// meanwhile), so a full disk stalls instead of losing or corrupting
// anything. False when the spool stopped with messages unwritten.
func (s *Spool) commit(buf *[]byte) bool {
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		s.commitStarted.Store(time.Now().UnixNano())
		err := s.tryCommit(buf)
		s.commitStarted.Store(0)
		if err == nil {
			if attempt > 0 {
				s.failing.Store(nil)
				s.failingSince.Store(0)
				s.log.Info("spool writes succeed again; acknowledging resumes")
			}
			s.runSafe()
			return true
		}
		if errors.Is(err, ErrClosed) {
			return false // messages stay unacknowledged: the broker redelivers them
		}
		s.nWriteErrs.Add(1)
		msg := err.Error()
		s.failing.Store(&msg)
		s.failingSince.CompareAndSwap(0, time.Now().UnixNano())
		if s.opt.Policy == DropOldest && errors.Is(err, syscall.ENOSPC) && s.dropForSpace() {
			continue // the disk filled before BUFFER_MAX_BYTES: the policy applies as well
		}
		if attempt == 0 || attempt%20 == 0 {
			s.log.Error("spool write failed; retrying, messages stay unacknowledged", "err", err, "attempt", attempt+1)
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 5*time.Second)
		if s.stopped.Load() {
			return false // still unacknowledged: the broker redelivers after restart
		}
	}
}

// groupSize is how many held records one write takes, and their bytes:
// up to limit, but never part of the batch in flight whose exact resend
// matters (a crash between two writes would leave only part of it on disk
// to resend, beside an object that may hold all of it). Caller holds mu.
func (s *Spool) groupSize(limit int64) (int, int64) {
	whole := uint64(0)
	if s.inFlightLast > s.acked && s.inFlightFirst <= s.inFlightLast {
		whole = s.inFlightLast
	}
	n, size := 0, int64(0)
	for n < len(s.mem) {
		sz := int64(s.mem[n].e.Size())
		if n > 0 && size+sz > limit && s.mem[n].seq > whole {
			break
		}
		n++
		size += sz
	}
	return n, size
}

func (s *Spool) tryCommit(buf *[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The batch in flight gets records on disk with this write: record it
	// first, so that a crash at any point resends exactly that batch.
	for len(s.mem) > 0 && !s.inFlightStored && s.inFlightLast >= s.mem[0].seq && s.inFlightFirst <= s.mem[len(s.mem)-1].seq {
		s.mu.Unlock()
		err := s.storeCursor()
		s.mu.Lock()
		if err != nil {
			return fmt.Errorf("recording the batch in flight: %w", err)
		}
	}
	_, need := s.groupSize(int64(s.maxGroup))
	if need == 0 {
		return nil
	}
	if err := s.makeRoom(need); err != nil {
		return err
	}
	// Deliveries may have taken some while makeRoom waited.
	n, need := s.groupSize(need)
	if n == 0 || need > s.opt.MaxBytes-s.total {
		return nil // delivered meanwhile, or a larger record came first: the next round
	}
	act := s.segs[len(s.segs)-1]
	if act.size > 0 && act.size+need > s.segBytes {
		if err := s.roll(); err != nil {
			return err
		}
		act = s.segs[len(s.segs)-1]
	}
	first, last := s.mem[0].seq, s.mem[n-1].seq
	b := (*buf)[:0]
	for i := range n {
		b = appendRecord(b, s.mem[i].seq, &s.mem[i].e)
	}
	*buf = b
	if cap(b) > 2*s.maxGroup {
		*buf = nil // do not keep a one-off huge buffer alive
	}
	s.writing = n
	// Write and fsync outside the lock: appends, reads and deliveries go on
	// meanwhile (a delivery may take records from mem[:writing]).
	s.mu.Unlock()
	_, werr := s.active.WriteAt(b, act.size)
	if werr == nil {
		werr = fsyncFile(s.active)
	}
	s.nFsyncs.Add(1)
	s.nWritten.Add(uint64(len(b)))
	s.mu.Lock()
	if werr != nil {
		// Drop whatever part of the write landed so the file stays a clean log.
		_ = s.active.Truncate(act.size)
		s.writing = 0
		return werr
	}
	if act.first == 0 {
		act.first = first
	}
	act.last = last
	act.size += int64(len(b))
	act.count += n
	s.total += int64(len(b))
	s.durable = last
	s.nCommitted.Add(uint64(n))
	// What was not delivered while it was written is now safe by the write.
	k := s.writing
	s.writing = 0
	if k > 0 {
		s.disk.addRange(s.mem[0].seq, s.mem[k-1].seq)
		s.popSafe(k)
		s.nSafeSync.Add(uint64(k))
	}
	s.cond.Broadcast()
	return nil
}

// popSafe removes mem[:k] and queues their onSafe calls. Caller holds mu.
func (s *Spool) popSafe(k int) {
	for i := range k {
		h := &s.mem[i]
		s.safeQ = append(s.safeQ, safeCall{h.onSafe, h.seq})
		s.memBytes -= int64(h.e.Size())
	}
	clear(s.mem[:k])
	s.mem = s.mem[k:]
	if len(s.mem) == 0 {
		s.mem = s.mem[:0:0] // let the backing array go
	}
}

// runSafe calls the queued onSafe callbacks in seq order.
func (s *Spool) runSafe() {
	s.safeMu.Lock()
	defer s.safeMu.Unlock()
	for {
		s.mu.Lock()
		q := s.safeQ
		s.safeQ = nil
		s.mu.Unlock()
		if len(q) == 0 {
			return
		}
		for _, c := range q {
			c.f(c.seq)
		}
	}
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
	s.rdMu.Lock()
	defer s.rdMu.Unlock()
	old.dropped = true
	if s.rd.seg == old {
		s.rd.close()
	}
	var lost, taken uint64
	if old.last > s.acked {
		if s.rd.next > 0 {
			taken = s.disk.countTo(min(s.rd.next-1, old.last))
		}
		lost = s.disk.trimTo(old.last) - taken
		s.acked = old.last
		s.markDirty = true
	}
	if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.segs = s.segs[1:]
	s.total -= old.size
	s.nDropped.Add(lost)
	s.log.Warn("spool full: dropped the oldest undelivered messages (policy drop_oldest)",
		"dropped", lost, "bytes", old.size, "still_in_memory", taken)
	signal(s.metaKick)
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
// Messages still held in memory are acknowledged to the broker at once and
// never written. The mark is persisted later (coalesced), and only when it
// passes records on disk; delivered segments are deleted after it is.
func (s *Spool) Ack(seq uint64) {
	s.mu.Lock()
	if seq <= s.acked || seq >= s.nextSeq {
		s.mu.Unlock()
		return
	}
	s.acked = seq
	if n := s.disk.trimTo(seq); n > 0 {
		s.markDirty = true
		s.unmarked += n
		signal(s.metaKick)
	}
	k := 0
	for k < len(s.mem) && s.mem[k].seq <= seq {
		k++
	}
	if k > 0 {
		s.popSafe(k)
		s.writing = max(0, s.writing-k)
		s.nSafeDelivery.Add(uint64(k))
		s.cond.Broadcast() // Append may wait for memory
	}
	s.mu.Unlock()
	if k > 0 {
		s.runSafe()
	}
}

// metaLoop writes the cursor when it must (a seq reservation running out,
// the mark passing records on disk: at most once per SyncInterval) and
// deletes the segments the stored mark covers.
func (s *Spool) metaLoop() {
	defer close(s.ackDone)
	var lastMark time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-s.metaKick:
		case <-timer.C:
		case <-s.ackQuit:
			return
		}
		s.mu.Lock()
		reserve := s.nextSeq+reserveChunk/2 > s.stored.reserved
		dirty := s.markDirty
		urgent := reserve || (s.opt.MarkEvery > 0 && s.unmarked >= uint64(s.opt.MarkEvery))
		s.mu.Unlock()
		if dirty && !urgent {
			if wait := s.opt.SyncInterval - time.Since(lastMark); wait > 0 {
				timer.Reset(wait) // coalesce: a stale mark only means resends
				continue
			}
		}
		if dirty || reserve {
			if err := s.storeCursor(); err != nil {
				s.log.Error("spool: storing the delivered mark failed; will retry", "err", err)
				timer.Reset(100 * time.Millisecond)
				continue
			}
			lastMark = time.Now()
		}
		s.mu.Lock()
		for len(s.segs) > 1 && s.segs[0].last != 0 && s.segs[0].last <= s.stored.acked {
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
		signal(s.kick) // the active segment may be reusable now
	}
}

// storeCursor durably writes the delivered mark, the batch in flight and a
// seq reservation reaching reserveChunk past the next seq.
func (s *Spool) storeCursor() error { return s.storeCursorReserving(false) }

// storeCursorReserving with exact reserves nothing beyond the next seq: on
// a clean stop, when nothing more is handed out, so that numbering resumes
// without a jump.
func (s *Spool) storeCursorReserving(exact bool) error {
	s.cursorMu.Lock()
	defer s.cursorMu.Unlock()
	s.mu.Lock()
	st := cursorState{acked: s.acked, inFlightFirst: s.inFlightFirst, inFlightLast: s.inFlightLast, reserved: s.stored.reserved}
	switch {
	case exact:
		st.reserved = s.nextSeq
	case s.nextSeq+reserveChunk/2 > s.stored.reserved:
		st.reserved = s.nextSeq + reserveChunk
	}
	dirty, unmarked, inFlightStored := s.markDirty, s.unmarked, s.inFlightStored
	s.markDirty, s.unmarked, s.inFlightStored = false, 0, true
	s.mu.Unlock()
	err := s.cursor.store(st)
	s.nMarkFsyncs.Add(1)
	s.nWritten.Add(slotSize)
	s.mu.Lock()
	if err != nil {
		s.markDirty = s.markDirty || dirty
		s.unmarked += unmarked
		s.inFlightStored = s.inFlightStored && inFlightStored
	} else {
		s.stored = st
		s.cond.Broadcast() // the reader may read past the old reservation
	}
	s.mu.Unlock()
	return err
}

// RecordedInFlight returns the seq range RecordInFlight last recorded, if
// it is not delivered yet: at start, the batch that was in flight when the
// process stopped, to be resent exactly. ok is false otherwise.
func (s *Spool) RecordedInFlight() (first, last uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlightLast <= s.acked {
		return 0, 0, false
	}
	return max(s.inFlightFirst, s.acked+1), s.inFlightLast, true
}

// RecordInFlight records that the records first..last are about to be sent
// as one batch, so that after a crash they are resent as exactly that batch
// (same object key, overwritten rather than duplicated). It is written at
// once when some of them are on disk, and otherwise before they are written
// if that happens while they are in flight: a batch held only in memory is
// not resent after a crash (the broker redelivers it) and needs no record.
//
// A batch partly on disk and partly in memory has the rest written first
// (RecordInFlight waits for it): once the batch is recorded, a crash must
// find all of it on disk to send the same object again.
func (s *Spool) RecordInFlight(first, last uint64) error {
	s.mu.Lock()
	if first <= s.durable && last > s.durable {
		s.flushTo = max(s.flushTo, last)
		s.mu.Unlock()
		signal(s.kick)
		s.mu.Lock()
		for s.durable < last && len(s.mem) > 0 && s.mem[0].seq <= last && !s.stopped.Load() {
			s.cond.Wait()
		}
		if s.durable < last && s.stopped.Load() {
			s.mu.Unlock()
			return ErrClosed
		}
	}
	s.inFlightFirst, s.inFlightLast = first, last
	s.inFlightStored = false
	// Also when the stored mark lags behind delivered records on disk: a
	// crash would resend those in other batches than they went in. With one
	// batch in flight at a time, storing here keeps every delivered record
	// on disk but the current batch's under the mark.
	must := first <= s.durable || s.markDirty
	s.mu.Unlock()
	if !must {
		return nil
	}
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
		MarkFsyncs: s.nMarkFsyncs.Load(), DirFsyncs: s.nDirFsyncs.Load(), WrittenBytes: s.nWritten.Load(),
		SafeByDelivery: s.nSafeDelivery.Load(), SafeBySync: s.nSafeSync.Load(), HeldBytes: s.memBytes,
		Dropped: s.nDropped.Load(), Full: s.full, FullEvents: s.nFullEvents.Load(), WriteErrors: s.nWriteErrs.Load(),
		Failing: failing, DamagedBytes: s.damagedBytes, DamagedMessages: s.damagedMsgs,
		FailingSince: unixTime(s.failingSince.Load()), CommitStarted: unixTime(s.commitStarted.Load()),
	}
}

// unixTime is the time of ns since the epoch, zero for 0.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Backlog returns how many messages are not yet delivered, on disk and in
// memory.
func (s *Spool) Backlog() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.disk.count() + uint64(len(s.mem))
}

// StopWriting stops accepting messages, writes (and acknowledges) what
// memory held, and returns when the writer is done.
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
	err := s.storeCursorReserving(true)
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
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
	return err
}

// lockDir takes an exclusive flock on dir/lock, so that one process at a
// time opens the spool: two writers would interleave their segments and
// cursors. The kernel releases it when the process dies.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrInUse, dir)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	return f, nil
}
