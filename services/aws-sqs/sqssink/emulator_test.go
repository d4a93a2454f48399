package sqssink

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// maxSize reads the queue's MaximumMessageSize.
func (b *backend) maxSize(t testing.TB, queue string) int {
	t.Helper()
	ctx := context.Background()
	u, err := b.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(queue)})
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: u.QueueUrl,
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMaximumMessageSize}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(out.Attributes["MaximumMessageSize"])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The conformance suite through the real SDK against sqsfake (or the
// emulator SQS_TEST_ENDPOINT names), on a standard and a FIFO queue.
func TestConformanceEmulator(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		t.Run(map[bool]string{false: "standard", true: "fifo"}[fifo], func(t *testing.T) {
			b := newBackend(t)
			queue := b.createQueue(t, fifo)
			r := b.reader(t, queue)
			env := b.env(queue)
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return mustLoad(t, env, testDevice) },
				NewBroken: func(t *testing.T) sink.Sink {
					broken := b.env(queue)
					broken["AWS_SQS_ENDPOINT"] = "http://" + procs.Addr(procs.FreePort(t))
					return mustLoad(t, broken, testDevice)
				},
				ReadBack: func(t *testing.T, ids []string) map[string][]byte {
					return readBack(t, r, ids, 30*time.Second)
				},
				// The suite's ids are 27 characters long.
				MaxMessageBytes: maxText(b.maxSize(t, queue), "cloud-input/conformance", 27, testDevice),
			})
		})
	}
}
