package ehsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/Azure/go-amqp"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func TestConformanceFake(t *testing.T) {
	t.Parallel()
	h := &fakeHub{maxBytes: 1 << 20}
	sinktest.Run(t, sinktest.Harness{
		New:       func(*testing.T) sink.Sink { return newFakeSink(h) },
		NewBroken: func(*testing.T) sink.Sink { return newFakeSink(brokenHub()) },
		ReadBack: func(_ *testing.T, ids []string) map[string][]byte {
			all := h.byID()
			out := map[string][]byte{}
			for _, id := range ids {
				if b, ok := all[id]; ok {
					out[id] = b
				}
			}
			return out
		},
	})
}

// connected connects s and returns its limits.
func connected(t *testing.T, s *Sink) sink.Limits {
	t.Helper()
	return sinktest.Connected(t, s).Limits()
}

func msgs(n, size int) []sink.Message {
	return sinktest.Messages(n, func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, size) })
}

func withTopics(ms []sink.Message, topic func(i int) string) []sink.Message {
	for i := range ms {
		ms[i].Topic = topic(i)
	}
	return ms
}

func TestProbeFindsTheExactLimit(t *testing.T) {
	for _, max := range []uint64{4096, 64 << 10, 1 << 20} {
		h := &fakeHub{maxBytes: max}
		s := newFakeSink(h)
		lim := connected(t, s)
		// The largest payload fits an empty batch beside the largest
		// properties allowed for; one byte more does not.
		m := sink.Message{ID: strings.Repeat("i", idReserve), Topic: strings.Repeat("t", topicReserve), Received: time.Now()}
		for _, tc := range []struct {
			n    int
			fits bool
		}{{lim.MaxMessageBytes, true}, {lim.MaxMessageBytes + 1, false}} {
			b, _ := h.NewEventDataBatch(t.Context(), nil)
			m.Payload = make([]byte, tc.n)
			if err := b.AddEventData(s.event(&m), nil); (err == nil) != tc.fits {
				t.Errorf("hub of %d bytes: payload of %d: %v", max, tc.n, err)
			}
		}
		if lim.MessageOverhead < 100 || lim.MessageOverhead > 600 || lim.MaxBatchBytes != lim.MaxMessageBytes+lim.MessageOverhead || lim.MaxInFlight != 0 {
			t.Errorf("hub of %d bytes: limits %+v", max, lim)
		}
		t.Logf("hub of %d bytes: %+v", max, lim)
	}
}

func TestOrderedModesSendOneBatchAtATime(t *testing.T) {
	for _, mode := range []func(*Sink){
		func(s *Sink) { s.keyBy = keyDevice },
		func(s *Sink) { s.keyBy = keyTopic },
		func(s *Sink) { s.partitionID = "1" },
	} {
		s := newFakeSink(&fakeHub{maxBytes: 1 << 20})
		mode(s)
		if lim := connected(t, s); lim.MaxInFlight != 1 {
			t.Errorf("keyBy %q partition %q: MaxInFlight %d", s.keyBy, s.partitionID, lim.MaxInFlight)
		}
	}
}

func TestSplitsIntoSeveralSends(t *testing.T) {
	h := &fakeHub{maxBytes: 4096}
	s := newFakeSink(h)
	connected(t, s)
	ms := msgs(40, 300)
	if err := s.WriteBatch(t.Context(), ms); err != nil {
		t.Fatal(err)
	}
	got := h.events()
	if len(got) != len(ms) || h.sends < 4 {
		t.Fatalf("%d events in %d sends", len(got), h.sends)
	}
	for i, st := range got {
		if !bytes.Equal(st.ev.Body, ms[i].Payload) || *st.ev.MessageID != ms[i].ID {
			t.Fatalf("event %d out of order or changed", i)
		}
	}
}

