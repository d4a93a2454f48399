package blocktest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

const (
	// badBudget is BUFFER_MAX_BYTES here: the spool takes records of a
	// quarter of it, the binding limit for every destination at this size.
	badBudget = 2 << 20
	topics    = 10_000
)

// refusedID is the id of a message refused on arrival (too large for the
// spool): the id of the message received before it, and the receive time
// in nanoseconds, so it sorts between its neighbours.
var refusedID = regexp.MustCompile(`^[0-9a-f]{12}-[0-9]{12}-[0-9]{19}$`)

// maxPayload is the largest payload the spool takes on topic: a quarter of
// the budget less the record's 18 bytes of header and the topic.
func maxPayload(topic string) int { return badBudget/4 - 18 - len(topic) }

// mqttRaw publishes one QoS 1 message with the DUP flag set, which no
// client library sends on a first attempt: MQTT 3.1.1 packets by hand.
func mqttRaw(t *testing.T, addr, topic string, payload []byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	str := func(s string) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...) }
	packet := func(header byte, body []byte) []byte {
		out := []byte{header}
		n := len(body)
		for {
			b := byte(n % 128)
			n /= 128
			if n > 0 {
				b |= 0x80
			}
			out = append(out, b)
			if n == 0 {
				break
			}
		}
		return append(out, body...)
	}
	connect := append(str("MQTT"), 4, 0x02, 0, 60) // level 4, clean session, keepalive 60 s
	connect = append(connect, str(fmt.Sprintf("faults-dup-%d", time.Now().UnixNano()))...)
	r := bufio.NewReader(c)
	expect := func(want byte) []byte {
		h, err := r.ReadByte()
		if err != nil || h != want {
			t.Fatalf("MQTT: got packet %#x (%v), want %#x", h, err, want)
		}
		n, _ := r.ReadByte()
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	c.Write(packet(0x10, connect))
	if ack := expect(0x20); ack[1] != 0 {
		t.Fatalf("MQTT CONNACK code %d", ack[1])
	}
	body := append(str(topic), 0x12, 0x34) // packet id
	c.Write(packet(0x30|0x08|0x02, append(body, payload...)))
	if ack := expect(0x40); !bytes.Equal(ack, []byte{0x12, 0x34}) {
		t.Fatalf("MQTT PUBACK for %x", ack)
	}
	c.Write([]byte{0xe0, 0})
}

