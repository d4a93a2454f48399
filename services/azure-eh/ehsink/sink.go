// Package ehsink is the Azure Event Hubs destination: every MQTT message
// becomes one event whose body is the payload, unchanged, with the topic,
// receive time, device and stable id as application properties. A batch from
// the pipeline is packed into as few EventDataBatches as the hub's size limit
// allows (one per partition key), sent one after the other.
package ehsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"
	"github.com/Azure/go-amqp"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Application properties set on every event (see the README).
const (
	PropTopic    = "mqtt_topic"
	PropReceived = "received"
	PropDevice   = "device"
	PropID       = "cloudblock_id"
)

const (
	// The size probe assumes properties this large, so any message within
	// MaxMessageBytes fits unless its topic (or id) is longer still.
	topicReserve = 256
	idReserve    = 64
	// maxProbe bounds the size probe (and its buffer) should a hub take more.
	maxProbe = 256 << 20
	// connectTimeout bounds the first connection: Connect gets the pipeline's
	// long-lived context, and a black-holed network must surface as an error.
	connectTimeout = time.Minute
)

// producer is the part of *azeventhubs.ProducerClient the sink uses. The
// batch is an interface because an EventDataBatch can only come from a
// connected client, so a fake producer makes its own.
type producer interface {
	NewEventDataBatch(ctx context.Context, o *azeventhubs.EventDataBatchOptions) (eventBatch, error)
	SendEventDataBatch(ctx context.Context, b eventBatch, o *azeventhubs.SendEventDataBatchOptions) error
	// GetEventHubProperties is for the check only.
	GetEventHubProperties(ctx context.Context, o *azeventhubs.GetEventHubPropertiesOptions) (azeventhubs.EventHubProperties, error)
	Close(ctx context.Context) error
}

// eventBatch is the part of *azeventhubs.EventDataBatch the sink uses.
type eventBatch interface {
	AddEventData(e *azeventhubs.EventData, o *azeventhubs.AddEventDataOptions) error
	NumBytes() uint64
}

type sdkProducer struct{ c *azeventhubs.ProducerClient }

