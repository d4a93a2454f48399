package sqssink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// backend is the SQS the emulator tests talk to: the project's sqsfake in
// this process, or the emulator SQS_TEST_ENDPOINT names (LocalStack,
// ElasticMQ), with SQS_TEST_REGION (default us-east-1) and keys test/test.
type backend struct {
	Endpoint string
	Region   string
	Fake     *sqsfake.Server // nil for an external emulator
	client   *sqs.Client
}

func newBackend(t testing.TB) *backend {
	t.Helper()
	b := &backend{Endpoint: os.Getenv("SQS_TEST_ENDPOINT"), Region: os.Getenv("SQS_TEST_REGION")}
	if b.Region == "" {
		b.Region = "us-east-1"
	}
	if b.Endpoint == "" {
		b.Fake = sqsfake.New()
		srv := httptest.NewServer(b.Fake)
		t.Cleanup(func() {
			b.Fake.Close() // ends long polls so the server can close
			srv.Close()
		})
		b.Endpoint = srv.URL
	}
	b.client = sqs.New(sqs.Options{
		Region: b.Region, BaseEndpoint: aws.String(b.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		// A receive retried after its answer was lost would find the
		// messages it took invisible (and a FIFO group blocked) until their
		// visibility timeout: the reader's loop retries instead, and logs.
		RetryMaxAttempts: 1,
	})
	return b
}

// needFake skips tests that must switch the server off, which an external
// emulator cannot do.
func (b *backend) needFake(t testing.TB) {
	if b.Fake == nil {
		t.Skip("needs the in-process sqsfake (SetDown); SQS_TEST_ENDPOINT is set")
	}
}

// createQueue creates a queue with a unique name and returns its name.
func (b *backend) createQueue(t testing.TB, fifo bool, attrs map[string]string) string {
	t.Helper()
	var r [4]byte
	rand.Read(r[:])
	name := "cb-test-" + hex.EncodeToString(r[:])
	a := map[string]string{}
	if fifo {
		name += ".fifo"
		a["FifoQueue"] = "true"
	}
	for k, v := range attrs {
		a[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := b.client.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: a})
	if err != nil {
		t.Fatalf("CreateQueue %s: %v", name, err)
	}
	url := aws.ToString(out.QueueUrl)
	t.Cleanup(func() { b.client.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}) })
	return name
}

// env is what the sink (or the block) needs to reach queue on b.
func (b *backend) env(queue string) map[string]string {
	return map[string]string{
		"AWS_SQS_QUEUE_NAME": queue, "AWS_SQS_REGION": b.Region, "AWS_SQS_ENDPOINT": b.Endpoint,
		"AWS_SQS_ACCESS_KEY": "test", "AWS_SQS_SECRET_KEY": "test",
	}
}

// received is one message read back and decoded.
type received struct {
	ID, Topic, Device, Received, Group string
	Payload                            []byte
}

// reader receives, decodes and deletes every message of one queue.
type reader struct {
	b   *backend
	url string
	mu  sync.Mutex
	all []received
}

func (b *backend) reader(t testing.TB, queue string) *reader {
	t.Helper()
	out, err := b.client.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String(queue)})
	if err != nil {
		t.Fatal(err)
	}
	return &reader{b: b, url: aws.ToString(out.QueueUrl)}
}

// poll takes what the queue has now (one long-poll round of up to 1 s).
func (r *reader) poll(ctx context.Context) (int, error) {
	out, err := r.b.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(r.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 5,
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameMessageGroupId},
	})
	if err != nil || len(out.Messages) == 0 {
		return 0, err
	}
	var del []types.DeleteMessageBatchRequestEntry
	r.mu.Lock()
	for i, m := range out.Messages {
		p, err := decode(aws.ToString(m.Body), m.MessageAttributes)
		if err != nil {
			r.mu.Unlock()
			return 0, fmt.Errorf("message %s: %w", aws.ToString(m.MessageId), err)
		}
		str := func(name string) string {
			v := m.MessageAttributes[name]
			if v.StringValue != nil {
				return *v.StringValue
			}
			return string(v.BinaryValue)
		}
		r.all = append(r.all, received{ID: str(AttrID), Topic: str(AttrTopic), Device: str(AttrDevice), Received: str(AttrReceived),
			Group: m.Attributes[string(types.MessageSystemAttributeNameMessageGroupId)], Payload: p})
		del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
	}
	r.mu.Unlock()
	_, err = r.b.client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(r.url), Entries: del})
	return len(out.Messages), err
}

// until polls until done holds for what was read, or timeout.
func (r *reader) until(t testing.TB, timeout time.Duration, done func([]received) error) []received {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = done(r.received()); last == nil {
			return r.received()
		}
		if ctx.Err() != nil {
			t.Fatalf("reading the queue: %v", last)
		}
		if _, err := r.poll(ctx); err != nil && ctx.Err() == nil {
			t.Logf("reading the queue: %v", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (r *reader) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.all...)
}

// byID returns the payloads read so far by cloudblock.id.
func byID(rs []received) map[string][]byte {
	out := make(map[string][]byte, len(rs))
	for _, r := range rs {
		out[r.ID] = r.Payload
	}
	return out
}

// haveIDs is a done func for until: every id was read.
func haveIDs(ids []string) func([]received) error {
	return func(rs []received) error {
		got := byID(rs)
		var missing []string
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d not read yet, e.g. %s", len(missing), len(ids), strings.Join(missing[:min(3, len(missing))], ", "))
		}
		return nil
	}
}
