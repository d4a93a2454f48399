package mqtt

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// An adversarial broker, as a model: it does everything MQTT 3.1.1 allows
// that could make a new message look like one received before. Packet ids
// are drawn from a tiny space and always the lowest free one, so an id is
// reused by the very next message once its PUBACK is processed; payloads
// come from two values, so reused ids carry the same bytes as often as
// not; connections are cut at random moments, with random parts of the
// messages sent not yet received and of the PUBACKs sent not yet
// processed; sessions are sometimes lost. The subscriber side is the real
// tracker with a spool that acknowledges in seq order at random times.
//
// The property: a message taken for a repeat was handed on before (it is
// the same broker message), and at the end every message is handed on.
type advMsg struct {
	serial  int
	payload string
}

type advInflight struct {
	advMsg
	id uint16
}

type advWire struct {
	advInflight
	dup bool
}

type advBroker struct {
	rng      *rand.Rand
	ids      int // ids 1..ids
	window   int
	queue    []advMsg      // not yet sent
	inflight []advInflight // sent, PUBACK not processed; in send order
	down     []advWire     // sent on this connection, not yet received
	up       []uint16      // PUBACKs sent on this connection, not yet processed
}

func (b *advBroker) freeID() (uint16, bool) {
	for id := 1; id <= b.ids; id++ {
		used := false
		for _, f := range b.inflight {
			if int(f.id) == id {
				used = true
				break
			}
		}
		if !used {
			return uint16(id), true
		}
	}
	return 0, false
}

// sendNew sends queued messages while the window and the ids allow.
func (b *advBroker) sendNew() {
	for len(b.queue) > 0 && len(b.inflight) < b.window {
		id, ok := b.freeID()
		if !ok {
			return
		}
		f := advInflight{b.queue[0], id}
		b.queue = b.queue[1:]
		b.inflight = append(b.inflight, f)
		b.down = append(b.down, advWire{f, false})
	}
}

// puback processes the oldest PUBACK sent: it frees the id of the message
// that holds it.
func (b *advBroker) puback() {
	id := b.up[0]
	b.up = b.up[1:]
	for i, f := range b.inflight {
		if f.id == id {
			b.inflight = append(b.inflight[:i], b.inflight[i+1:]...)
			break
		}
	}
	b.sendNew()
}

type advPending struct {
	serial int
	ack    func()
}

type advClient struct {
	t       *testing.T
	tr      *tracker
	conn    int // current connection number
	handed  map[int]int
	excused map[int]bool // lost by the broker with its session
	pending []advPending // messages handed on, not yet safe, in seq order (the spool)
}

