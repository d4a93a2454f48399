package sqssink

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// decode is the consumer's side of the encoding, as the README shows it.
func decode(body string, attrs map[string]types.MessageAttributeValue) ([]byte, error) {
	enc := attrs[AttrEncoding]
	switch aws.ToString(enc.StringValue) {
	case EncodingBase64:
		return base64.StdEncoding.DecodeString(body)
	case EncodingEmpty:
		return []byte{}, nil
	case "":
		return []byte(body), nil
	}
	return nil, fmt.Errorf("unknown encoding %q", aws.ToString(enc.StringValue))
}

// load runs New over env the way run does, returning the loader's errors.
func load(env map[string]string, device string) (*Sink, error) {
	s, err := sinktest.LoadSink(Service, run.Info{Device: device}, env)
	snk, _ := s.(*Sink)
	return snk, err
}

func mustLoad(t *testing.T, env map[string]string, device string) *Sink {
	t.Helper()
	return sinktest.MustLoadSink(t, Service, run.Info{Device: device}, env).(*Sink)
}

// memMsg is a message the fake stored.
type memMsg struct {
	Body    string
	Attrs   map[string]types.MessageAttributeValue
	Group   string
	DedupID string
}

// memSQS is an in-process fake of the SDK client over one queue. It keeps
// SQS's rules that the sink relies on: 1 to 10 distinct entries, the request
// and message size limits counting attributes, non-empty bodies of allowed
// characters, FIFO group and deduplication ids.
type memSQS struct {
	mu      sync.Mutex
	url     string
	maxSize int
	fifo    bool
	msgs    []memMsg
	dedup   map[string]bool
	calls   int // SendMessageBatch calls
	entries []int

	// Failure switches for unit tests.
	urlErr, attrErr error
	// sendErr, if set, may fail a whole request.
	sendErr func(in *sqs.SendMessageBatchInput) error
	// entryErr, if set, may fail one entry.
	entryErr func(e types.SendMessageBatchRequestEntry) *types.BatchResultErrorEntry
}

func newMem(maxSize int, fifo bool) *memSQS {
	return &memSQS{url: "https://sqs.eu-west-1.amazonaws.com/123456789012/q", maxSize: maxSize, fifo: fifo, dedup: map[string]bool{}}
}

func (m *memSQS) dial(context.Context) (Client, error) { return m, nil }

func (m *memSQS) GetQueueUrl(_ context.Context, in *sqs.GetQueueUrlInput, _ ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error) {
	if m.urlErr != nil {
		return nil, m.urlErr
	}
	return &sqs.GetQueueUrlOutput{QueueUrl: aws.String(m.url)}, nil
}

func (m *memSQS) GetQueueAttributes(_ context.Context, in *sqs.GetQueueAttributesInput, _ ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	if m.attrErr != nil {
		return nil, m.attrErr
	}
	if aws.ToString(in.QueueUrl) != m.url {
		return nil, &types.QueueDoesNotExist{Message: aws.String("no such queue")}
	}
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"MaximumMessageSize": strconv.Itoa(m.maxSize)}}, nil
}

func (m *memSQS) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.entries = append(m.entries, len(in.Entries))
	if aws.ToString(in.QueueUrl) != m.url {
		return nil, &types.QueueDoesNotExist{Message: aws.String("no such queue")}
	}
	if m.sendErr != nil {
		if err := m.sendErr(in); err != nil {
			return nil, err
		}
	}
	if len(in.Entries) == 0 || len(in.Entries) > maxBatchEntries {
		return nil, &types.TooManyEntriesInBatchRequest{Message: aws.String(strconv.Itoa(len(in.Entries)))}
	}
	total := 0
	seen := map[string]bool{}
	for _, e := range in.Entries {
		if seen[aws.ToString(e.Id)] {
			return nil, &types.BatchEntryIdsNotDistinct{}
		}
		seen[aws.ToString(e.Id)] = true
		total += wireSize(e)
	}
	if total > maxRequestBytes {
		return nil, &types.BatchRequestTooLong{Message: aws.String(strconv.Itoa(total))}
	}
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		if f := m.check(e); f != nil {
			out.Failed = append(out.Failed, *f)
			continue
		}
		if m.fifo {
			if m.dedup[*e.MessageDeduplicationId] {
				out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id})
				continue
			}
			m.dedup[*e.MessageDeduplicationId] = true
		}
		m.msgs = append(m.msgs, memMsg{Body: *e.MessageBody, Attrs: e.MessageAttributes, Group: aws.ToString(e.MessageGroupId), DedupID: aws.ToString(e.MessageDeduplicationId)})
		out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id})
	}
	return out, nil
}

func (m *memSQS) check(e types.SendMessageBatchRequestEntry) *types.BatchResultErrorEntry {
	fail := func(code, msg string) *types.BatchResultErrorEntry {
		return &types.BatchResultErrorEntry{Id: e.Id, Code: aws.String(code), Message: aws.String(msg), SenderFault: true}
	}
	if m.entryErr != nil {
		if f := m.entryErr(e); f != nil {
			f.Id = e.Id
			return f
		}
	}
	switch {
	case aws.ToString(e.MessageBody) == "":
		return fail("MissingParameter", "The request must contain the parameter MessageBody.")
	case !sqsText(*e.MessageBody):
		return fail("InvalidMessageContents", "Invalid binary character in the message body")
	case wireSize(e) > m.maxSize:
		return fail("InvalidParameterValue", fmt.Sprintf("Message must be shorter than %d bytes.", m.maxSize))
	case len(e.MessageAttributes) > 10:
		return fail("InvalidParameterValue", "too many message attributes")
	case m.fifo && (!validGroupID(aws.ToString(e.MessageGroupId)) || !validGroupID(aws.ToString(e.MessageDeduplicationId))):
		return fail("InvalidParameterValue", "bad MessageGroupId or MessageDeduplicationId")
	case !m.fifo && (e.MessageGroupId != nil || e.MessageDeduplicationId != nil):
		return fail("InvalidParameterValue", "group or deduplication id on a standard queue")
	}
	for name, v := range e.MessageAttributes {
		if v.DataType == nil || (v.StringValue == nil) == (v.BinaryValue == nil) {
			return fail("InvalidParameterValue", "bad attribute "+name)
		}
		if v.StringValue != nil && (*v.StringValue == "" || !sqsText(*v.StringValue)) {
			return fail("InvalidParameterValue", "bad attribute value "+name)
		}
	}
	return nil
}

// wireSize counts a message as SQS does: body plus every attribute's name,
// type and value.
func wireSize(e types.SendMessageBatchRequestEntry) int {
	n := len(aws.ToString(e.MessageBody))
	for name, v := range e.MessageAttributes {
		n += len(name) + len(aws.ToString(v.DataType)) + len(aws.ToString(v.StringValue)) + len(v.BinaryValue)
	}
	return n
}

// stored returns the decoded payloads by cloudblock.id.
func (m *memSQS) stored(t *testing.T) map[string][]byte {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for _, msg := range m.msgs {
		p, err := decode(msg.Body, msg.Attrs)
		if err != nil {
			t.Fatal(err)
		}
		out[aws.ToString(msg.Attrs[AttrID].StringValue)] = p
	}
	return out
}

func (m *memSQS) all() []memMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]memMsg(nil), m.msgs...)
}

var errRefused = errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
