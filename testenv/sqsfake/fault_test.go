package sqsfake

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

func TestSetDown(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("down", nil)
	batch := &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: []types.SendMessageBatchRequestEntry{entry("a", "1"), entry("b", "2")}}

	e.fake.SetDown(true)
	_, err := e.client.SendMessageBatch(t.Context(), batch)
	wantCode(t, err, "ServiceUnavailable", smithy.FaultServer, http.StatusServiceUnavailable)
	_, err = e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url})
	wantCode(t, err, "ServiceUnavailable", smithy.FaultServer, http.StatusServiceUnavailable)

	e.fake.SetDown(false)
	if _, err := e.client.SendMessageBatch(t.Context(), batch); err != nil {
		t.Fatalf("after SetDown(false): %v", err)
	}
	st := e.fake.Stats()
	if st.Refused != 2 || st.SendMessageBatchCalls != 1 || st.MessagesEnqueued != 2 {
		t.Errorf("stats = %+v, want 2 refused, 1 batch call served, 2 messages enqueued", st)
	}
}

// The SDK's standard retryer treats 503 as retryable, so an outage shorter than its retries is
// invisible to the caller.
func TestSDKRetriesThroughOutage(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("retry", nil)
	patient := Client(e.url, retrying(20, 50*time.Millisecond))

	e.fake.SetDown(true)
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(300 * time.Millisecond)
		e.fake.SetDown(false)
	})
	_, err := patient.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("eventually")})
	wg.Wait()
	if err != nil {
		t.Fatalf("SendMessage across a 300 ms outage: %v", err)
	}
	if st := e.fake.Stats(); st.Refused == 0 || st.MessagesEnqueued != 1 {
		t.Errorf("stats = %+v, want some refused requests and 1 message", st)
	}
}

func TestSetDownEndsLongPoll(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("downpoll", nil)
	done := make(chan error, 1)
	go func() {
		_, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 20})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	e.fake.SetDown(true)
	select {
	case err := <-done:
		wantCode(t, err, "ServiceUnavailable", smithy.FaultServer, http.StatusServiceUnavailable)
	case <-time.After(5 * time.Second):
		t.Fatal("SetDown did not end the long poll")
	}
}

func TestFailNextEntries(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("inject", nil)
	e.fake.FailNextEntries(2)
	out, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: &url,
		Entries: []types.SendMessageBatchRequestEntry{entry("a", "1"), entry("b", "2"), entry("c", "3")}})
	if err != nil {
		t.Fatalf("SendMessageBatch: %v", err)
	}
	if len(out.Successful) != 1 || aws.ToString(out.Successful[0].Id) != "c" || len(out.Failed) != 2 {
		t.Fatalf("result = %+v, want a and b failed, c stored", out)
	}
	for _, f := range out.Failed {
		if f.SenderFault || aws.ToString(f.Code) != "InternalError" {
			t.Errorf("injected failure %s: sender fault %v code %s, want a service fault InternalError", aws.ToString(f.Id), f.SenderFault, aws.ToString(f.Code))
		}
	}
	if st := e.fake.Stats(); st.MessagesEnqueued != 1 || st.EntriesFailed != 2 {
		t.Errorf("stats = %+v", st)
	}
	// The injection is used up: the retry of the failed entries succeeds.
	out, err = e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: &url,
		Entries: []types.SendMessageBatchRequestEntry{entry("a", "1"), entry("b", "2")}})
	if err != nil || len(out.Successful) != 2 {
		t.Fatalf("retry: %v %+v", err, out)
	}
}

