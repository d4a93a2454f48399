package ehfake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
)

// Short retries so a test against a stopped fake fails in seconds, not minutes.
var quickRetry = azeventhubs.RetryOptions{MaxRetries: 20, RetryDelay: 100 * time.Millisecond, MaxRetryDelay: 500 * time.Millisecond}

func ptr[T any](v T) *T { return &v }

func newProducer(t *testing.T, s *Server) *azeventhubs.ProducerClient {
	t.Helper()
	p, err := azeventhubs.NewProducerClientFromConnectionString(s.ConnectionString(), "",
		&azeventhubs.ProducerClientOptions{RetryOptions: quickRetry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func newPartitionClient(t *testing.T, s *Server, partition string, pos azeventhubs.StartPosition) *azeventhubs.PartitionClient {
	t.Helper()
	c, err := azeventhubs.NewConsumerClientFromConnectionString(s.ConnectionString(), "", azeventhubs.DefaultConsumerGroup,
		&azeventhubs.ConsumerClientOptions{RetryOptions: quickRetry})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	pc, err := c.NewPartitionClient(partition, &azeventhubs.PartitionClientOptions{StartPosition: pos})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close(context.Background()) })
	return pc
}

var earliest = azeventhubs.StartPosition{Earliest: ptr(true)}

// receive reads exactly n events, failing if fewer arrive in time.
func receive(t *testing.T, pc *azeventhubs.PartitionClient, n int) []*azeventhubs.ReceivedEventData {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got []*azeventhubs.ReceivedEventData
	for len(got) < n {
		evs, err := pc.ReceiveEvents(ctx, n-len(got), nil)
		got = append(got, evs...)
		if err != nil && len(got) < n {
			t.Fatalf("received %d of %d events: %v", len(got), n, err)
		}
	}
	return got
}

// expectNothing checks that no further event arrives for a short while.
func expectNothing(t *testing.T, pc *azeventhubs.PartitionClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if evs, _ := pc.ReceiveEvents(ctx, 1, nil); len(evs) > 0 {
		t.Fatalf("unexpected event seq %d", evs[0].SequenceNumber)
	}
}

func send(t *testing.T, p *azeventhubs.ProducerClient, opts *azeventhubs.EventDataBatchOptions, events ...*azeventhubs.EventData) {
	t.Helper()
	ctx := t.Context()
	b, err := p.NewEventDataBatch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if err := b.AddEventData(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendEventDataBatch(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
}

func numbered(n int) []*azeventhubs.EventData {
	var evs []*azeventhubs.EventData
	for i := range n {
		evs = append(evs, &azeventhubs.EventData{Body: fmt.Appendf(nil, "event %d", i)})
	}
	return evs
}

func TestProperties(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Hub: "telemetry", Partitions: 3})
	p := newProducer(t, s)
	ctx := t.Context()

	hub, err := p.GetEventHubProperties(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hub.Name != "telemetry" || !reflect.DeepEqual(hub.PartitionIDs, []string{"0", "1", "2"}) ||
		hub.CreatedOn.IsZero() || hub.GeoReplicationEnabled {
		t.Fatalf("event hub properties: %+v", hub)
	}

	empty, err := p.GetPartitionProperties(ctx, "2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !empty.IsEmpty || empty.PartitionID != "2" || empty.EventHubName != "telemetry" ||
		empty.LastEnqueuedSequenceNumber != -1 {
		t.Fatalf("empty partition: %+v", empty)
	}

	before := time.Now().Add(-time.Second)
	send(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: ptr("2")}, numbered(3)...)
	got, err := p.GetPartitionProperties(ctx, "2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.IsEmpty || got.BeginningSequenceNumber != 0 || got.LastEnqueuedSequenceNumber != 2 ||
		got.LastEnqueuedOffset == "" || got.LastEnqueuedOn.Before(before) {
		t.Fatalf("partition after 3 events: %+v", got)
	}
	last := receive(t, newPartitionClient(t, s, "2", earliest), 3)[2]
	if last.Offset != got.LastEnqueuedOffset || last.SequenceNumber != got.LastEnqueuedSequenceNumber {
		t.Fatalf("last event offset %s seq %d, properties say %s and %d",
			last.Offset, last.SequenceNumber, got.LastEnqueuedOffset, got.LastEnqueuedSequenceNumber)
	}

	if _, err := p.GetPartitionProperties(ctx, "3", nil); err == nil {
		t.Fatal("no error for a partition that does not exist")
	}
	shortCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := newPartitionClient(t, s, "3", earliest).ReceiveEvents(shortCtx, 1, nil); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reading a partition that does not exist: %v", err)
	}
}

func TestRoundTripExact(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	p := newProducer(t, s)

	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	stamp := time.UnixMilli(1_700_000_000_123).UTC()
	sent := []*azeventhubs.EventData{
		{
			Body:          allBytes,
			MessageID:     ptr("id-1"),
			ContentType:   ptr("application/octet-stream"),
			CorrelationID: "corr-1",
			Properties: map[string]any{
				"topic": "sensors/1/temp", "qos": int64(1), "small": int32(-7), "retain": false,
				"ratio": 0.25, "big": uint64(1 << 40), "at": stamp, "raw": []byte{0, 0xff, 0x10},
			},
		},
		{Body: bytes.Repeat([]byte{0xab}, 70_000)}, // larger than one AMQP frame
		{Body: []byte("{\"a\":1}"), Properties: map[string]any{"topic": "x/y"}},
	}
	send(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: ptr("1")}, sent...)

	got := receive(t, newPartitionClient(t, s, "1", earliest), len(sent))
	for i, want := range sent {
		g := got[i]
		if at, ok := g.Properties["at"].(time.Time); ok {
			g.Properties["at"] = at.UTC() // go-amqp decodes timestamps in time.Local
		}
		if !bytes.Equal(g.Body, want.Body) {
			t.Errorf("event %d: body differs (%d bytes, want %d)", i, len(g.Body), len(want.Body))
		}
		if len(want.Properties) > 0 && !reflect.DeepEqual(g.Properties, want.Properties) {
			t.Errorf("event %d: properties\n got %#v\nwant %#v", i, g.Properties, want.Properties)
		}
		if want.MessageID != nil && *g.MessageID != *want.MessageID {
			t.Errorf("event %d: message id %q", i, *g.MessageID)
		}
		if g.SequenceNumber != int64(i) || g.EnqueuedTime == nil || g.PartitionKey != nil {
			t.Errorf("event %d: seq %d enqueued %v key %v", i, g.SequenceNumber, g.EnqueuedTime, g.PartitionKey)
		}
	}
	if *got[0].ContentType != "application/octet-stream" || got[0].CorrelationID != "corr-1" {
		t.Errorf("properties section: content type %v correlation id %v", got[0].ContentType, got[0].CorrelationID)
	}
}

func TestRawAMQPBodies(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Partitions: 1})
	p := newProducer(t, s)
	ctx := t.Context()

	sent := []*azeventhubs.AMQPAnnotatedMessage{
		{Body: azeventhubs.AMQPAnnotatedMessageBody{Data: [][]byte{{1, 2}, {}, {3}}}},
		{Body: azeventhubs.AMQPAnnotatedMessageBody{Value: int64(42)},
			MessageAnnotations: map[any]any{"x-custom": "kept"}},
		{Body: azeventhubs.AMQPAnnotatedMessageBody{Sequence: [][]any{{"a", int32(1)}}}},
	}
	b, err := p.NewEventDataBatch(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sent {
		if err := b.AddAMQPAnnotatedMessage(m, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SendEventDataBatch(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	got := receive(t, newPartitionClient(t, s, "0", earliest), len(sent))
	for i, want := range sent {
		if !reflect.DeepEqual(got[i].RawAMQPMessage.Body, want.Body) {
			t.Errorf("message %d: body\n got %#v\nwant %#v", i, got[i].RawAMQPMessage.Body, want.Body)
		}
	}
	if v := got[1].RawAMQPMessage.MessageAnnotations["x-custom"]; v != "kept" {
		t.Errorf("producer's annotation: %v", v)
	}
}

func TestPartitionKey(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Partitions: 4})
	p := newProducer(t, s)
	ctx := t.Context()
	key := &azeventhubs.EventDataBatchOptions{PartitionKey: ptr("sensor-7")}

	send(t, p, key, numbered(2)...)
	send(t, p, key, numbered(1)...)

	partition := ""
	for i := range s.Partitions {
		id := fmt.Sprint(i)
		props, err := p.GetPartitionProperties(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if props.IsEmpty {
			continue
		}
		if partition != "" || props.LastEnqueuedSequenceNumber != 2 {
			t.Fatalf("one key spread over partitions: %s and %s (%+v)", partition, id, props)
		}
		partition = id
	}
	if partition == "" {
		t.Fatal("no partition received the events")
	}
	for _, ev := range receive(t, newPartitionClient(t, s, partition, earliest), 3) {
		if ev.PartitionKey == nil || *ev.PartitionKey != "sensor-7" {
			t.Fatalf("event %d: partition key %v", ev.SequenceNumber, ev.PartitionKey)
		}
	}
}

func TestMaxMessageSize(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{MaxMessageSize: 4096, Partitions: 1})
	p := newProducer(t, s)
	ctx := t.Context()

	b, err := p.NewEventDataBatch(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddEventData(&azeventhubs.EventData{Body: make([]byte, 5000)}, nil); !errors.Is(err, azeventhubs.ErrEventDataTooLarge) {
		t.Fatalf("5000-byte event in a 4096-byte batch: %v", err)
	}
	if _, err := p.NewEventDataBatch(ctx, &azeventhubs.EventDataBatchOptions{MaxBytes: 4097}); err == nil {
		t.Fatal("batch larger than the link's max-message-size was allowed")
	}
	// Fill a batch to the brim: the fake must take what the SDK thinks fits.
	n := 0
	for ; b.AddEventData(&azeventhubs.EventData{Body: make([]byte, 100)}, nil) == nil; n++ {
	}
	if b.NumBytes() > 4096 || n < 20 {
		t.Fatalf("full batch: %d events, %d bytes", n, b.NumBytes())
	}
	if err := p.SendEventDataBatch(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	receive(t, newPartitionClient(t, s, "0", earliest), n)
}

func TestStartPositions(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Partitions: 2})
	p := newProducer(t, s)
	send(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: ptr("0")}, numbered(5)...)

	all := receive(t, newPartitionClient(t, s, "0", earliest), 5)

	afterOffset := newPartitionClient(t, s, "0", azeventhubs.StartPosition{Offset: &all[1].Offset})
	got := receive(t, afterOffset, 3)
	if got[0].SequenceNumber != 2 || !bytes.Equal(got[0].Body, all[2].Body) {
		t.Fatalf("after offset %s: first event seq %d", all[1].Offset, got[0].SequenceNumber)
	}
	expectNothing(t, afterOffset)

	fromSeq := newPartitionClient(t, s, "0", azeventhubs.StartPosition{SequenceNumber: ptr(int64(3)), Inclusive: true})
	if got := receive(t, fromSeq, 2); got[0].SequenceNumber != 3 {
		t.Fatalf("from sequence 3 inclusive: first event seq %d", got[0].SequenceNumber)
	}

	// A reader that caught up gets new events as they arrive.
	send(t, p, &azeventhubs.EventDataBatchOptions{PartitionID: ptr("0")}, numbered(1)...)
	if got := receive(t, afterOffset, 1); got[0].SequenceNumber != 5 {
		t.Fatalf("live event: seq %d", got[0].SequenceNumber)
	}
}

func TestRestartKeepsEvents(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Partitions: 1})
	p := newProducer(t, s)
	one := &azeventhubs.EventDataBatchOptions{PartitionID: ptr("0")}
	send(t, p, one, numbered(2)...)

	s.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := p.GetEventHubProperties(ctx, nil); err == nil {
		t.Fatal("fake answered while stopped")
	}
	s.Restart()

	send(t, p, one, numbered(1)...) // the same client reconnects
	got := receive(t, newPartitionClient(t, s, "0", earliest), 3)
	if got[2].SequenceNumber != 2 || string(got[2].Body) != "event 0" {
		t.Fatalf("after restart: seq %d body %q", got[2].SequenceNumber, got[2].Body)
	}
}

func TestMissingNodeModules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := checkNodeDir(dir); err == nil || !strings.Contains(err.Error(), "eventhubs-fake.js") {
		t.Fatalf("dir without the script: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "eventhubs-fake.js"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkNodeDir(dir); err == nil || !strings.Contains(err.Error(), "npm ci --prefix testenv/node") {
		t.Fatalf("dir without node_modules: %v", err)
	}
}