// runAdversary plays one game; with journal set, the process also crashes
// at random moments and starts again from the journal, losing the
// messages it had not made safe.
func runAdversary(t *testing.T, seed uint64, journal string) (handedOn, repeats int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	b := &advBroker{rng: rng, ids: 1 + rng.IntN(6), window: 1 + rng.IntN(8)}
	c := &advClient{t: t, tr: newTracker(), handed: map[int]int{}, excused: map[int]bool{}}
	// A clock that runs fast and slow: the journal is turned on and off.
	var clock time.Time
	tick := func() time.Time {
		if rng.IntN(30) == 0 {
			clock = clock.Add(time.Second)
		} else {
			clock = clock.Add(time.Millisecond)
		}
		return clock
	}
	c.tr.clock = tick
	if journal != "" {
		os.Remove(journal)
		if _, _, err := c.tr.withJournal(journal); err != nil {
			t.Fatal(err)
		}
	}
	total := 200 + rng.IntN(200)
	for i := range total {
		b.queue = append(b.queue, advMsg{serial: i, payload: []string{"a", "b"}[rng.IntN(2)]})
	}
	var gen uint64
	connect := func() {
		c.conn++
		gen = c.tr.connecting()
		lost := rng.IntN(20) == 0 // the broker lost the session (restart without persistence)
		if lost {
			// Everything it held is gone: those messages are not the
			// subscriber's to lose (take them off the books).
			for _, f := range b.inflight {
				c.excused[f.serial] = true
			}
			b.inflight = nil
		}
		if err := c.tr.connack(gen, !lost); err != nil {
			t.Fatal(err)
		}

		b.down, b.up = nil, nil
		for _, f := range b.inflight {
			b.down = append(b.down, advWire{f, true})
		}
		b.sendNew()
	}
	connect()
	for step := 0; ; step++ {
		if len(b.queue) == 0 && len(b.inflight) == 0 && len(c.pending) == 0 {
			break
		}
		if step > 200000 {
			t.Fatalf("seed %d: no progress: queue %d inflight %d pending %d", seed, len(b.queue), len(b.inflight), len(c.pending))
		}
		switch r := rng.IntN(100); {
		case r < 40 && len(b.down) > 0: // the client receives the next message
			w := b.down[0]
			b.down = b.down[1:]
			conn, g := c.conn, gen
			id := w.id
			tr := c.tr
			ack := func() {
				if c.conn == conn { // paho drops acknowledgements of a lost connection
					tr.pubackWritten(g, id)
					if err := tr.flushJournal(); err != nil {
						t.Fatal(err)
					}
					b.up = append(b.up, id)
				}
			}
			repeat, ackFn := c.tr.arrived(w.id, w.dup, "t", []byte(w.payload), ack)
			if repeat {
				if c.handed[w.serial] <= 0 {
					t.Fatalf("seed %d: message %d (id %d, %q, dup %v) taken for a repeat but never handed on: lost", seed, w.serial, w.id, w.payload, w.dup)
				}
				repeats++
				continue
			}
			c.handed[w.serial]++
			handedOn++
			c.pending = append(c.pending, advPending{w.serial, ackFn})
		case r < 65 && len(c.pending) > 0: // the spool makes a prefix safe
			n := 1 + rng.IntN(len(c.pending))
			for _, a := range c.pending[:n] {
				a.ack()
			}
			c.pending = c.pending[n:]
		case r < 67 && journal != "": // the process crashes
			for _, p := range c.pending {
				c.handed[p.serial]-- // died with it
			}
			c.pending = nil
			c.tr = newTracker()
			c.tr.clock = tick
			if _, _, err := c.tr.withJournal(journal); err != nil {
				t.Fatal(err)
			}
			connect()
		case r < 90 && len(b.up) > 0:
			b.puback()
		case r < 93: // the connection drops
			connect()
		default:
			if len(b.down) == 0 && len(b.up) == 0 && len(c.pending) == 0 && len(b.inflight) > 0 {
				connect() // stalled: the broker waits for PUBACKs that were dropped
			}
		}
	}
	for i := range total {
		if c.handed[i] <= 0 && !c.excused[i] {
			t.Fatalf("seed %d: message %d never handed on", seed, i)
		}
	}
	return handedOn, repeats
}

// adversaryRuns is how many games TestRedeliveriesAdversarialBroker plays
// without crashes (a sixth as many with them): 1,000 in make test,
// CLOUDBLOCK_ADVERSARY_RUNS in make test-faults (3,000) or by hand.
func adversaryRuns(t *testing.T) int {
	n := 1000
	if v := os.Getenv("CLOUDBLOCK_ADVERSARY_RUNS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 6 {
			t.Fatalf("CLOUDBLOCK_ADVERSARY_RUNS=%q: want a number of runs, at least 6", v)
		}
	}
	return n
}

func TestRedeliveriesAdversarialBroker(t *testing.T) {
	runs := adversaryRuns(t)
	for _, crashes := range []bool{false, true} {
		// With crashes every PUBACK is a journal write: fewer games.
		seeds, journal := runs, ""
		if crashes {
			// A tmpfs if there is one: the games write the journal hard.
			dir := t.TempDir()
			if d, err := os.MkdirTemp("/dev/shm", "journal-test-"); err == nil {
				dir = d
				defer os.RemoveAll(d)
			}
			seeds, journal = runs/6, filepath.Join(dir, "journal")
			// Small files: the journal starts a new one every 200 or so messages.
			defer func(m int64) { journalMax = m }(journalMax)
			journalMax = 4096
		}
		if testing.Short() {
			seeds /= 10
		}
		var handed, repeats int
		for seed := range uint64(seeds) {
			h, r := runAdversary(t, seed, journal)
			handed += h
			repeats += r
		}
		t.Logf("%d runs (crashes %v): %d messages handed on, %d redeliveries recognised, none lost", seeds, crashes, handed, repeats)
		if repeats == 0 {
			t.Fatal("nothing was recognised: the model never exercised the rule")
		}
	}
}