// The wire format itself, checked without the SDK: what a real SQS endpoint answers.
func TestWireFormat(t *testing.T) {
	fake := New()
	srv := fake.Listen(t)

	post := func(target, ctype, body string) (*http.Response, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
		}
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("reply is not JSON: %v: %s", err, raw)
		}
		return resp, out
	}

	resp, out := post("AmazonSQS.GetQueueUrl", contentType, `{"QueueName":"missing"}`)
	if resp.StatusCode != http.StatusBadRequest || out["__type"] != "com.amazonaws.sqs#QueueDoesNotExist" ||
		resp.Header.Get("X-Amzn-Query-Error") != "AWS.SimpleQueueService.NonExistentQueue;Sender" {
		t.Errorf("missing queue: %d %v %v", resp.StatusCode, out, resp.Header)
	}
	if ct := resp.Header.Get("Content-Type"); ct != contentType {
		t.Errorf("Content-Type = %q, want %q", ct, contentType)
	}
	if resp.Header.Get("X-Amzn-Requestid") == "" {
		t.Error("no x-amzn-RequestId")
	}

	resp, out = post("AmazonSQS.CreateQueue", contentType, `{"QueueName":"wire"}`)
	if resp.StatusCode != http.StatusOK || out["QueueUrl"] != srv.URL+"/"+AccountID+"/wire" {
		t.Errorf("CreateQueue: %d %v", resp.StatusCode, out)
	}

	// A client speaking the old Query protocol gets a clear refusal.
	resp, out = post("", "application/x-www-form-urlencoded", "Action=ListQueues")
	if resp.StatusCode != http.StatusBadRequest || out["__type"] == nil {
		t.Errorf("query protocol: %d %v", resp.StatusCode, out)
	}
	resp, _ = post("AmazonSQS.NoSuchAction", contentType, `{}`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown action: status %d", resp.StatusCode)
	}
	resp, _ = post("AmazonSQS.CreateQueue", contentType, `{"QueueName":`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("broken JSON: status %d", resp.StatusCode)
	}

	fake.SetDown(true)
	resp, out = post("AmazonSQS.ListQueues", contentType, `{}`)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Amzn-Query-Error") != "ServiceUnavailable;Receiver" {
		t.Errorf("down: %d %v %v", resp.StatusCode, out, resp.Header)
	}
}

// Many clients at once, for the race detector.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("concurrent", nil)
	const senders, perSender = 8, 5
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for range perSender {
				in := &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: entries(10, 100)}
				if _, err := e.client.SendMessageBatch(t.Context(), in); err != nil {
					t.Errorf("SendMessageBatch: %v", err)
				}
			}
		})
	}
	got := 0
	deadline := time.Now().Add(20 * time.Second)
	for got < senders*perSender*10 && time.Now().Before(deadline) {
		out, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatalf("ReceiveMessage: %v", err)
		}
		var del []types.DeleteMessageBatchRequestEntry
		for i, m := range out.Messages {
			del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(string(rune('a' + i))), ReceiptHandle: m.ReceiptHandle})
		}
		if len(del) > 0 {
			if _, err := e.client.DeleteMessageBatch(t.Context(), &sqs.DeleteMessageBatchInput{QueueUrl: &url, Entries: del}); err != nil {
				t.Fatalf("DeleteMessageBatch: %v", err)
			}
		}
		got += len(out.Messages)
		if e.fake != nil {
			e.fake.Stats()
		}
	}
	wg.Wait()
	if got != senders*perSender*10 {
		t.Errorf("received %d messages, want %d", got, senders*perSender*10)
	}
}

// An Endpoint stopped refuses connections (SetDown answers 503 instead) and,
// started again, serves the same queues on the same port.
func TestEndpointStopStart(t *testing.T) {
	ep := New().Listen(t)
	c := Client(ep.URL)
	_, url := CreateQueue(t, c, "outage", nil)
	if _, err := c.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String("kept")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	ep.Stop()
	ep.Stop()
	if _, err := c.GetQueueAttributes(t.Context(), &sqs.GetQueueAttributesInput{QueueUrl: aws.String(url)}); err == nil {
		t.Fatal("a call to a stopped endpoint succeeded")
	}
	if conn, err := net.Dial("tcp", strings.TrimPrefix(ep.URL, "http://")); err == nil {
		conn.Close()
		t.Fatal("a stopped endpoint accepted a connection")
	}
	for range 2 {
		if err := ep.Start(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := c.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(url)})
	if err != nil || len(out.Messages) != 1 || aws.ToString(out.Messages[0].Body) != "kept" {
		t.Fatalf("after Start: %v %+v", err, out)
	}
}
