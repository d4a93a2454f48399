package sqsfake

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

func TestCreateQueueDefaults(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("defaults", nil)
	name := url[strings.LastIndex(url, "/")+1:]

	got, err := e.client.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatalf("GetQueueUrl: %v", err)
	}
	if aws.ToString(got.QueueUrl) != url {
		t.Errorf("GetQueueUrl = %s, want %s", aws.ToString(got.QueueUrl), url)
	}

	out, err := e.client.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameAll},
	})
	if err != nil {
		t.Fatalf("GetQueueAttributes: %v", err)
	}
	want := map[string]string{
		"MaximumMessageSize":          "1048576",
		"ApproximateNumberOfMessages": "0",
		"VisibilityTimeout":           "30",
		"DelaySeconds":                "0",
	}
	for k, v := range want {
		if out.Attributes[k] != v {
			t.Errorf("%s = %q, want %q", k, out.Attributes[k], v)
		}
	}
	if arn := out.Attributes["QueueArn"]; !strings.HasPrefix(arn, "arn:aws:sqs:us-east-1:") || !strings.HasSuffix(arn, ":"+name) {
		t.Errorf("QueueArn = %q, want arn:aws:sqs:us-east-1:<account>:%s", arn, name)
	}
	if _, ok := out.Attributes["FifoQueue"]; ok {
		t.Errorf("a standard queue reports FifoQueue under All: %v", out.Attributes)
	}
}

func TestCreateQueueFIFOAttributes(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("fifo.fifo", fifoAttrs("ContentBasedDeduplication", "true", "MaximumMessageSize", "2048"))
	for name, want := range map[string]string{"FifoQueue": "true", "ContentBasedDeduplication": "true", "MaximumMessageSize": "2048"} {
		if got := e.queueAttr(url, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestCreateQueueErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name  string
		queue string
		attrs map[string]string
		check func(t *testing.T, err error)
	}{
		{"bad name", "no spaces", nil, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"fifo flag without suffix", "plain", fifoAttrs(), func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"suffix without fifo flag", "suffix.fifo", nil, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"unknown attribute", "unknown", map[string]string{"NoSuchThing": "1"}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidAttributeName](t, err, http.StatusBadRequest)
		}},
		{"content dedup on standard queue", "cbd", map[string]string{"ContentBasedDeduplication": "true"}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidAttributeName](t, err, http.StatusBadRequest)
		}},
		{"size below minimum", "small", map[string]string{"MaximumMessageSize": "1023"}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidAttributeValue](t, err, http.StatusBadRequest)
		}},
		{"size above maximum", "big", map[string]string{"MaximumMessageSize": "1048577"}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidAttributeValue](t, err, http.StatusBadRequest)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(tt.queue), Attributes: tt.attrs})
			tt.check(t, err)
		})
	}
}

func TestCreateQueueIdempotence(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("same", map[string]string{"VisibilityTimeout": "60"})
	name := url[strings.LastIndex(url, "/")+1:]

	again, err := e.client.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{"VisibilityTimeout": "60"}})
	if err != nil {
		t.Fatalf("create again with the same attributes: %v", err)
	}
	if aws.ToString(again.QueueUrl) != url {
		t.Errorf("URL = %s, want %s", aws.ToString(again.QueueUrl), url)
	}
	_, err = e.client.CreateQueue(t.Context(), &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: map[string]string{"VisibilityTimeout": "61"}})
	qe := wantAPIError[*types.QueueNameExists](t, err, http.StatusBadRequest)
	if qe.ErrorCode() != "QueueAlreadyExists" {
		t.Errorf("ErrorCode = %q, want the legacy code QueueAlreadyExists", qe.ErrorCode())
	}
}

func TestSetQueueAttributes(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("set", nil)
	_, err := e.client.SetQueueAttributes(t.Context(), &sqs.SetQueueAttributesInput{
		QueueUrl: aws.String(url), Attributes: map[string]string{"MaximumMessageSize": "4096"},
	})
	if err != nil {
		t.Fatalf("SetQueueAttributes: %v", err)
	}
	if got := e.queueAttr(url, "MaximumMessageSize"); got != "4096" {
		t.Errorf("MaximumMessageSize = %s, want 4096", got)
	}
	_, err = e.client.SetQueueAttributes(t.Context(), &sqs.SetQueueAttributesInput{
		QueueUrl: aws.String(url), Attributes: map[string]string{"MaximumMessageSize": "lots", "VisibilityTimeout": "5"},
	})
	wantAPIError[*types.InvalidAttributeValue](t, err, http.StatusBadRequest)
	if got := e.queueAttr(url, "VisibilityTimeout"); got != "30" {
		t.Errorf("a refused SetQueueAttributes changed VisibilityTimeout to %s", got)
	}
}

