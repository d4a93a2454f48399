package mqtt

import (
	"hash/crc64"
	"log/slog"
	"sync"
	"time"
)

// Recognising the broker's redeliveries after a reconnect.
//
// When the connection drops (a network cut, a broker restart), the broker
// keeps every message it sent and did not see acknowledged, and on the next
// connection of the same session it sends them again, with DUP=1, their
// original packet ids, in the order first sent (MQTT 3.1.1, 4.4 and 4.6).
// Without help each would be spooled a second time under a new id. But a
// packet id is free for reuse once its PUBACK was processed (2.3.1), so a
// redelivery with the id and the bytes of a message received before can
// also be a new message that happens to look the same: taking it for a
// copy would lose it. The rule below can never do that:
//
//   - PUBACKs are sent in the order messages arrived (the spool acknowledges
//     in seq order), so the broker has processed those of some prefix r1..rK
//     of the messages received on the lost connection, r1..rN. If rN's
//     PUBACK was never written to that connection, K < N. (The connection
//     wrapper reads the PUBACKs paho writes; paho drops those of a lost
//     connection, so a message acknowledged after the drop counts as not
//     acknowledged, which is what the broker saw.)
//   - Then the broker still holds r(K+1)..rN, and resends them first and in
//     order, followed only by messages the block never received, whose ids
//     can only be ids freed by r1..rK. While r(K+1) is held, no later
//     message can carry its id: r(K+1) is the latest received with that id.
//   - So the first redelivery must be the latest message received with its
//     id, and the following ones must be the messages after it, one by one,
//     up to rN. Each is checked for its id and a hash of its topic and
//     payload (a guard against a broker that breaks these rules: the order
//     alone identifies them); the first that does not match ends the
//     recognising, and so does reaching rN (what follows is new).
//
// When rN's PUBACK was written before the drop, or the broker says it has no
// session (CONNACK session present 0), or a connection drops while its
// recognising is unfinished, nothing is recognised: copies are kept. A
// recognised redelivery is not spooled again: it is acknowledged once the
// message it repeats is safe (its own acknowledgement went to the lost
// connection and was dropped there).
//
// The list and what was acknowledged are kept in a journal (journal.go)
// that survives the process: after a crash, the first connection applies
// the same rule to the last connection of the process that died. A
// recognised redelivery of a message that process had not made safe is
// handed on all the same (it may have died with the process).

// tracked is how many of a connection's latest messages are remembered
// (about 32 bytes each): a first redelivery further back is not recognised.
// Mosquitto 2.0.11 was measured with up to about 5,000 messages sent and
// not yet acknowledged at once; a broker can have at most 65,535.
const (
	tracked   = 16384
	trackedBy = 2048 // dropped at a time once tracked+trackedBy are held
)

// rcvd is one message received on a connection.
type rcvd struct {
	sum  uint64 // topic and payload
	n    uint32 // payload length
	id   uint16
	safe bool // Ack was called: delivered or durably spooled
	sent bool // its PUBACK was written to the connection: the broker may have read it
	dead bool // received by an earlier process: if not safe, its fate is unknown
}

// tracker holds what is needed to recognise redeliveries.
type tracker struct {
	mu   sync.Mutex
	cur  []*rcvd // received on the current connection, oldest first
	drop int     // entries dropped from the front of cur
	// prev is the lost connection's list while its redeliveries are
	// expected; next is the index in prev of the next expected redelivery
	// (-1: the first is yet to come).
	prev []*rcvd
	next int
	// walking is set while a connection matches prev: its loss with the
	// recognising unfinished leaves nothing to match on the next one.
	walking bool
	// gen numbers connections; byID is the current one's latest message
	// with each packet id (the one a PUBACK written with that id is for);
	// confused is set when its writes could not be read as MQTT packets
	// (then any PUBACK may have been sent).
	gen      uint64
	byID     map[uint16]*rcvd
	confused bool
	// j keeps the current connection's list where a crash cannot take it
	// (journal.go); nil without one. jOn says whether it is being written:
	// only at a fast pace (see pace).
	j   *journal
	jOn bool
	// lastArrival and gap follow the pace of arrivals (clock: tests).
	lastArrival time.Time
	gap         time.Duration
	clock       func() time.Time
	// dups are the acknowledgements of recognised redeliveries waiting for
	// the message they repeat to be safe.
	dups map[*rcvd][]func()

	recognised, redelivered uint64
	log                     *slog.Logger
}