// The rule recognises a plain redelivery: the connection drops with
// messages unacknowledged, and the broker sends them again in order.
func TestRedeliveriesRecognised(t *testing.T) {
	tr := newTracker()
	gen := tr.connecting()
	_ = tr.connack(gen, false)
	var acks []string
	ackOf := func(g uint64, id uint16, s string) func() {
		return func() { acks = append(acks, s); tr.pubackWritten(g, id) }
	}
	var own []func()
	for i, p := range []string{"x", "y", "x"} {
		rep, a := tr.arrived(uint16(i+1), false, "t", []byte(p), ackOf(gen, uint16(i+1), fmt.Sprint("c1-", i+1)))
		if rep {
			t.Fatal("first copies taken for repeats")
		}
		own = append(own, a)
	}
	own[0]() // the first is safe; its PUBACK went out
	gen = tr.connecting()
	_ = tr.connack(gen, true)
	// The broker processed none of them and sends all three again.
	for i, p := range []string{"x", "y", "x"} {
		rep, _ := tr.arrived(uint16(i+1), true, "t", []byte(p), ackOf(gen, uint16(i+1), fmt.Sprint("c2-", i+1)))
		if !rep {
			t.Fatalf("redelivery %d not recognised", i+1)
		}
	}
	// The repeat of the first, already safe, was acknowledged at once; the
	// others wait for their originals (whose own PUBACKs paho drops: the
	// test's records them all).
	if fmt.Sprint(acks) != "[c1-1 c2-1]" {
		t.Fatalf("acks %v", acks)
	}
	own[1]()
	own[2]()
	if fmt.Sprint(acks) != "[c1-1 c2-1 c1-2 c2-2 c1-3 c2-3]" {
		t.Fatalf("acks %v", acks)
	}
	if rec, red := tr.counts(); rec != 3 || red != 3 {
		t.Fatalf("counts %d recognised of %d", rec, red)
	}
	// A third connection: a DUP=1 message now may be new (every PUBACK of
	// the second was written).
	gen = tr.connecting()
	_ = tr.connack(gen, true)
	if rep, _ := tr.arrived(1, true, "t", []byte("x"), func() {}); rep {
		t.Fatal("a redelivery after everything was acknowledged taken for a repeat")
	}
}

// When the PUBACK of everything received was written before the drop, a
// redelivery with a known id and the same bytes may be a new message: kept.
// A PUBACK paho never wrote (the connection was already gone) does not
// count as sent.
func TestRedeliveriesSentPubackKept(t *testing.T) {
	tr := newTracker()
	gen := tr.connecting()
	_, a := tr.arrived(7, false, "t", []byte("on"), func() {})
	a()
	tr.pubackWritten(gen, 7)
	gen = tr.connecting()
	_ = tr.connack(gen, true)
	if rep, _ := tr.arrived(7, true, "t", []byte("on"), func() {}); rep {
		t.Fatal("taken for a repeat though its PUBACK may have freed the id")
	}

	tr = newTracker()
	tr.connecting()
	_, a = tr.arrived(7, false, "t", []byte("on"), func() {})
	a() // acknowledged, but paho dropped it: the connection was gone
	gen = tr.connecting()
	_ = tr.connack(gen, true)
	if rep, _ := tr.arrived(7, true, "t", []byte("on"), func() {}); !rep {
		t.Fatal("a redelivery whose PUBACK never left not recognised")
	}
}

// The scanner finds PUBACKs in any split of the written stream, and gives
// up on bytes that are not MQTT.
func TestPacketScanner(t *testing.T) {
	stream := []byte{
		0xc0, 0x00, // PINGREQ
		0x40, 0x02, 0x01, 0x02, // PUBACK 258
		0x82, 0x08, 0x00, 0x05, 0x00, 0x03, 'a', '/', 'b', 0x01, // SUBSCRIBE
		0x40, 0x02, 0xff, 0xfe, // PUBACK 65534
	}
	for cut := range len(stream) + 1 {
		var s packetScanner
		var ids []uint16
		ok := s.feed(stream[:cut], func(id uint16) { ids = append(ids, id) }) &&
			s.feed(stream[cut:], func(id uint16) { ids = append(ids, id) })
		if !ok || fmt.Sprint(ids) != "[258 65534]" {
			t.Fatalf("split at %d: ok %v, ids %v", cut, ok, ids)
		}
	}
	var s packetScanner
	if s.feed([]byte{0x40, 0x03, 0, 0, 0}, func(uint16) {}) {
		t.Fatal("a 3-byte PUBACK read as fine")
	}
}

// What recognising costs a message: its arrival, its acknowledgement, and
// the journal write before its PUBACK (a write(2) each, as paho writes each
// PUBACK on its own). Against the block's ~40 us of CPU per message
// (README, make bench).
func BenchmarkTracker(b *testing.B) {
	for _, withJournal := range []bool{false, true} {
		b.Run(fmt.Sprintf("journal=%v", withJournal), func(b *testing.B) {
			tr := newTracker()
			if withJournal {
				if _, _, err := tr.withJournal(filepath.Join(b.TempDir(), "journal")); err != nil {
					b.Fatal(err)
				}
			}
			gen := tr.connecting()
			payload := make([]byte, 200)
			b.ReportAllocs()
			for i := range b.N {
				id := uint16(i%65535 + 1)
				_, ack := tr.arrived(id, false, "cloud-input", payload, func() {})
				ack()
				tr.pubackWritten(gen, id)
				if err := tr.flushJournal(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