func TestLaterSendFailsOnlyUnsentRetried(t *testing.T) {
	h := &fakeHub{maxBytes: 4096}
	h.sendErr = func(n int, _ *fakeBatch) error {
		if n == 3 {
			return errConnLost
		}
		return nil
	}
	s := newFakeSink(h)
	connected(t, s)
	ms := msgs(40, 300)
	err := s.WriteBatch(t.Context(), ms)
	var be *sink.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	delivered := len(h.events())
	if delivered == 0 || delivered >= len(ms) {
		t.Fatalf("%d delivered before the failing send", delivered)
	}
	for i := range ms {
		ferr, failed := be.Failed[i]
		if failed != (i >= delivered) {
			t.Fatalf("message %d: failed %v with %d delivered", i, failed, delivered)
		}
		if failed && (sink.IsPermanent(ferr) || !errors.Is(ferr, errConnLost)) {
			t.Fatalf("message %d: %v", i, ferr)
		}
	}
	// The pipeline resends the failed ones: each message arrives once.
	var retry []sink.Message
	for i := range ms {
		if _, ok := be.Failed[i]; ok {
			retry = append(retry, ms[i])
		}
	}
	if err := s.WriteBatch(t.Context(), retry); err != nil {
		t.Fatal(err)
	}
	got := h.events()
	if len(got) != len(ms) {
		t.Fatalf("%d events stored for %d messages", len(got), len(ms))
	}
	for i, st := range got {
		if *st.ev.MessageID != ms[i].ID {
			t.Fatalf("event %d is %s, want %s", i, *st.ev.MessageID, ms[i].ID)
		}
	}
}

func TestFirstSendFailsWholeBatch(t *testing.T) {
	h := &fakeHub{maxBytes: 1 << 20, sendErr: func(int, *fakeBatch) error { return errConnLost }}
	s := newFakeSink(h)
	connected(t, s)
	err := s.WriteBatch(t.Context(), msgs(5, 10))
	var be *sink.BatchError
	if err == nil || errors.As(err, &be) || sink.IsPermanent(err) || sink.IsAuth(err) {
		t.Fatalf("want a plain retryable error, got %T %v", err, err)
	}
	if !strings.HasPrefix(err.Error(), "event hubs: sending 5 events to fake/hub: ") {
		t.Errorf("error text: %v", err)
	}
}

func TestOversizedAmongOthersDeadLettered(t *testing.T) {
	h := &fakeHub{maxBytes: 64 << 10}
	s := newFakeSink(h)
	lim := connected(t, s)
	ms := msgs(5, 100)
	ms[2].Payload = make([]byte, lim.MaxMessageBytes+1)
	// Within the limit, but its topic is far past what the limit allows for.
	ms[3].Topic = strings.Repeat("x", 2000)
	ms[3].Payload = make([]byte, lim.MaxMessageBytes)
	err := s.WriteBatch(t.Context(), ms)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 2 {
		t.Fatalf("want 2 failed, got %v", err)
	}
	for _, i := range []int{2, 3} {
		if !sink.IsPermanent(be.Failed[i]) {
			t.Errorf("message %d: not permanent: %v", i, be.Failed[i])
		}
	}
	if !errors.Is(be.Failed[3], azeventhubs.ErrEventDataTooLarge) {
		t.Errorf("message 3: %v", be.Failed[3])
	}
	if n := len(h.events()); n != 3 {
		t.Errorf("%d delivered, want 3", n)
	}
}

func TestPartitionKeyByTopic(t *testing.T) {
	h := &fakeHub{maxBytes: 4096}
	s := newFakeSink(h)
	s.keyBy = keyTopic
	connected(t, s)
	topics := []string{"a/1", "b/2", "c/3"}
	ms := withTopics(msgs(30, 200), func(i int) string { return topics[i%3] })
	if err := s.WriteBatch(t.Context(), ms); err != nil {
		t.Fatal(err)
	}
	last := map[string]string{}
	sendKey := map[int]string{}
	got := h.events()
	if len(got) != len(ms) {
		t.Fatalf("%d events", len(got))
	}
	for _, st := range got {
		topic := st.ev.Properties[PropTopic].(string)
		if st.key != topic {
			t.Fatalf("event of topic %s sent with key %q", topic, st.key)
		}
		if k, ok := sendKey[st.send]; ok && k != st.key {
			t.Fatalf("send %d mixes keys %s and %s", st.send, k, st.key)
		}
		sendKey[st.send] = st.key
		if id := *st.ev.MessageID; id <= last[topic] {
			t.Fatalf("topic %s out of order: %s after %s", topic, id, last[topic])
		}
		last[topic] = *st.ev.MessageID
	}
}