func newTracker() *tracker { return &tracker{next: -1, dups: map[*rcvd][]func(){}} }

// withJournal keeps the list in the journal at path and starts from what
// an earlier process of this boot left there: the first connection then
// recognises the redeliveries of the messages it had received.
func (t *tracker) withJournal(path string) (loaded int, lastSent bool, err error) {
	j, last, err := openJournal(path)
	if err != nil || j == nil {
		return 0, false, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.j, t.cur = j, last
	if len(last) > 0 {
		lastSent = last[len(last)-1].sent
	}
	return len(last), lastSent, nil
}

var crcTable = crc64.MakeTable(crc64.ECMA)

// sum hashes a message's topic and payload, the same in every process.
func (t *tracker) sum(topic string, payload []byte) uint64 {
	c := crc64.Update(0, crcTable, []byte(topic))
	c = crc64.Update(c, crcTable, []byte{0})
	return crc64.Update(c, crcTable, payload)
}

// connecting is called before each connection attempt, once the previous
// connection (if any) has stopped delivering messages and writing; it
// returns the new connection's number.
func (t *tracker) connecting() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	if len(t.cur) == 0 && t.drop == 0 {
		t.confused = false
		return t.gen // nothing arrived since: what the broker holds has not changed
	}
	unfinished := t.walking && t.prev != nil
	last := t.cur[len(t.cur)-1]
	t.prev, t.next, t.walking = nil, -1, false
	if !unfinished && !last.sent && !t.confused {
		t.prev = t.cur
	}
	t.cur, t.drop, t.byID, t.confused = nil, 0, nil, false
	t.journalConn()
	return t.gen
}

// pubackWritten records that connection gen was handed a PUBACK for id.
func (t *tracker) pubackWritten(gen uint64, id uint16) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return
	}
	if e := t.byID[id]; e != nil {
		e.sent = true
	}
	if t.jOn {
		t.j.sent(id)
	}
}

// journalConn records at once that a new connection begins, whatever the
// pace: after a crash the journal must never offer an earlier connection's
// messages once PUBACKs of this one may have gone out unrecorded. Caller
// holds mu.
func (t *tracker) journalConn() {
	if t.j == nil {
		return
	}
	t.j.conn()
	if err := t.j.flush(nil); err != nil {
		t.abandonJournal()
	}
}

// closeJournal closes the journal's file once the connection is closed (no
// PUBACK can follow). What it holds stays valid for the next run: every
// PUBACK that went out was recorded first.
func (t *tracker) closeJournal() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.j != nil {
		t.j.close()
		t.j, t.jOn = nil, false
	}
}

// abandonJournal gives the journal up after a failed write. Caller holds mu.
func (t *tracker) abandonJournal() {
	if err := t.j.abandon(); err != nil && t.log != nil {
		t.log.Error("MQTT journal: neither written nor removed; after a crash it may offer stale messages", "err", err)
	}
	t.j, t.jOn = nil, false
}

// journalGap is the pace (average time between messages) below which the
// journal is written. A crash can only make the broker resend the messages
// not yet acknowledged, a handful at sensor rates but thousands at full
// speed, while the journal's cost in flash per message is the reverse: at
// 10 msg/s its pages would cost 15-40 bytes a message.
const journalGap = 10 * time.Millisecond

// pace follows the arrivals' pace and turns the journal on and off with
// it. Turning it off records a new connection at once: after a crash the
// journal then offers nothing, rather than a list missing what came since.
// Caller holds mu.
func (t *tracker) pace(now time.Time) {
	if !t.lastArrival.IsZero() {
		sample := min(now.Sub(t.lastArrival), time.Second)
		t.gap += (sample - t.gap) / 8
	} else {
		t.gap = time.Second
	}
	t.lastArrival = now
	if t.j == nil {
		return
	}
	on := t.gap < journalGap
	if on == t.jOn {
		return
	}
	t.jOn = on
	if on {
		t.j.conn() // the list starts here
		return
	}
	// Nothing is known from here: written at once, since the PUBACKs ahead
	// go unrecorded.
	t.journalConn()
}

// unreadable records that connection gen wrote bytes not read as packets.
func (t *tracker) unreadable(gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return
	}
	t.confused = true
	if t.jOn {
		t.j.conn() // after a crash, nothing of this connection is known either
	}
}

