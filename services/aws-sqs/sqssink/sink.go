// Package sqssink is the Amazon SQS destination: it sends each batch with
// SendMessageBatch, the payload as the body (base64 when SQS would not take
// it as text) and the MQTT topic, receive time, device and stable id as
// message attributes. In FIFO queues the stable id is the deduplication id,
// so a batch sent again after a crash is not stored twice.
package sqssink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/awsiot"
	"github.com/cloud-block/cloud-block/common/sink"
)

// SQS's own limits.
const (
	maxBatchEntries = 10
	// maxRequestBytes bounds the messages of one SendMessageBatch together
	// (1 MiB since 2025; a queue's MaximumMessageSize may be lower).
	maxRequestBytes = 1 << 20
	// assumedMaxSize is used when the key may not read the queue's
	// attributes: the largest any queue allows, so SQS, not the block,
	// refuses what its queue does not take.
	assumedMaxSize = 1 << 20
	// typicalTopic is the topic length assumed when the pipeline sums a
	// batch's size; a request that still comes out too large is split.
	typicalTopic = 48
	// responseTimeout bounds the wait for an answer once a request is sent,
	// so a connection the network silently dropped does not hang a batch.
	responseTimeout = 30 * time.Second
)

// Client is the subset of *sqs.Client the sink uses; unit tests fake it.
type Client interface {
	GetQueueUrl(ctx context.Context, in *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	GetQueueAttributes(ctx context.Context, in *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error)
}

// Sink sends batches to one SQS queue.
type Sink struct {
	st     Config
	device string
	log    *slog.Logger
	// dial creates the client; tests replace it to hand out a fake.
	dial func(ctx context.Context) (Client, error)
	conn atomic.Pointer[conn]
}

// conn is what Connect set up; it does not change once published.
type conn struct {
	client     Client
	url        string
	maxSize    int // the queue's MaximumMessageSize
	maxRequest int
	fifo       bool
	// group is the FIFO MessageGroupId unless groupByTopic.
	group        string
	groupByTopic bool
	device       types.MessageAttributeValue // zero when the device is unknown
	deviceName   string
}

func newSink(st Config, device string, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sink{st: st, device: device, log: log}
	s.dial = s.dialAWS
	return s
}

// dialAWS builds the SDK client: static keys when given, else the default
// credential chain; the region from AWS_SQS_REGION, the queue URL or the SDK.
func (s *Sink) dialAWS(ctx context.Context) (Client, error) {
	// The SDK's buildable client, so AWS_CA_BUNDLE and the like still apply.
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) { tr.ResponseHeaderTimeout = responseTimeout })
	opts := []func(*config.LoadOptions) error{config.WithHTTPClient(hc)}
	region := s.st.region
	if region == "" {
		region = s.st.urlRegion
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	switch {
	case s.st.accessKey != "":
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(s.st.accessKey, s.st.secretKey, s.st.sessionToken)))
	case s.st.iot != nil:
		opts = append(opts, config.WithCredentialsProvider(awsiot.SDKCredentials(s.st.iot)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("sqs: loading the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("sqs: no AWS region: set AWS_SQS_REGION (or AWS_REGION), or give AWS_SQS_QUEUE_NAME as a queue URL")
	}
	// Fetched now so that missing credentials show at start, as an auth problem.
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		if s.st.iot != nil {
			// Names the endpoint; a refusal is an AuthError, an endpoint
			// out of reach is not.
			return nil, fmt.Errorf("sqs: %w", err)
		}
		return nil, &sink.AuthError{Err: fmt.Errorf("sqs: no AWS credentials (set AWS_SQS_ACCESS_KEY and AWS_SQS_SECRET_KEY, or configure the SDK's default chain): %w", err)}
	}
	client := sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		if s.st.endpoint != "" {
			o.BaseEndpoint = aws.String(s.st.endpoint)
		}
	})
	return client, nil
}

// Connect creates the client, resolves the queue URL and reads the queue's
// MaximumMessageSize.
func (s *Sink) Connect(ctx context.Context) error {
	if s.conn.Load() != nil {
		return nil
	}
	client, err := s.dial(ctx)
	if err != nil {
		return err
	}
	c := &conn{client: client, url: s.st.queueURL, maxSize: assumedMaxSize, fifo: s.st.fifo, deviceName: s.device}
	if err := s.resolve(ctx, c); err != nil {
		return err
	}
	c.maxRequest = min(c.maxSize, maxRequestBytes)
	if s.device != "" {
		c.device = textAttr(s.device)
	}
	switch s.st.group {
	case groupTopic:
		c.groupByTopic = true
	case groupDevice:
		c.group = groupID(s.device)
	default:
		c.group = s.st.group
	}
	s.conn.Store(c)
	s.log.Info("connected to SQS", "queue", c.url, "fifo", c.fifo, "max_message_bytes", c.maxSize)
	return nil
}

