package pubsubsink

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Attribute names. A consumer finds the payload unchanged in the message
// data and these beside it.
const (
	attrID          = "id"           // the block's stable message id (deduplicate on it)
	attrTopic       = "topic"        // the MQTT topic
	attrTopicBase64 = "topic_base64" // instead of topic, when the MQTT topic is not valid UTF-8
	attrReceived    = "received"     // RFC 3339 UTC time the block received the message
	attrDevice      = "device"       // the device id
)

// maxAttrValue is Pub/Sub's limit on an attribute value and an ordering key.
const maxAttrValue = 1024

// messageOverhead estimates what a message adds to a request besides its
// payload: the attributes with an MQTT topic of typical length, and framing.
// The client splits a request that would still exceed the limit.
const messageOverhead = 160

// maxBatchBytes is the payload budget of one publish request to topic.
func maxBatchBytes(topic string) int {
	return pubsub.MaxPublishRequestBytes - len(topic) - 16
}

// Sink publishes batches to one topic.
type Sink struct {
	cfg  Config
	dial dialer

	mu  sync.Mutex
	pub publisher
}

func newSink(cfg Config, dial dialer) *Sink { return &Sink{cfg: cfg, dial: dial} }

// Connect creates the client once.
func (s *Sink) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub != nil {
		return nil
	}
	p, err := s.dial(ctx, s.cfg)
	if err != nil {
		return err
	}
	s.pub = p
	return nil
}

// Limits are Pub/Sub's: 1,000 messages and 10 MB a publish request.
func (s *Sink) Limits() sink.Limits {
	l := sink.Limits{
		MaxBatchMessages: pubsub.MaxPublishRequestCount,
		MaxBatchBytes:    maxBatchBytes(s.cfg.topic),
		MaxMessageBytes:  s.cfg.maxMessage,
		MessageOverhead:  messageOverhead + len(s.cfg.device),
	}
	if s.cfg.ordering != orderNone {
		// After a failure the client pauses the key, and messages of a later
		// batch must not overtake the retried ones.
		l.MaxInFlight = 1
	}
	return l
}

// WriteBatch publishes every message and waits for every result. Messages
// that failed are named in a *sink.BatchError; a batch that failed whole
// returns the error itself, so the pipeline sees an AuthError as one.
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	pub := s.pub
	s.mu.Unlock()
	if pub == nil {
		return errors.New("pubsub: not connected")
	}

	var be sink.BatchError
	msgs := make([]*pubsub.Message, len(batch))
	results := make([]result, len(batch))
	for i := range batch {
		m, err := s.message(&batch[i])
		if err != nil {
			be.Fail(i, sink.Permanent(err))
			continue
		}
		msgs[i] = m
		results[i] = pub.Publish(ctx, m)
	}
	// Send now; the results say when it is done.
	go pub.Flush()
	failed, err := s.wait(ctx, pub, msgs, results, &be)
	if err != nil {
		return err
	}
	if len(failed[codes.InvalidArgument]) > 1 {
		// A refused request fails every message in it: publish those again
		// one at a time to find which one Pub/Sub refuses.
		for _, i := range failed[codes.InvalidArgument] {
			delete(be.Failed, i)
			results[i] = nil
		}
		for _, i := range failed[codes.InvalidArgument] {
			results[i] = pub.Publish(ctx, msgs[i])
			go pub.Flush()
			if _, err := s.wait(ctx, pub, msgs, results, &be); err != nil {
				return err
			}
			results[i] = nil
		}
	}
	if len(be.Failed) == len(batch) {
		// Nothing went through: an outage, a refusal or a missing topic is
		// one error for the whole batch, unless some messages were refused
		// for themselves.
		var first error
		for _, e := range be.Failed {
			if sink.IsPermanent(e) {
				return &be
			}
			first = e
		}
		if len(batch) == 1 {
			return first
		}
		return fmt.Errorf("all %d messages failed: %w", len(batch), first)
	}
	return be.Err()
}