func (p sdkProducer) NewEventDataBatch(ctx context.Context, o *azeventhubs.EventDataBatchOptions) (eventBatch, error) {
	b, err := p.c.NewEventDataBatch(ctx, o)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func (p sdkProducer) SendEventDataBatch(ctx context.Context, b eventBatch, o *azeventhubs.SendEventDataBatchOptions) error {
	return p.c.SendEventDataBatch(ctx, b.(*azeventhubs.EventDataBatch), o)
}

func (p sdkProducer) GetEventHubProperties(ctx context.Context, o *azeventhubs.GetEventHubPropertiesOptions) (azeventhubs.EventHubProperties, error) {
	return p.c.GetEventHubProperties(ctx, o)
}

func (p sdkProducer) Close(ctx context.Context) error { return p.c.Close(ctx) }

// Sink sends to one event hub.
type Sink struct {
	log         *slog.Logger
	device      string
	keyBy       string // keyNone, keyDevice or keyTopic
	partitionID string // fixed partition, or ""
	where       string // namespace/hub, for logs and errors
	secrets     []string
	transport   string   // AZURE_EH_TRANSPORT
	fqdn        string   // the namespace's host (and port, for an emulator)
	ws          wsDialer // opens WebSocket connections
	identity    string   // the service principal, for check ("" otherwise)
	// dial creates the producer, over WebSockets if ws; tests replace it
	// with a fake.
	dial func(ws bool) (producer, error)
	// fallbackAfter bounds auto's AMQP attempt (amqpFallbackAfter; tests
	// shorten it).
	fallbackAfter time.Duration

	mu  sync.Mutex
	p   producer
	lim sink.Limits
	// fellBack: auto found AMQP unreachable and WebSockets working; it keeps
	// to WebSockets until the block restarts.
	fellBack bool
}

// newWS is the SDK's WebSocket option for a producer over WebSockets.
func (s *Sink) newWS(ws bool) func(context.Context, azeventhubs.WebSocketConnParams) (net.Conn, error) {
	if !ws {
		return nil
	}
	return s.ws.dial
}

// Connect creates the producer and learns the hub's size limit, which also
// proves the hub is reachable and the credentials are accepted.
//
// With AZURE_EH_TRANSPORT=auto it uses WebSockets when a proxy applies to
// the namespace (AMQP cannot use one); otherwise it tries AMQP for up to
// amqpFallbackAfter, and WebSockets when that failed for any reason but
// refused credentials (which WebSockets would not change). After a
// fallback it keeps to WebSockets until the block restarts, so an outage
// does not cost the AMQP wait again on every reconnect.
func (s *Sink) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil {
		return nil
	}
	var (
		p         producer
		lim       sink.Limits
		err       error
		transport = s.transport
		amqpErr   error
	)
	if transport == transportAuto {
		switch {
		case s.fellBack:
			transport = transportWS
		case s.fqdn != "" && s.ws.viaProxy(s.fqdn):
			transport = transportWS
		default:
			after := s.fallbackAfter
			if after == 0 {
				after = amqpFallbackAfter
			}
			actx, cancel := context.WithTimeout(ctx, after)
			p, lim, amqpErr = s.open(actx, false)
			cancel()
			transport = transportAMQP
			if amqpErr != nil && !sink.IsAuth(amqpErr) && ctx.Err() == nil {
				transport = transportWS
			} else {
				err = amqpErr
			}
		}
	}
	if p == nil && err == nil {
		p, lim, err = s.open(ctx, transport == transportWS)
		if err != nil && amqpErr != nil {
			err = fmt.Errorf("%w; and AMQP before it: %w", err, amqpErr)
		}
	}
	if err != nil {
		return err
	}
	if amqpErr != nil {
		s.fellBack = true
		s.log.Warn("AMQP (port 5671) could not connect; using AMQP over WebSockets (port 443) until the block restarts",
			"event_hub", s.where, "err", amqpErr)
	}
	s.p, s.lim = p, lim
	s.log.Info("connected to the event hub", "event_hub", s.where, "transport", transport, "max_message_bytes", lim.MaxMessageBytes,
		"message_overhead", lim.MessageOverhead, "partition_key", s.keyBy, "partition_id", s.partitionID)
	return nil
}