func TestPartitionKeyDeviceAndPartitionID(t *testing.T) {
	h := &fakeHub{maxBytes: 1 << 20}
	s := newFakeSink(h)
	s.keyBy = keyDevice
	connected(t, s)
	if err := s.WriteBatch(t.Context(), msgs(3, 10)); err != nil {
		t.Fatal(err)
	}
	h2 := &fakeHub{maxBytes: 1 << 20}
	s2 := newFakeSink(h2)
	s2.partitionID = "2"
	connected(t, s2)
	if err := s2.WriteBatch(t.Context(), msgs(3, 10)); err != nil {
		t.Fatal(err)
	}
	for _, st := range h.events() {
		if st.key != "dev-1" || st.part != "" {
			t.Fatalf("device key: %+v", st)
		}
	}
	for _, st := range h2.events() {
		if st.key != "" || st.part != "2" {
			t.Fatalf("partition id: %+v", st)
		}
	}
}

func TestEventMapping(t *testing.T) {
	h := &fakeHub{maxBytes: 1 << 20}
	s := newFakeSink(h)
	connected(t, s)
	at := time.Date(2025, 3, 4, 5, 6, 7, 8e6, time.UTC)
	m := sink.Message{ID: "0123abcd4567-000000000042", Topic: "cloud-input/x", Received: at, Payload: []byte{0, 1, 0xff}}
	if err := s.WriteBatch(t.Context(), []sink.Message{m}); err != nil {
		t.Fatal(err)
	}
	ev := h.events()[0].ev
	want := map[string]any{PropTopic: m.Topic, PropReceived: at, PropDevice: "dev-1", PropID: m.ID}
	if fmt.Sprint(ev.Properties) != fmt.Sprint(want) || *ev.MessageID != m.ID || !bytes.Equal(ev.Body, m.Payload) {
		t.Fatalf("event %+v", ev)
	}
}

func TestClassification(t *testing.T) {
	s := &Sink{secrets: []string{"k3y"}}
	for _, tc := range []struct {
		name            string
		err             error
		events          int
		auth, permanent bool
	}{
		{"unauthorized", &azeventhubs.Error{Code: azeventhubs.ErrorCodeUnauthorizedAccess}, 3, true, false},
		{"amqp unauthorized", &amqp.Error{Condition: amqp.ErrCondUnauthorizedAccess}, 0, true, false},
		{"entra refused", &azidentity.AuthenticationFailedError{}, 0, true, false},
		{"connection lost", errConnLost, 3, false, false},
		{"ownership lost", &azeventhubs.Error{Code: azeventhubs.ErrorCodeOwnershipLost}, 3, false, false},
		{"lone event too large", &amqp.Error{Condition: amqp.ErrCondMessageSizeExceeded}, 1, false, true},
		{"batch too large", &amqp.Error{Condition: amqp.ErrCondMessageSizeExceeded}, 2, false, false},
		{"hub missing", &amqp.Error{Condition: amqp.ErrCondNotFound}, 1, false, false},
		{"cancelled", context.Canceled, 1, false, false},
	} {
		got := s.failure("doing", tc.err, tc.events)
		if sink.IsAuth(got) != tc.auth || sink.IsPermanent(got) != tc.permanent {
			t.Errorf("%s: auth %v permanent %v: %v", tc.name, sink.IsAuth(got), sink.IsPermanent(got), got)
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("%s: does not wrap the SDK error", tc.name)
		}
	}
	leak := &amqp.Error{Condition: amqp.ErrCondNotAllowed, Description: "sig k3y rejected"}
	if got := s.failure("doing", leak, 0).Error(); strings.Contains(got, "k3y") || !strings.Contains(got, "(redacted)") {
		t.Errorf("secret not masked: %s", got)
	}
}

func TestNotConnected(t *testing.T) {
	s := newFakeSink(brokenHub())
	err := s.Connect(t.Context())
	if err == nil || sink.IsPermanent(err) || !strings.HasPrefix(err.Error(), "event hubs: connecting to fake/hub: ") {
		t.Fatalf("Connect: %v", err)
	}
	if err := s.WriteBatch(t.Context(), msgs(1, 1)); err == nil || sink.IsPermanent(err) {
		t.Fatalf("WriteBatch before a connect: %v", err)
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestCloseClosesOnce(t *testing.T) {
	h := &fakeHub{maxBytes: 1 << 20}
	s := newFakeSink(h)
	if err := s.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if h.closes != 1 {
		t.Fatalf("%d closes", h.closes)
	}
}