// wait collects the results still pending, records failures in be (a
// message refused alone with InvalidArgument fails permanently), resumes the
// ordering keys the client paused on a failure, and returns the indexes that
// failed by gRPC code. A context that ends first is returned as the error.
func (s *Sink) wait(ctx context.Context, pub publisher, msgs []*pubsub.Message, results []result, be *sink.BatchError) (map[codes.Code][]int, error) {
	failed := map[codes.Code][]int{}
	paused := map[string]bool{}
	for i, r := range results {
		if r == nil {
			continue
		}
		_, err := r.Get(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			// Publishing goes on in the background; a key it pauses is
			// resumed by the next batch that meets it.
			return nil, fmt.Errorf("pubsub: waiting for publish results: %w", ctx.Err())
		}
		code := status.Code(err)
		failed[code] = append(failed[code], i)
		be.Fail(i, s.classify(err))
		if k := msgs[i].OrderingKey; k != "" {
			paused[k] = true
		}
	}
	if ia := failed[codes.InvalidArgument]; len(ia) == 1 {
		be.Fail(ia[0], sink.Permanent(be.Failed[ia[0]]))
	}
	for k := range paused {
		pub.ResumePublish(k)
	}
	return failed, nil
}

// classify wraps a publish error so the pipeline acts on it: refusals are
// AuthErrors, a message too large for any request is permanent, anything
// else (outages, a missing topic, quota) is retried.
func (s *Sink) classify(err error) error {
	if errors.Is(err, pubsub.ErrOversizedMessage) {
		return sink.Permanent(fmt.Errorf("pubsub: message with its attributes is larger than a publish request may be: %w", err))
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.Internal:
		// The client could not get an access token: the token endpoint is
		// down or refuses the device. Retried; the error names the endpoint.
		if terr := s.cfg.tokens.failure(); terr != nil {
			return fmt.Errorf("pubsub: publishing to %s: %w", s.cfg.topic, terr)
		}
		if status.Code(err) == codes.Internal {
			break
		}
		fallthrough
	case codes.PermissionDenied:
		return &sink.AuthError{Err: fmt.Errorf("pubsub: publishing to %s was refused (the service account needs the Pub/Sub Publisher role on the topic): %w", s.cfg.topic, err)}
	case codes.NotFound:
		return fmt.Errorf("pubsub: topic %s not found (create it, or check %s_TOPIC and %s_PROJECT_ID): %w", s.cfg.topic, prefix, prefix, err)
	}
	return fmt.Errorf("pubsub: publishing to %s: %w", s.cfg.topic, err)
}

// message maps m to a Pub/Sub message, or says why Pub/Sub would refuse it.
func (s *Sink) message(m *sink.Message) (*pubsub.Message, error) {
	if len(m.Payload) > s.cfg.maxMessage {
		return nil, fmt.Errorf("pubsub: payload of %d bytes exceeds %s_MAX_MESSAGE_BYTES (%d)", len(m.Payload), prefix, s.cfg.maxMessage)
	}
	attrs := map[string]string{
		attrID:       m.ID,
		attrReceived: m.Received.UTC().Format(time.RFC3339Nano),
		attrDevice:   s.cfg.device,
	}
	// Attribute values are protobuf strings, which must be UTF-8; MQTT
	// topics are, unless a lax broker let one through.
	topicAttr, topic := attrTopic, m.Topic
	if !utf8.ValidString(topic) {
		topicAttr, topic = attrTopicBase64, base64.StdEncoding.EncodeToString([]byte(topic))
	}
	attrs[topicAttr] = topic
	for k, v := range attrs {
		if len(v) > maxAttrValue {
			return nil, fmt.Errorf("pubsub: attribute %q of %d bytes exceeds Pub/Sub's limit of %d", k, len(v), maxAttrValue)
		}
	}
	msg := &pubsub.Message{Data: m.Payload, Attributes: attrs}
	switch s.cfg.ordering {
	case orderDevice:
		msg.OrderingKey = s.cfg.device
	case orderTopic:
		msg.OrderingKey = topic
	}
	return msg, nil
}

// Close flushes and closes the client; idempotent.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	pub := s.pub
	s.pub = nil
	s.mu.Unlock()
	if pub == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- pub.Stop() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("pubsub: closing the client: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("pubsub: closing the client: %w", ctx.Err())
	}
}