// open creates a producer over AMQP or WebSockets and probes the limits
// within connectTimeout: Connect gets the pipeline's long-lived context,
// and a black-holed network must surface as an error.
func (s *Sink) open(ctx context.Context, ws bool) (producer, sink.Limits, error) {
	over := ""
	if ws {
		over = " over WebSockets"
	}
	p, err := s.dial(ws)
	if err != nil {
		return nil, sink.Limits{}, s.failure("creating the producer for "+s.where+over, err, 0)
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	lim, err := s.probe(pctx, p)
	if err != nil {
		_ = p.Close(ctx)
		return nil, sink.Limits{}, s.failure("connecting to "+s.where+over, err, 0)
	}
	return p, lim, nil
}

// probe learns the limits. The link's max-message-size is only visible
// through EventDataBatch's accounting, so it finds the largest payload that
// fits an empty batch beside the largest properties allowed for, and what
// each further event adds.
func (s *Sink) probe(ctx context.Context, p producer) (sink.Limits, error) {
	m := sink.Message{ID: strings.Repeat("i", idReserve), Topic: strings.Repeat("t", topicReserve), Received: time.Now().UTC()}
	opts := s.batchOptions(&m)
	var buf []byte
	fits := func(n int) (bool, error) {
		if len(buf) < n {
			buf = make([]byte, n)
		}
		b, err := p.NewEventDataBatch(ctx, opts)
		if err != nil {
			return false, err
		}
		m.Payload = buf[:n]
		err = b.AddEventData(s.event(&m), nil)
		if errors.Is(err, azeventhubs.ErrEventDataTooLarge) {
			return false, nil
		}
		return err == nil, err
	}
	if ok, err := fits(0); err != nil || !ok {
		if err == nil {
			err = errors.New("the hub's message size limit leaves no room for an event's properties")
		}
		return sink.Limits{}, err
	}
	lo, hi := 0, 64<<10 // fits(lo) and, once the loop ends, !fits(hi)
	for {
		ok, err := fits(hi)
		if err != nil {
			return sink.Limits{}, err
		}
		if !ok {
			break
		}
		lo = hi
		if hi >= maxProbe {
			hi = lo + 1
			break
		}
		hi *= 2
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := fits(mid)
		if err != nil {
			return sink.Limits{}, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	b, err := p.NewEventDataBatch(ctx, opts)
	if err != nil {
		return sink.Limits{}, err
	}
	m.Payload = buf[:min(256, lo)]
	var sizes [2]uint64
	for i := range sizes {
		if err := b.AddEventData(s.event(&m), nil); err != nil {
			return sink.Limits{}, fmt.Errorf("measuring the per-event overhead: %w", err)
		}
		sizes[i] = b.NumBytes()
	}
	overhead := int(sizes[1]-sizes[0]) - len(m.Payload)
	lim := sink.Limits{MaxMessageBytes: lo, MaxBatchBytes: lo + overhead, MessageOverhead: overhead}
	if s.keyBy != keyNone || s.partitionID != "" {
		// Keys and a fixed partition promise order; batches sent side by
		// side, or one retried while the next went through, would break it.
		lim.MaxInFlight = 1
	}
	return lim, nil
}

// Limits are what Connect learned.
func (s *Sink) Limits() sink.Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lim
}

// event maps a message: body = payload bytes as one data section.
func (s *Sink) event(m *sink.Message) *azeventhubs.EventData {
	return &azeventhubs.EventData{
		Body: m.Payload,
		// Set, so the SDK does not draw a random UUID for each event.
		MessageID: &m.ID,
		Properties: map[string]any{
			PropTopic:    m.Topic,
			PropReceived: m.Received,
			PropDevice:   s.device,
			PropID:       m.ID,
		},
	}
}

// batchOptions routes m's EventDataBatch: a fixed partition, a key, or nil
// (Event Hubs chooses).
func (s *Sink) batchOptions(m *sink.Message) *azeventhubs.EventDataBatchOptions {
	switch {
	case s.partitionID != "":
		return &azeventhubs.EventDataBatchOptions{PartitionID: &s.partitionID}
	case s.keyBy == keyDevice:
		return &azeventhubs.EventDataBatchOptions{PartitionKey: &s.device}
	case s.keyBy == keyTopic:
		return &azeventhubs.EventDataBatchOptions{PartitionKey: &m.Topic}
	}
	return nil
}

// groups splits a batch by partition key, each key's messages in order: an
// EventDataBatch carries one key.
func (s *Sink) groups(msgs []sink.Message) [][]int {
	if s.keyBy != keyTopic {
		all := make([]int, len(msgs))
		for i := range all {
			all[i] = i
		}
		return [][]int{all}
	}
	var out [][]int
	at := map[string]int{}
	for i := range msgs {
		g, ok := at[msgs[i].Topic]
		if !ok {
			g = len(out)
			at[msgs[i].Topic] = g
			out = append(out, nil)
		}
		out[g] = append(out[g], i)
	}
	return out
}

// WriteBatch sends msgs in as few EventDataBatches as fit. Each send is
// atomic; when one fails, the messages it held and all not yet sent are
// reported failed (a *sink.BatchError if some were delivered or refused).
func (s *Sink) WriteBatch(ctx context.Context, msgs []sink.Message) error {
	s.mu.Lock()
	p, lim := s.p, s.lim
	s.mu.Unlock()
	if p == nil {
		return errors.New("event hubs: not connected")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("event hubs: %w", err)
	}
	if len(msgs) == 0 {
		return nil
	}
	w := &writer{s: s, p: p, max: lim.MaxMessageBytes, msgs: msgs, done: make([]bool, len(msgs))}
	var err error
	for _, g := range s.groups(msgs) {
		if err = w.send(ctx, g); err != nil {
			break
		}
	}
	return w.result(err)
}

// writer is one WriteBatch in progress.
type writer struct {
	s    *Sink
	p    producer
	max  int
	msgs []sink.Message
	done []bool // delivered or failed for good
	sent int
	be   sink.BatchError
}

func (w *writer) fail(i int, err error) {
	w.be.Fail(i, err)
	w.done[i] = true
}

// send delivers the messages at idx, which share a partition key. It
// returns an error only when sending cannot go on.
func (w *writer) send(ctx context.Context, idx []int) error {
	opts := w.s.batchOptions(&w.msgs[idx[0]])
	var b eventBatch
	var in []int // messages in b
	flush := func() error {
		if len(in) == 0 {
			return nil
		}
		err := w.p.SendEventDataBatch(ctx, b, nil)
		b = nil
		if err != nil {
			ferr := w.s.failure(fmt.Sprintf("sending %d events to %s", len(in), w.s.where), err, len(in))
			if !sink.IsPermanent(ferr) {
				return ferr
			}
			w.fail(in[0], ferr) // only a lone event is refused for good
		} else {
			for _, i := range in {
				w.done[i] = true
			}
			w.sent += len(in)
		}
		in = in[:0]
		return nil
	}
	for _, i := range idx {
		m := &w.msgs[i]
		if w.max > 0 && len(m.Payload) > w.max {
			w.fail(i, sink.Permanent(fmt.Errorf("event hubs: payload of %d bytes is over the hub's limit of %d", len(m.Payload), w.max)))
			continue
		}
		ev := w.s.event(m)
		for {
			if b == nil {
				nb, err := w.p.NewEventDataBatch(ctx, opts)
				if err != nil {
					return w.s.failure("creating a batch for "+w.s.where, err, 0)
				}
				b = nb
			}
			err := b.AddEventData(ev, nil)
			if err == nil {
				in = append(in, i)
				break
			}
			if !errors.Is(err, azeventhubs.ErrEventDataTooLarge) {
				w.fail(i, sink.Permanent(fmt.Errorf("event hubs: encoding the event: %w", err)))
				break
			}
			if len(in) == 0 {
				w.fail(i, sink.Permanent(fmt.Errorf("event hubs: event of %d payload bytes and a %d-byte topic does not fit the hub's message size: %w",
					len(m.Payload), len(m.Topic), err)))
				break
			}
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// result is WriteBatch's error: nil, err alone when nothing got through and
// nothing was refused, else a BatchError naming each message not delivered.
func (w *writer) result(err error) error {
	if err != nil {
		if w.sent == 0 && len(w.be.Failed) == 0 {
			return err
		}
		for i, d := range w.done {
			if !d {
				w.be.Fail(i, err)
			}
		}
	}
	return w.be.Err()
}

// Close closes the producer. Idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	p := s.p
	s.p = nil
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Close(ctx); err != nil {
		return s.failure("closing the producer", err, 0)
	}
	return nil
}

// failure wraps an SDK error for the pipeline, with secrets masked (the
// SDK's messages are not part of its API), and classifies it: refused
// credentials are an AuthError; a lone event the hub refuses as too large
// is permanent. Everything else (connection lost, hub busy or missing,
// partition ownership, cancellation) is retried.
func (s *Sink) failure(what string, err error, events int) error {
	e := fmt.Errorf("event hubs: %s: %w", what, redacted{err, s.secrets})
	var ehErr *azeventhubs.Error
	var amqpErr *amqp.Error
	switch {
	case errors.As(err, &ehErr) && ehErr.Code == azeventhubs.ErrorCodeUnauthorizedAccess,
		errors.As(err, &amqpErr) && amqpErr.Condition == amqp.ErrCondUnauthorizedAccess,
		isCredentialError(err):
		return &sink.AuthError{Err: e}
	case events == 1 && errors.As(err, &amqpErr) && amqpErr.Condition == amqp.ErrCondMessageSizeExceeded:
		return sink.Permanent(e)
	}
	return e
}

// redacted masks secrets in an error's text and keeps it for errors.As.
type redacted struct {
	err     error
	secrets []string
}

func (r redacted) Error() string { return redact(r.err.Error(), r.secrets) }
func (r redacted) Unwrap() error { return r.err }

func redact(s string, secrets []string) string {
	for _, x := range secrets {
		s = strings.ReplaceAll(s, x, "(redacted)")
	}
	return s
}
