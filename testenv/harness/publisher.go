package harness

import (
	"bytes"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyingStore hands out a copy of each stored publish. On reconnect paho
// (1.5.1) sets DUP on the stored packet, the very one the new connection's
// writer may still be encoding from before the drop: a data race that -race
// reports in the test process (seen in the block suite's broker restarts
// under load). The copy is made from the fields the writer only reads
// (it writes RemainingLength alone), so making it races with nothing.
type copyingStore struct{ paho.Store }

func (s *copyingStore) Get(key string) packets.ControlPacket {
	pkt := s.Store.Get(key)
	p, ok := pkt.(*packets.PublishPacket)
	if !ok {
		return pkt
	}
	c := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	c.Dup, c.Qos, c.Retain = p.Dup, p.Qos, p.Retain
	c.TopicName, c.MessageID, c.Payload = p.TopicName, p.MessageID, p.Payload
	return c
}

// Publisher publishes numbered QoS 1 messages and counts the broker's acks.
// A message whose PUBACK does not arrive (broker restarting) is published
// again: at-least-once from the publisher too, so its duplicates are counted
// separately from the block's.
type Publisher struct {
	t      testing.TB
	client paho.Client
	Topic  string
	Size   int // payload size (at least the 13-byte header)
	Window int // publishes in flight

	Acked     atomic.Int64 // distinct messages the broker acknowledged
	Republish atomic.Int64 // publishes repeated after an error
}

// NewPublisher connects a publisher with a persistent session.
func NewPublisher(t testing.TB, broker *Mosquitto, topic string, size int) *Publisher {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + broker.Addr()).
		SetClientID(fmt.Sprintf("test-publisher-%d", time.Now().UnixNano())).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetWriteTimeout(5 * time.Second).SetOrderMatters(false).
		SetStore(&copyingStore{paho.NewMemoryStore()})
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	p := &Publisher{t: t, client: c, Topic: topic, Size: max(size, 13), Window: 200}
	t.Cleanup(func() { c.Disconnect(100) })
	return p
}

// Payload is message i's payload: "msg-%08d|" then filler up to size.
func Payload(i, size int) []byte {
	b := make([]byte, max(size, 13))
	copy(b, fmt.Sprintf("msg-%08d|", i))
	for j := 13; j < len(b); j++ {
		b[j] = byte('a' + (i+j)%26)
	}
	return b
}

// Index parses a payload made by Payload (-1 if it is not one).
func Index(p []byte) int {
	if len(p) < 13 || !bytes.HasPrefix(p, []byte("msg-")) || p[12] != '|' {
		return -1
	}
	n, err := strconv.Atoi(string(p[4:12]))
	if err != nil {
		return -1
	}
	return n
}

// Publish sends messages from..to-1, each acknowledged by the broker before
// it returns; rate > 0 limits messages per second. Up to Window publishes
// are in flight, tracked in order without a goroutine each, so the
// publisher itself is not what limits a benchmark.
func (p *Publisher) Publish(from, to int, rate float64) {
	p.t.Helper()
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	type pending struct {
		i   int
		tok paho.Token
	}
	queue := make([]pending, 0, p.Window)
	settle := func(q pending) {
		if q.tok.WaitTimeout(10*time.Second) && q.tok.Error() == nil {
			p.Acked.Add(1)
			return
		}
		p.Republish.Add(1)
		p.publishOne(q.i) // retried one at a time until the broker takes it
	}
	start := time.Now()
	for i := from; i < to; i++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(i-from) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		if len(queue) == p.Window {
			settle(queue[0])
			queue = queue[1:]
		}
		queue = append(queue, pending{i, p.client.Publish(p.Topic, 1, false, Payload(i, p.Size))})
	}
	for _, q := range queue {
		settle(q)
	}
}

func (p *Publisher) publishOne(i int) {
	payload := Payload(i, p.Size)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		tok := p.client.Publish(p.Topic, 1, false, payload)
		if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
			p.Acked.Add(1)
			return
		}
		if attempt > 600 {
			p.t.Errorf("publisher gave up on message %d: %v", i, tok.Error())
			return
		}
	}
}

// PublishRaw sends one payload on topic at QoS 1 and waits for the ack.
func (p *Publisher) PublishRaw(topic string, payload []byte, retained bool) {
	p.t.Helper()
	tok := p.client.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		p.t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

// Tally compares what was delivered with what was published.
type Tally struct {
	Published, Distinct, Duplicates, Lost, Corrupt int
	Missing                                        []int
}

func (t Tally) String() string {
	return fmt.Sprintf("published %d, delivered %d distinct, %d duplicates, %d lost, %d corrupt",
		t.Published, t.Distinct, t.Duplicates, t.Lost, t.Corrupt)
}

// Count tallies delivered payloads against messages 0..n-1 of size size.
func Count(n, size int, delivered [][]byte) Tally {
	seen := make([]int, n)
	t := Tally{Published: n}
	for _, d := range delivered {
		i := Index(d)
		if i < 0 || i >= n {
			t.Corrupt++
			continue
		}
		if !bytes.Equal(d, Payload(i, size)) {
			t.Corrupt++
			continue
		}
		seen[i]++
	}
	for i, c := range seen {
		switch {
		case c == 0:
			t.Lost++
			if len(t.Missing) < 20 {
				t.Missing = append(t.Missing, i)
			}
		default:
			t.Distinct++
			t.Duplicates += c - 1
		}
	}
	return t
}