// flushJournal writes what the journal holds; it must succeed before a
// PUBACK is written. On failure the journal is given up (removed), and an
// error means the PUBACK must not go out.
func (t *tracker) flushJournal() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.j == nil {
		return nil
	}
	err := t.j.flush(t.cur)
	if err == nil {
		return nil
	}
	err = t.j.abandon()
	t.j, t.jOn = nil, false
	return err
}

// connack records the broker's CONNACK: without a session nothing is
// redelivered, and an id held by the old session means nothing now.
//
// An error means the connection must not be used (see flushJournal).
func (t *tracker) connack(gen uint64, sessionPresent bool) error {
	if t.log != nil {
		t.mu.Lock()
		t.log.Debug("MQTT CONNACK", "session_present", sessionPresent, "connection", gen, "previous_messages", len(t.prev))
		t.mu.Unlock()
	}
	if sessionPresent {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return nil
	}
	t.prev, t.next, t.walking = nil, -1, false
	if t.j == nil {
		return nil
	}
	// Written at once: after a crash, the journal must not offer the old
	// session's messages to the new one.
	t.j.conn()
	if err := t.j.flush(t.cur); err != nil {
		err = t.j.abandon()
		t.j, t.jOn = nil, false
		return err
	}
	return nil
}

// arrived records a message and says whether it repeats one received
// before; ack is its own PUBACK. For a repeat, ack is called (now or once
// the original is safe) and the message must not be handed on. Otherwise
// the returned function is the message's acknowledgement.
func (t *tracker) arrived(id uint16, dup bool, topic string, payload []byte, ack func()) (repeat bool, ackFn func()) {
	e := &rcvd{id: id, n: uint32(len(payload)), sum: t.sum(topic, payload)}
	t.mu.Lock()
	if len(t.cur) == tracked+trackedBy {
		t.cur = append(t.cur[:0], t.cur[trackedBy:]...)
		t.drop += trackedBy
	}
	t.cur = append(t.cur, e)
	if t.byID == nil {
		t.byID = map[uint16]*rcvd{}
	}
	t.byID[id] = e
	now := time.Now
	if t.clock != nil {
		now = t.clock
	}
	t.pace(now())
	if t.jOn {
		t.j.arrival(e)
	}
	if dup {
		t.redelivered++
	}
	var orig *rcvd
	if dup && t.prev != nil {
		j := t.next
		if j < 0 {
			for j = len(t.prev) - 1; j >= 0 && t.prev[j].id != id; j-- {
			}
		}
		if j >= 0 && j < len(t.prev) && t.prev[j].id == id && t.prev[j].sum == e.sum && t.prev[j].n == e.n {
			orig = t.prev[j]
			t.walking = true
			t.next = j + 1
			if t.next == len(t.prev) {
				t.prev, t.next, t.walking = nil, -1, false // rN reached: what follows is new
			}
		} else {
			if t.log != nil {
				found := j >= 0 && j < len(t.prev)
				var pid uint16
				var same bool
				if found {
					pid, same = t.prev[j].id, t.prev[j].sum == e.sum
				}
				t.log.Debug("MQTT redelivery not recognised; copies kept until the next reconnect",
					"packet_id", id, "expected_index", t.next, "index", j, "of", len(t.prev), "expected_id", pid, "same_bytes", same)
			}
			t.prev, t.next = nil, -1 // not what the rule expects: keep copies from here on
		}
	}
	ackFn = func() { t.ack(e, ack) }
	if orig == nil || (orig.dead && !orig.safe) {
		// New, or the repeat of a message an earlier process received and
		// may have lost with it: handed on (a copy at worst).
		t.mu.Unlock()
		return false, ackFn
	}
	t.recognised++
	if !orig.safe {
		t.dups[orig] = append(t.dups[orig], ackFn)
		t.mu.Unlock()
		return true, nil
	}
	t.mu.Unlock()
	ackFn()
	return true, nil
}

func (t *tracker) ack(e *rcvd, ack func()) {
	t.mu.Lock()
	if e.safe {
		t.mu.Unlock()
		return
	}
	e.safe = true
	if t.jOn && t.byID[e.id] == e {
		t.j.safe(e.id) // only for the current connection's: records go by packet id
	}
	dups := t.dups[e]
	delete(t.dups, e)
	t.mu.Unlock()
	ack()
	for _, d := range dups {
		d()
	}
}

func (t *tracker) counts() (recognised, redelivered uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.recognised, t.redelivered
}