func (s *Sink) resolve(ctx context.Context, c *conn) error {
	if c.url == "" {
		out, err := c.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(s.st.queueName)})
		if err != nil {
			return classify("GetQueueUrl "+s.st.queueName, err)
		}
		c.url = deref(out.QueueUrl)
	}
	out, err := c.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(c.url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMaximumMessageSize},
	})
	var api smithy.APIError
	switch {
	case err == nil:
		v := out.Attributes[string(types.QueueAttributeNameMaximumMessageSize)]
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1024 {
			return fmt.Errorf("sqs: queue %s reports MaximumMessageSize %q, want a number of bytes", c.url, v)
		}
		c.maxSize = n
	case errors.As(err, &api) && (api.ErrorCode() == "AccessDenied" || api.ErrorCode() == "AccessDeniedException"):
		// A key allowed only sqs:SendMessage works; SQS then refuses what is too long.
		s.log.Warn("cannot read the queue's MaximumMessageSize (allow sqs:GetQueueAttributes); assuming the largest SQS allows",
			"queue", c.url, "max_message_bytes", assumedMaxSize, "err", err)
	default:
		return classify("GetQueueAttributes "+c.url, err)
	}
	return nil
}

// Limits are SQS's: 10 messages and MaximumMessageSize a request, one batch
// at a time for a FIFO queue (order). Payload sizes are counted before
// base64, so WriteBatch still checks each message exactly.
func (s *Sink) Limits() sink.Limits {
	c := s.conn.Load()
	if c == nil {
		return sink.Limits{MaxBatchMessages: maxBatchEntries}
	}
	lim := sink.Limits{
		MaxBatchMessages: maxBatchEntries,
		MaxBatchBytes:    c.maxRequest,
		// No payload larger than this can fit, whatever its topic and id.
		MaxMessageBytes: c.maxSize - c.overhead("", ""),
		MessageOverhead: c.overhead(strings.Repeat("t", typicalTopic), "0123456789ab-000000000001"),
	}
	if c.fifo {
		lim.MaxInFlight = 1
	}
	return lim
}

// overhead is what the attributes of a message with this topic and id add
// to its size.
func (c *conn) overhead(topic, id string) int {
	return c.entry(0, sink.Message{Topic: topic, ID: id, Payload: []byte{'x'}}).size - 1
}

var (
	errNotConnected = errors.New("sqs: not connected")
	errNoResult     = errors.New("sqs: SendMessageBatch reported neither success nor failure for the message")
)

// WriteBatch sends batch in as few SendMessageBatch requests as fit (one,
// unless base64 made it grow). A message too large for the queue fails
// permanently without being sent. When a request fails as a whole, the
// requests after it are not tried: in a FIFO queue a later message must not
// overtake an earlier one.
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := s.conn.Load()
	if c == nil {
		return errNotConnected
	}
	var be sink.BatchError
	todo := make([]entry, 0, len(batch))
	for i, m := range batch {
		e := c.entry(i, m)
		if e.size > c.maxSize {
			how := "as text"
			if e.coded {
				how = "base64-encoded"
			}
			be.Fail(i, sink.Permanent(fmt.Errorf("sqs: message of %d bytes (payload of %d bytes %s, plus attributes) exceeds the queue's MaximumMessageSize of %d bytes",
				e.size, len(m.Payload), how, c.maxSize)))
			continue
		}
		todo = append(todo, e)
	}
	for len(todo) > 0 {
		n, bytes := 0, 0
		for n < len(todo) && n < maxBatchEntries && (n == 0 || bytes+todo[n].size <= c.maxRequest) {
			bytes += todo[n].size
			n++
		}
		done, err := c.send(ctx, todo[:n], &be)
		if err != nil {
			rest := todo[done:]
			if len(rest) == len(batch) {
				return err
			}
			for _, e := range rest {
				be.Fail(e.i, err)
			}
			return &be
		}
		todo = todo[n:]
	}
	return be.Err()
}

// send sends req as one request and records failed entries in be. When the
// request fails as a whole it returns the error and how many entries of req
// were dealt with before (a request refused for a message's content is sent
// again in halves, down to the one message at fault, which fails permanently).
func (c *conn) send(ctx context.Context, req []entry, be *sink.BatchError) (int, error) {
	in := &sqs.SendMessageBatchInput{QueueUrl: aws.String(c.url), Entries: make([]types.SendMessageBatchRequestEntry, len(req))}
	for k := range req {
		in.Entries[k] = req[k].e
	}
	out, err := c.client.SendMessageBatch(ctx, in)
	if err != nil {
		err = classify("SendMessageBatch", err)
		switch {
		case ctx.Err() != nil || !isContent(err):
			return 0, err
		case len(req) == 1:
			be.Fail(req[0].i, sink.Permanent(err))
			return 1, nil
		}
		h := len(req) / 2
		if done, err := c.send(ctx, req[:h], be); err != nil {
			return done, err
		}
		done, err := c.send(ctx, req[h:], be)
		return h + done, err
	}
	pending := make(map[string]int, len(req)) // entry id -> index in the batch
	for _, e := range req {
		pending[*e.e.Id] = e.i
	}
	for _, ok := range out.Successful {
		delete(pending, deref(ok.Id))
	}
	for _, f := range out.Failed {
		if i, ok := pending[deref(f.Id)]; ok {
			be.Fail(i, entryError(f))
			delete(pending, deref(f.Id))
		}
	}
	for _, i := range pending {
		be.Fail(i, errNoResult)
	}
	return len(req), nil
}

// Close drops the client (the SDK's has nothing to close; its idle
// connections time out); idempotent.
func (s *Sink) Close(context.Context) error {
	s.conn.Store(nil)
	return nil
}