func TestQueueDoesNotExist(t *testing.T) {
	e := newEnv(t)
	// Same host and account as a real queue, so only the name is wrong.
	missing := e.createQueue("exists", nil) + "-never-created"
	calls := map[string]func() error{
		"GetQueueUrl": func() error {
			_, err := e.client.GetQueueUrl(t.Context(), &sqs.GetQueueUrlInput{QueueName: aws.String("no-such-queue-anywhere")})
			return err
		},
		"SendMessage": func() error {
			_, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(missing), MessageBody: aws.String("x")})
			return err
		},
		"SendMessageBatch": func() error {
			_, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(missing),
				Entries: []types.SendMessageBatchRequestEntry{{Id: aws.String("a"), MessageBody: aws.String("x")}}})
			return err
		},
		"ReceiveMessage": func() error {
			_, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(missing)})
			return err
		},
		"GetQueueAttributes": func() error {
			_, err := e.client.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(missing)})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			qe := wantAPIError[*types.QueueDoesNotExist](t, call(), http.StatusBadRequest)
			if qe.ErrorCode() != "AWS.SimpleQueueService.NonExistentQueue" {
				t.Errorf("ErrorCode = %q, want the legacy code from x-amzn-query-error", qe.ErrorCode())
			}
			if qe.ErrorFault() != smithy.FaultClient {
				t.Errorf("fault = %v, want client", qe.ErrorFault())
			}
		})
	}
}

func TestPurgeAndDeleteQueue(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("purge", nil)
	for range 3 {
		if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("m")}); err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "3" {
		t.Errorf("ApproximateNumberOfMessages = %s, want 3", got)
	}
	if _, err := e.client.PurgeQueue(t.Context(), &sqs.PurgeQueueInput{QueueUrl: aws.String(url)}); err != nil {
		t.Fatalf("PurgeQueue: %v", err)
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "0" {
		t.Errorf("after purge ApproximateNumberOfMessages = %s, want 0", got)
	}
	if _, err := e.client.DeleteQueue(t.Context(), &sqs.DeleteQueueInput{QueueUrl: aws.String(url)}); err != nil {
		t.Fatalf("DeleteQueue: %v", err)
	}
	_, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("m")})
	wantAPIError[*types.QueueDoesNotExist](t, err, http.StatusBadRequest)
}

func TestListQueues(t *testing.T) {
	e := newEnv(t)
	a := e.createQueue("listed-a", nil)
	b := e.createQueue("listed-b", nil)
	e.createQueue("other", nil)
	out, err := e.client.ListQueues(t.Context(), &sqs.ListQueuesInput{QueueNamePrefix: aws.String("listed-")})
	if err != nil {
		t.Fatalf("ListQueues: %v", err)
	}
	if len(out.QueueUrls) != 2 || out.QueueUrls[0] != a || out.QueueUrls[1] != b {
		t.Errorf("ListQueues = %v, want [%s %s]", out.QueueUrls, a, b)
	}
}

func TestMessageRetention(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("retention", map[string]string{"MessageRetentionPeriod": "60"})
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("old")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	e.clock.Advance(59 * time.Second)
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "1" {
		t.Errorf("before the retention period ApproximateNumberOfMessages = %s, want 1", got)
	}
	e.clock.Advance(2 * time.Second)
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "0" {
		t.Errorf("after the retention period ApproximateNumberOfMessages = %s, want 0", got)
	}
}

// CreateQueue names each queue apart, and makes a .fifo one FIFO.
func TestCreateQueueHelper(t *testing.T) {
	e := newEnv(t)
	a, url := CreateQueue(t, e.client, "helper.fifo", nil)
	b, _ := CreateQueue(t, e.client, "helper.fifo", nil)
	if !strings.HasPrefix(a, "helper-") || !strings.HasSuffix(a, ".fifo") || a == b {
		t.Errorf("queue names %s and %s", a, b)
	}
	if got := e.queueAttr(url, "FifoQueue"); got != "true" {
		t.Errorf("FifoQueue = %q", got)
	}
}
