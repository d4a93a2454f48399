package blocktest

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// The consumer's side of aws-sqs's mapping (its README: "How messages map").
const (
	sqsAttrTopic    = "mqtt.topic"
	sqsAttrReceived = "cloudblock.received"
	sqsAttrDevice   = "cloudblock.device"
	sqsAttrID       = "cloudblock.id"
	sqsAttrEncoding = "cloudblock.encoding"
)

// sqsBackend is the project's SQS fake, in this process.
type sqsBackend struct {
	ep     *sqsfake.Endpoint
	addr   string // ep's host:port
	queue  string
	url    string
	secret string
	client *sqs.Client

	mu   sync.Mutex
	got  []msg
	seen map[string]bool // SQS message ids read: a message received twice counts once
}

func openSQS(fifo bool) func(t *testing.T) backend {
	return func(t *testing.T) backend {
		b := &sqsBackend{ep: sqsfake.New().Listen(t), secret: "sqsSecret-" + randHex(10), seen: map[string]bool{}}
		b.addr = strings.TrimPrefix(b.ep.URL, "http://")
		b.client = sqsfake.Client(b.ep.URL, func(o *sqs.Options) {
			o.HTTPClient = &http.Client{Transport: bufferedBodies{http.DefaultTransport}}
		})
		name := "faults"
		if fifo {
			name += ".fifo"
		}
		b.queue, b.url = sqsfake.CreateQueue(t, b.client, name, nil)
		return b
	}
}

func (b *sqsBackend) env(addr string) map[string]string {
	return map[string]string{
		"AWS_SQS_QUEUE_NAME": b.queue, "AWS_SQS_REGION": "us-east-1", "AWS_SQS_ENDPOINT": "http://" + addr,
		"AWS_SQS_ACCESS_KEY": "faults-access", "AWS_SQS_SECRET_KEY": b.secret,
		// Never let the SDK's default chain probe the EC2 metadata address.
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

func (b *sqsBackend) upstream() string  { return b.addr }
func (b *sqsBackend) secrets() []string { return []string{b.secret} }

// read receives, decodes and deletes everything the queue holds now.
func (b *sqsBackend) read(t testing.TB) []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for round := 0; round < 4; round++ {
		failed := false
		for {
			n, err := b.receive(ctx)
			if err != nil {
				t.Logf("reading the queue (will retry): %v", err)
				failed = true
				break
			}
			if n == 0 {
				break
			}
		}
		if !failed {
			break
		}
		// What a failed receive took comes back after its visibility
		// timeout: wait for it, so this read misses nothing.
		time.Sleep(sqsVisibility + time.Second)
	}
	return append([]msg(nil), b.got...)
}

// sqsVisibility is the reader's visibility timeout.
const sqsVisibility = 5 * time.Second

// bufferedBodies hands the transport a request body of its own. With the
// SDK's body, a response that arrived before the transport had finished
// with the body sometimes lost its connection mid-read ("use of closed
// network connection", about once in a few thousand receives here).
type bufferedBodies struct{ rt http.RoundTripper }

func (b bufferedBodies) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody {
		data, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(data))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
		r.ContentLength = int64(len(data))
	}
	return b.rt.RoundTrip(r)
}

func (b *sqsBackend) receive(ctx context.Context) (int, error) {
	out, err := b.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(b.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: int32(sqsVisibility / time.Second),
		MessageAttributeNames: []string{"All"},
	})
	if err != nil || len(out.Messages) == 0 {
		return 0, err
	}
	var del []types.DeleteMessageBatchRequestEntry
	for i, m := range out.Messages {
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
		if b.seen[aws.ToString(m.MessageId)] {
			continue // its deletion failed earlier
		}
		b.seen[aws.ToString(m.MessageId)] = true
		p, err := sqsPayload(m)
		if err != nil {
			return 0, err
		}
		str := func(name string) string {
			v := m.MessageAttributes[name]
			if v.StringValue != nil {
				return *v.StringValue
			}
			return string(v.BinaryValue)
		}
		b.got = append(b.got, msg{ID: str(sqsAttrID), Topic: str(sqsAttrTopic), Device: str(sqsAttrDevice), Payload: p})
	}
	if _, err := b.client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(b.url), Entries: del}); err != nil {
		return 0, err
	}
	return len(out.Messages), nil
}

// sqsPayload decodes a body as aws-sqs's README tells consumers to.
func sqsPayload(m types.Message) ([]byte, error) {
	enc := m.MessageAttributes[sqsAttrEncoding]
	switch aws.ToString(enc.StringValue) {
	case "base64":
		return base64.StdEncoding.DecodeString(aws.ToString(m.Body))
	case "empty":
		return []byte{}, nil
	case "":
		return []byte(aws.ToString(m.Body)), nil
	}
	return nil, fmt.Errorf("message %s: unknown encoding %q", aws.ToString(m.MessageId), strings.TrimSpace(aws.ToString(enc.StringValue)))
}

// sqsLimit is the largest ASCII payload the queue takes from the block: its
// MaximumMessageSize less the attributes every message carries, each
// counted as SQS does (name, data type and value; README "How messages
// map"): the topic, the receive time (a fixed 30 characters), the id (25)
// and the device.
func sqsLimit(r *rig) int {
	b := r.be.(*sqsBackend)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := b.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(b.url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMaximumMessageSize},
	})
	if err != nil {
		r.t.Fatalf("GetQueueAttributes: %v", err)
	}
	max, err := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameMaximumMessageSize)])
	if err != nil {
		r.t.Fatalf("MaximumMessageSize: %v", err)
	}
	attr := func(name string, value int) int { return len(name) + len("String") + value }
	return max - attr(sqsAttrTopic, len("cloud-input")) - attr(sqsAttrReceived, 30) - attr(sqsAttrID, 25) - attr(sqsAttrDevice, len(testDevice))
}