// Bad input: empty, largest and one-too-large payloads, binary and invalid
// UTF-8, 10,000 distinct topics, retained and duplicate-flagged messages.
// Everything the spool can hold arrives byte for byte on its own topic;
// the one too large is dead-lettered on arrival, counted and kept.
func badInput(t *testing.T, tg *target, sc Scale) {
	r := newRig(t, tg, rigOpts{env: map[string]string{
		"LOCAL_MQTT_INPUT_TOPIC": "cloud-input,cloud-input/#",
		"BUFFER_MAX_BYTES":       strconv.Itoa(badBudget),
	}})
	pub := harness.NewPublisher(t, r.broker, "cloud-input", 0)
	// Retained before the block ever subscribed: the broker hands it
	// over on SUBSCRIBE, with the retain flag.
	pub.PublishRaw("cloud-input/retained", []byte("retained before start"), true)
	r.start()

	rng := rand.New(rand.NewPCG(3, 4))
	largest := make([]byte, maxPayload("cloud-input"))
	for i := range largest {
		largest[i] = byte(rng.Uint32())
	}
	tooLarge := append(bytes.Clone(largest), 0xaa)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	type special struct {
		name, topic string
		payload     []byte
		retained    bool
	}
	specials := []special{
		{"empty", "cloud-input", []byte{}, false},
		{"largest", "cloud-input", largest, false},
		{"every byte value", "cloud-input", all, false},
		{"invalid UTF-8", "cloud-input", []byte{0xff, 0xfe, 0xfd, 'x', 0xc3}, false},
		{"NUL", "cloud-input", []byte{0}, false},
		{"text", "cloud-input", []byte("ünïcödé ✓ \"quoted\"\r\n\ttab"), false},
		{"JSON", "cloud-input", []byte(`{"sensor":"t1","v":21.5,"tags":["a","b"]}`), false},
		{"retained while running", "cloud-input/retained-live", []byte("retained while running"), true},
	}
	for _, s := range specials {
		pub.PublishRaw(s.topic, s.payload, s.retained)
	}
	pub.PublishRaw("cloud-input", tooLarge, false)
	dupFlagged := []byte("duplicate-flagged publish")
	mqttRaw(t, r.broker.Addr(), "cloud-input/dup", dupFlagged)
	specials = append(specials,
		special{"duplicate-flagged", "cloud-input/dup", dupFlagged, false},
		special{"retained before start", "cloud-input/retained", []byte("retained before start"), true})

	// 10,000 distinct topics, message i on its own.
	const size = 20
	began := time.Now()
	for i := range topics {
		pub.PublishRaw(fmt.Sprintf("cloud-input/t/%d", i), harness.Payload(i, size), false)
	}
	published := time.Since(began)
	tl, got := r.waitAll(topics, size, 5*time.Minute, false)
	wrongTopic := 0
	for _, m := range got {
		if i := harness.Index(m.Payload); i >= 0 && m.Topic != fmt.Sprintf("cloud-input/t/%d", i) {
			wrongTopic++
		}
	}
	if wrongTopic > 0 {
		t.Errorf("%d messages arrived with the wrong topic", wrongTopic)
	}
	r.waitMetric("cloudblock_too_large_total", 30*time.Second, func(v float64) bool { return v == 1 })
	dead := r.block.DeadLetters(t)
	if len(dead) != 1 || !bytes.Equal(dead[0].Payload, tooLarge) {
		t.Errorf("dead-letter store: %d entries, want the one too-large payload", len(dead))
	} else if !refusedID.MatchString(dead[0].ID) {
		t.Errorf("the too-large payload was dead-lettered as %q, not under an id of the spool's scheme", dead[0].ID)
	}
	if v := r.metric("cloudblock_dead_lettered_total"); v != 1 {
		t.Errorf("cloudblock_dead_lettered_total = %v, want 1 (the too-large payload)", v)
	}
	// Retained messages come again with every subscription: restart.
	r.block.Stop()
	r.block.Start()
	r.waitMetric("cloudblock_mqtt_connected", time.Minute, func(v float64) bool { return v == 1 })
	r.waitMetric("cloudblock_spool_messages", time.Minute, func(v float64) bool { return v == 0 })
	got = r.be.read(t)

	missing, copies := 0, 0
	var notes []string
	for _, s := range specials {
		n, onTopic := 0, 0
		for _, m := range got {
			if bytes.Equal(m.Payload, s.payload) {
				n++
				if m.Topic == s.topic {
					onTopic++
				}
			}
		}
		switch {
		case n == 0:
			missing++
			t.Errorf("%s payload (%d bytes) never arrived", s.name, len(s.payload))
		case onTopic != n:
			t.Errorf("%s payload arrived with the wrong topic", s.name)
		case n > 1 && !s.retained:
			t.Errorf("%s payload arrived %d times", s.name, n)
		}
		if n > 1 {
			copies += n - 1
			notes = append(notes, fmt.Sprintf("%s x%d", s.name, n))
		}
		if bytes.Equal(s.payload, tooLarge) {
			t.Error("the too-large payload arrived")
		}
	}
	for _, m := range got {
		if len(m.Payload) > len(largest) {
			t.Errorf("a payload of %d bytes arrived, over the spool's limit", len(m.Payload))
		}
	}
	tl2 := countRange(0, topics, size, numbered(got))
	note := fmt.Sprintf("largest %d B arrived, +1 dead-lettered; %d topics (published in %s, %d on a wrong topic); copies after a restart: %v",
		len(largest), topics, published.Round(time.Second), wrongTopic, notes)
	t.Logf("%s: %s; specials missing %d; %s", tg.name, tl, missing, note)
	if !r.block.Running() {
		t.Error("the block is not running")
	}
	row := tally{Published: tl2.Published + len(specials) + 1, Distinct: tl2.Distinct + len(specials) - missing,
		Copies: tl2.Copies + copies, Lost: tl2.Lost + missing + 1}
	r.report("bad-input", row, 1, note)
}
