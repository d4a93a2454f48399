package sqssink

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// backend is the SQS the emulator tests talk to: the project's sqsfake in
// this process, or the emulator SQS_TEST_ENDPOINT names (LocalStack,
// ElasticMQ), with SQS_TEST_REGION (default us-east-1) and keys test/test.
type backend struct {
	Endpoint string
	Region   string
	client   *sqs.Client
}

func newBackend(t testing.TB) *backend {
	t.Helper()
	b := &backend{Endpoint: os.Getenv("SQS_TEST_ENDPOINT"), Region: os.Getenv("SQS_TEST_REGION")}
	if b.Region == "" {
		b.Region = "us-east-1"
	}
	if b.Endpoint == "" {
		b.Endpoint = sqsfake.New().Listen(t).URL
	}
	b.client = sqsfake.Client(b.Endpoint, func(o *sqs.Options) { o.Region = b.Region })
	return b
}

// createQueue creates a queue with a unique name and returns its name.
func (b *backend) createQueue(t testing.TB, fifo bool) string {
	t.Helper()
	name := "cb-test"
	if fifo {
		name += ".fifo"
	}
	name, _ = sqsfake.CreateQueue(t, b.client, name, nil)
	return name
}

// env is what the sink (or the block) needs to reach queue on b.
func (b *backend) env(queue string) map[string]string {
	return map[string]string{
		"AWS_SQS_QUEUE_NAME": queue, "AWS_SQS_REGION": b.Region, "AWS_SQS_ENDPOINT": b.Endpoint,
		"AWS_SQS_ACCESS_KEY": "test", "AWS_SQS_SECRET_KEY": "test",
	}
}

// reader takes the messages of queue, to read back what a sink sent.
func (b *backend) reader(t testing.TB, queue string) *sqsfake.Reader {
	t.Helper()
	out, err := b.client.GetQueueUrl(context.Background(), &sqs.GetQueueUrlInput{QueueName: aws.String(queue)})
	if err != nil {
		t.Fatal(err)
	}
	return sqsfake.NewReader(b.client, aws.ToString(out.QueueUrl))
}

// readBack reads the queue until r has had every one of ids, for up to
// timeout, and returns the payloads read, decoded, by cloudblock.id.
func readBack(t testing.TB, r *sqsfake.Reader, ids []string, timeout time.Duration) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		got := map[string][]byte{}
		for _, m := range r.Messages() {
			p, err := decode(aws.ToString(m.Body), m.MessageAttributes)
			if err != nil {
				t.Fatalf("message %s: %v", aws.ToString(m.MessageId), err)
			}
			got[aws.ToString(m.MessageAttributes[AttrID].StringValue)] = p
		}
		var missing []string
		for _, id := range ids {
			if _, ok := got[id]; !ok {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return got
		}
		if ctx.Err() != nil {
			t.Fatalf("reading the queue: %d of %d not read yet, e.g. %s", len(missing), len(ids), strings.Join(missing[:min(3, len(missing))], ", "))
		}
		if _, err := r.Receive(ctx, time.Second, 5*time.Second); err != nil && ctx.Err() == nil {
			t.Logf("reading the queue: %v", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}
