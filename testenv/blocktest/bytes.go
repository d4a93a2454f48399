package blocktest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// spoolID is the form of every message id: the spool's epoch (12 hex
// digits) and the message's zero-padded sequence number.
var spoolID = regexp.MustCompile(`^[0-9a-f]{12}-[0-9]{12}$`)

// testDevice is the device id every rig gives the block (harness.NewBlock).
const testDevice = "test-device"

// Byte-exact delivery with no fault: numbered messages around payloads of
// every shape (every byte value, invalid UTF-8, empty, NUL, multi-line text,
// JSON, 1 MiB of random bytes), and, where the destination has a limit of
// its own, the largest payload it takes and one byte more. Everything
// arrives exactly once, unchanged, with its metadata: a spool id (each
// message its own), the MQTT topic and, where the destination carries it,
// the device. The one-too-large payload is dead-lettered with the limit in
// its reason. (badinput does the same at the spool's own record limit.)
func byteExact(t *testing.T, tg *target, _ Scale) {
	const n, size = 1000, 200
	r := newRig(t, tg, rigOpts{env: tg.limitEnv})
	r.start()
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	large := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(7, 9))
	for i := range large {
		large[i] = byte(rng.Uint32())
	}
	type special struct {
		name    string
		payload []byte
	}
	specials := []special{
		{"every byte value", all}, {"invalid UTF-8", []byte{0xff, 0xfe, 0x00}}, {"empty", []byte{}}, {"NUL", []byte{0}},
		{"multi-line text", []byte("ünïcödé\nline2\r\n\ttab")}, {"JSON", []byte(`{"sensor":"t1","v":21.5}`)},
	}
	if tg.limit == nil || tg.limit(r) > len(large) {
		specials = append(specials, special{"1 MiB random", large})
	}
	var over []byte
	largest := 0
	if tg.limit != nil {
		largest = tg.limit(r)
		specials = append(specials, special{"largest", bytes.Repeat([]byte{'m'}, largest)})
		over = bytes.Repeat([]byte{'o'}, largest+1)
	}
	pub := harness.NewPublisher(t, r.broker, "cloud-input", size)
	pub.Publish(0, n/2, 0)
	for _, s := range specials {
		pub.PublishRaw("cloud-input", s.payload, false)
	}
	if over != nil {
		pub.PublishRaw("cloud-input", over, false)
	}
	if tg.refused != nil {
		pub.PublishRaw("cloud-input", tg.refused, false)
	}
	pub.Publish(n/2, n, 0)

	var got []msg
	err := procs.WaitFor(context.Background(), 2*time.Minute, func() error {
		got = r.be.read(t)
		if len(got) < n+len(specials) {
			time.Sleep(200 * time.Millisecond)
			return fmt.Errorf("%d of %d messages delivered", len(got), n+len(specials))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("not everything delivered: %v", err)
	}
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	got = r.be.read(t)

	tl := count(n, size, numbered(got))
	if tl.Lost > 0 || tl.Copies > 0 || tl.Corrupt > 0 {
		t.Errorf("numbered messages: %s", tl)
	}
	missing := 0
	for _, s := range specials {
		k := 0
		for _, m := range got {
			if bytes.Equal(m.Payload, s.payload) {
				k++
			}
		}
		if k != 1 {
			t.Errorf("%s payload (%d bytes) delivered %d times, want once", s.name, len(s.payload), k)
		}
		if k == 0 {
			missing++
		}
	}
	if len(got) != n+len(specials) {
		t.Errorf("%d messages delivered, want %d", len(got), n+len(specials))
	}

	// Metadata on every message.
	ids := map[string]int{}
	bad := 0
	for _, m := range got {
		ids[m.ID]++
		ok := spoolID.MatchString(m.ID) && m.Topic == "cloud-input" && (!tg.carriesDevice() || m.Device == testDevice)
		if !ok {
			if bad++; bad <= 3 {
				t.Errorf("a %d-byte message arrived with id %q, topic %q, device %q", len(m.Payload), m.ID, m.Topic, m.Device)
			}
		}
	}
	if len(ids) != len(got) {
		t.Errorf("%d messages under %d ids: ids are not unique", len(got), len(ids))
	}

	// What the destination refused: dead-lettered under its spool id, with
	// a reason naming the size (over the limit) or the refusal.
	var wantDead [][]byte
	if over != nil {
		wantDead = append(wantDead, over)
	}
	if tg.refused != nil {
		wantDead = append(wantDead, tg.refused)
	}
	r.waitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == float64(len(wantDead)) })
	dead := r.block.DeadLetters(t)
	if len(dead) != len(wantDead) {
		t.Errorf("dead-letter store %v: want %d entries", dead, len(wantDead))
	}
	for _, d := range dead {
		switch {
		case !spoolID.MatchString(d.ID):
			t.Errorf("dead letter %v: the id is not a spool id", d)
		case over != nil && bytes.Equal(d.Payload, over):
			if !strings.Contains(d.Reason, strconv.Itoa(len(over))) {
				t.Errorf("dead letter %v: the reason does not name the payload's size", d)
			}
		case tg.refused != nil && bytes.Equal(d.Payload, tg.refused):
			if !strings.Contains(d.Reason, "refused") {
				t.Errorf("dead letter %v: the reason does not say it was refused", d)
			}
		default:
			t.Errorf("dead letter %v: not a payload the destination refuses", d)
		}
	}
	note := "no limit of its own (the spool's is in bad-input)"
	if over != nil {
		note = fmt.Sprintf("largest %d B delivered, +1 dead-lettered", largest)
	}
	if tg.refused != nil {
		note += "; a refused payload dead-lettered"
	}
	for _, m := range got {
		if len(m.Payload) > largest && largest > 0 {
			t.Errorf("a %d-byte payload over the destination's limit of %d arrived", len(m.Payload), largest)
		}
	}
	note += fmt.Sprintf("; %d shapes byte-exact; metadata on all %d messages (%d wrong)", len(specials), len(got), bad)
	t.Logf("%s: %s; %s", tg.name, tl, note)
	row := tally{Published: n + len(specials), Distinct: tl.Distinct + len(specials) - missing, Copies: tl.Copies, Lost: tl.Lost + missing}
	r.report("bytes", row, 0, note)
}

// carriesDevice: the destination stores the device id with each message
// (the file destination does not).
func (tg *target) carriesDevice() bool { return tg.name != "file" }
