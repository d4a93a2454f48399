package ehsink

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/Azure/go-amqp"
)

// fakeHub is an in-process producer that sizes batches the way the SDK does
// (the first event's properties form the batch envelope; each event adds its
// encoded size plus the binary header) and stores what it is sent.
type fakeHub struct {
	maxBytes uint64

	mu     sync.Mutex
	stored []stored
	sends  int // SendEventDataBatch calls
	closes int
	// sendErr, if set, decides the outcome of send number n (from 1).
	sendErr func(n int, b *fakeBatch) error
	// newErr, if set, fails NewEventDataBatch.
	newErr error
	// propsErr, if set, fails GetEventHubProperties.
	propsErr error
}

type stored struct {
	ev        *azeventhubs.EventData
	key, part string
	send      int
}

type fakeBatch struct {
	opts   azeventhubs.EventDataBatchOptions
	max    uint64
	size   uint64
	events []*azeventhubs.EventData
}

func (h *fakeHub) NewEventDataBatch(ctx context.Context, o *azeventhubs.EventDataBatchOptions) (eventBatch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.newErr != nil {
		return nil, h.newErr
	}
	b := &fakeBatch{max: h.maxBytes}
	if o != nil {
		b.opts = *o
	}
	return b, nil
}

func (b *fakeBatch) amqpMessage(e *azeventhubs.EventData) *amqp.Message {
	m := amqp.NewMessage(e.Body)
	m.Properties = &amqp.MessageProperties{MessageID: *e.MessageID}
	m.ApplicationProperties = e.Properties
	if b.opts.PartitionKey != nil {
		m.Annotations = amqp.Annotations{"x-opt-partition-key": *b.opts.PartitionKey}
	}
	return m
}

func (b *fakeBatch) AddEventData(e *azeventhubs.EventData, _ *azeventhubs.AddEventDataOptions) error {
	m := b.amqpMessage(e)
	bin, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	size := b.size
	if len(b.events) == 0 {
		m.Data = nil
		env, err := m.MarshalBinary()
		if err != nil {
			return err
		}
		size = uint64(len(env))
	}
	if len(bin) < 256 {
		size += uint64(len(bin)) + 5
	} else {
		size += uint64(len(bin)) + 8
	}
	if size > b.max {
		return azeventhubs.ErrEventDataTooLarge
	}
	b.size = size
	b.events = append(b.events, e)
	return nil
}

func (b *fakeBatch) NumBytes() uint64 { return b.size }

func (h *fakeHub) SendEventDataBatch(ctx context.Context, eb eventBatch, _ *azeventhubs.SendEventDataBatchOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := eb.(*fakeBatch)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sends++
	if h.sendErr != nil {
		if err := h.sendErr(h.sends, b); err != nil {
			return err
		}
	}
	for _, e := range b.events {
		c := *e
		c.Body = append([]byte{}, e.Body...)
		st := stored{ev: &c, send: h.sends}
		if b.opts.PartitionKey != nil {
			st.key = *b.opts.PartitionKey
		}
		if b.opts.PartitionID != nil {
			st.part = *b.opts.PartitionID
		}
		h.stored = append(h.stored, st)
	}
	return nil
}

func (h *fakeHub) GetEventHubProperties(ctx context.Context, _ *azeventhubs.GetEventHubPropertiesOptions) (azeventhubs.EventHubProperties, error) {
	if err := ctx.Err(); err != nil {
		return azeventhubs.EventHubProperties{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.propsErr != nil {
		return azeventhubs.EventHubProperties{}, h.propsErr
	}
	return azeventhubs.EventHubProperties{Name: "hub", PartitionIDs: []string{"0", "1", "2", "3"}}, nil
}

func (h *fakeHub) Close(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closes++
	return nil
}

// events returns what was stored, in order.
func (h *fakeHub) events() []stored {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]stored(nil), h.stored...)
}

func (h *fakeHub) byID() map[string][]byte {
	out := map[string][]byte{}
	for _, s := range h.events() {
		out[s.ev.Properties[PropID].(string)] = s.ev.Body
	}
	return out
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// newFakeSink returns a sink over h (keyBy keyNone unless set after).
func newFakeSink(h *fakeHub) *Sink {
	return &Sink{log: discard, device: "dev-1", keyBy: keyNone, where: "fake/hub",
		dial: func(bool) (producer, error) { return h, nil }}
}

var errConnLost = &azeventhubs.Error{Code: azeventhubs.ErrorCodeConnectionLost}

// brokenHub fails like an unreachable hub.
func brokenHub() *fakeHub {
	return &fakeHub{maxBytes: 1 << 20, newErr: errors.Join(errConnLost, io.EOF)}
}
