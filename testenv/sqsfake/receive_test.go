package sqsfake

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// every byte value, to show Binary attributes survive base64 both ways untouched.
var allBytes = func() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

// edgeBody holds every boundary of the allowed character set.
const edgeBody = "\t\n\r \uD7FF\uE000\uFFFD\U00010000\U0010FFFF <&> \"quoted\" \\ é 日本"

func sampleAttrs() map[string]types.MessageAttributeValue {
	return map[string]types.MessageAttributeValue{
		"topic":       stringAttr("sensors/kitchen/temp"),
		"unicode":     stringAttr("ü ☃ \U0001F600 \t\n"),
		"count":       {DataType: aws.String("Number"), StringValue: aws.String("-12.5e3")},
		"raw":         {DataType: aws.String("Binary"), BinaryValue: allBytes},
		"json.type":   {DataType: aws.String("String.json"), StringValue: aws.String(`{"a":1}`)},
		"gz-payload":  {DataType: aws.String("Binary.gzip"), BinaryValue: []byte{0x1f, 0x8b, 0}},
		"received_at": {DataType: aws.String("Number.int"), StringValue: aws.String("1700000000123")},
	}
}

func sameAttrs(t *testing.T, got, want map[string]types.MessageAttributeValue) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d attributes, want %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			t.Errorf("attribute %s missing", name)
		case aws.ToString(g.DataType) != aws.ToString(w.DataType):
			t.Errorf("attribute %s type %q, want %q", name, aws.ToString(g.DataType), aws.ToString(w.DataType))
		case aws.ToString(g.StringValue) != aws.ToString(w.StringValue):
			t.Errorf("attribute %s value %q, want %q", name, aws.ToString(g.StringValue), aws.ToString(w.StringValue))
		case !bytes.Equal(g.BinaryValue, w.BinaryValue):
			t.Errorf("attribute %s bytes %x, want %x", name, g.BinaryValue, w.BinaryValue)
		}
	}
}

// receiveAll receives what is visible now, asking for every attribute.
func (e *env) receiveAll(url string, max int32) []types.Message {
	e.t.Helper()
	out, err := e.client.ReceiveMessage(e.t.Context(), &sqs.ReceiveMessageInput{
		QueueUrl: &url, MaxNumberOfMessages: max,
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
	})
	if err != nil {
		e.t.Fatalf("ReceiveMessage: %v", err)
	}
	return out.Messages
}

func TestAttributesRoundTrip(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("roundtrip", nil)
	attrs := sampleAttrs()
	wantMD5 := md5OfAttributes(attrsOf(attrs))

	one, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(edgeBody), MessageAttributes: attrs})
	if err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if got := aws.ToString(one.MD5OfMessageAttributes); got != wantMD5 {
		t.Errorf("SendMessage MD5OfMessageAttributes = %s, want %s", got, wantMD5)
	}
	batch, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("b1"), MessageBody: aws.String(edgeBody), MessageAttributes: attrs},
	}})
	if err != nil || len(batch.Successful) != 1 {
		t.Fatalf("SendMessageBatch: %v %+v", err, batch)
	}
	if got := aws.ToString(batch.Successful[0].MD5OfMessageAttributes); got != wantMD5 {
		t.Errorf("SendMessageBatch MD5OfMessageAttributes = %s, want %s", got, wantMD5)
	}

	msgs := e.receiveAll(url, 10)
	if len(msgs) != 2 {
		t.Fatalf("received %d messages, want 2", len(msgs))
	}
	sent := []string{aws.ToString(one.MessageId), aws.ToString(batch.Successful[0].MessageId)}
	for _, m := range msgs {
		if !slices.Contains(sent, aws.ToString(m.MessageId)) {
			t.Errorf("unexpected MessageId %s", aws.ToString(m.MessageId))
		}
		if aws.ToString(m.Body) != edgeBody {
			t.Errorf("body = %q, want %q", aws.ToString(m.Body), edgeBody)
		}
		sameAttrs(t, m.MessageAttributes, attrs)
		if got := aws.ToString(m.MD5OfMessageAttributes); got != wantMD5 {
			t.Errorf("received MD5OfMessageAttributes = %s, want %s", got, wantMD5)
		}
		if m.Attributes["ApproximateReceiveCount"] != "1" {
			t.Errorf("ApproximateReceiveCount = %q, want 1", m.Attributes["ApproximateReceiveCount"])
		}
		if ts, err := strconv.ParseInt(m.Attributes["SentTimestamp"], 10, 64); err != nil || ts <= 0 {
			t.Errorf("SentTimestamp = %q, want epoch milliseconds", m.Attributes["SentTimestamp"])
		}
		if m.Attributes["SenderId"] == "" {
			t.Error("SenderId missing")
		}
	}
}

// Only the attributes asked for come back, and the digest covers just those.
func TestReceiveAttributeSelection(t *testing.T) {
	e := newEnv(t)
	// The SDK leaves a zero VisibilityTimeout out of the request, so the queue's default is 0
	// to let every receive below see the message.
	url := e.createQueue("select", map[string]string{"VisibilityTimeout": "0"})
	attrs := map[string]types.MessageAttributeValue{
		"a.one": stringAttr("1"), "a.two": stringAttr("2"), "b": stringAttr("3"),
	}
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("m"), MessageAttributes: attrs}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	tests := []struct {
		names []string
		want  []string
	}{
		{nil, nil},
		{[]string{"b"}, []string{"b"}},
		{[]string{"a.*"}, []string{"a.one", "a.two"}},
		{[]string{".*"}, []string{"a.one", "a.two", "b"}},
	}
	for _, tt := range tests {
		out, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, MessageAttributeNames: tt.names})
		if err != nil || len(out.Messages) != 1 {
			t.Fatalf("ReceiveMessage %v: %v, %d messages", tt.names, err, len(out.Messages))
		}
		m := out.Messages[0]
		var got []string
		want := map[string]types.MessageAttributeValue{}
		for n := range m.MessageAttributes {
			got = append(got, n)
			want[n] = attrs[n]
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("names %v: got attributes %v, want %v", tt.names, got, tt.want)
		}
		if d := md5OfAttributes(attrsOf(want)); aws.ToString(m.MD5OfMessageAttributes) != d {
			t.Errorf("names %v: MD5OfMessageAttributes = %q, want %q", tt.names, aws.ToString(m.MD5OfMessageAttributes), d)
		}
		if len(m.Attributes) != 0 {
			t.Errorf("system attributes returned unasked: %v", m.Attributes)
		}
	}
}

func TestFIFOOrderAndGroups(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("order.fifo", fifoAttrs())
	var seqs []string
	for i, g := range []string{"A", "A", "B", "A"} {
		out, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(fmt.Sprint(g, i)),
			MessageGroupId: aws.String(g), MessageDeduplicationId: aws.String(fmt.Sprint("d", i))})
		if err != nil {
			t.Fatalf("SendMessage %d: %v", i, err)
		}
		seqs = append(seqs, aws.ToString(out.SequenceNumber))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i-1] == "" || seqs[i] <= seqs[i-1] {
			t.Errorf("sequence numbers %v are not increasing", seqs)
		}
	}

	// The first receive takes group A's head; while it is in flight the rest of A waits,
	// but B is free.
	first := e.receiveAll(url, 1)
	if len(first) != 1 || aws.ToString(first[0].Body) != "A0" {
		t.Fatalf("first receive = %v, want A0", bodies(first))
	}
	m := first[0]
	if m.Attributes["MessageGroupId"] != "A" || m.Attributes["MessageDeduplicationId"] != "d0" || m.Attributes["SequenceNumber"] != seqs[0] {
		t.Errorf("system attributes = %v", m.Attributes)
	}
	if got := bodies(e.receiveAll(url, 10)); !slices.Equal(got, []string{"B2"}) {
		t.Errorf("while A0 is in flight got %v, want [B2]", got)
	}
	if _, err := e.client.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: m.ReceiptHandle}); err != nil {
		t.Fatalf("DeleteMessage: %v", err)
	}
	if got := bodies(e.receiveAll(url, 10)); !slices.Equal(got, []string{"A1", "A3"}) {
		t.Errorf("after deleting A0 got %v, want [A1 A3] in order", got)
	}
}

func bodies(msgs []types.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, aws.ToString(m.Body))
	}
	return out
}

func TestFIFODeduplication(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("dedup.fifo", fifoAttrs())
	send := func(body, dedup string) *sqs.SendMessageOutput {
		t.Helper()
		out, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body),
			MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String(dedup)})
		if err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
		return out
	}
	first := send("one", "id-1")
	dup := send("one", "id-1")
	if aws.ToString(dup.MessageId) != aws.ToString(first.MessageId) || aws.ToString(dup.SequenceNumber) != aws.ToString(first.SequenceNumber) {
		t.Errorf("duplicate got MessageId %s seq %s, want the original's %s %s",
			aws.ToString(dup.MessageId), aws.ToString(dup.SequenceNumber), aws.ToString(first.MessageId), aws.ToString(first.SequenceNumber))
	}
	// A duplicate inside a batch is deduplicated too.
	b, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("x"), MessageBody: aws.String("one"), MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String("id-1")},
	}})
	if err != nil || len(b.Successful) != 1 || aws.ToString(b.Successful[0].MessageId) != aws.ToString(first.MessageId) {
		t.Fatalf("batch duplicate: %v %+v", err, b)
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "1" {
		t.Errorf("ApproximateNumberOfMessages = %s, want 1", got)
	}
	if st := e.fake.Stats(); st.MessagesEnqueued != 1 || st.DuplicatesDropped != 2 {
		t.Errorf("stats = %+v, want 1 enqueued and 2 duplicates", st)
	}

	// After the five-minute window the same id is a new message.
	e.clock.Advance(dedupWindow - time.Second)
	send("one", "id-1")
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "1" {
		t.Errorf("inside the window: ApproximateNumberOfMessages = %s, want 1", got)
	}
	e.clock.Advance(2 * time.Second)
	later := send("one", "id-1")
	if aws.ToString(later.MessageId) == aws.ToString(first.MessageId) {
		t.Error("after the window the send was still deduplicated")
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "2" {
		t.Errorf("after the window: ApproximateNumberOfMessages = %s, want 2", got)
	}
}

func TestFIFOContentBasedDeduplication(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("cbd.fifo", fifoAttrs("ContentBasedDeduplication", "true"))
	var ids []string
	for _, body := range []string{"same", "same", "other"} {
		out, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body), MessageGroupId: aws.String("g")})
		if err != nil {
			t.Fatalf("SendMessage: %v", err)
		}
		ids = append(ids, aws.ToString(out.MessageId))
	}
	if ids[0] != ids[1] || ids[0] == ids[2] {
		t.Errorf("message ids %v: want the first two equal and the third different", ids)
	}
	msgs := e.receiveAll(url, 10)
	if got := bodies(msgs); !slices.Equal(got, []string{"same", "other"}) {
		t.Errorf("received %v, want [same other]", got)
	}
	if len(msgs) > 0 && len(msgs[0].Attributes["MessageDeduplicationId"]) != 64 {
		t.Errorf("content-based MessageDeduplicationId = %q, want a SHA-256 in hex", msgs[0].Attributes["MessageDeduplicationId"])
	}
}

func TestVisibilityTimeoutAndDelete(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("visibility", nil)
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("m")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	first := e.receiveAll(url, 1)
	if len(first) != 1 {
		t.Fatalf("received %d, want 1", len(first))
	}
	if got := e.receiveAll(url, 1); len(got) != 0 {
		t.Errorf("message visible again during its visibility timeout")
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessagesNotVisible"); got != "1" {
		t.Errorf("ApproximateNumberOfMessagesNotVisible = %s, want 1", got)
	}
	e.clock.Advance(31 * time.Second)
	second := e.receiveAll(url, 1)
	if len(second) != 1 || second[0].Attributes["ApproximateReceiveCount"] != "2" {
		t.Fatalf("after the timeout got %v, want the message with receive count 2", second)
	}

	// The first receipt handle is stale now: deleting with it succeeds but deletes nothing.
	if _, err := e.client.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: first[0].ReceiptHandle}); err != nil {
		t.Fatalf("DeleteMessage with a stale handle: %v", err)
	}
	// Making it visible at once, then deleting with the newest handle removes it.
	if _, err := e.client.ChangeMessageVisibility(t.Context(), &sqs.ChangeMessageVisibilityInput{QueueUrl: &url, ReceiptHandle: second[0].ReceiptHandle, VisibilityTimeout: 0}); err != nil {
		t.Fatalf("ChangeMessageVisibility: %v", err)
	}
	third := e.receiveAll(url, 1)
	if len(third) != 1 {
		t.Fatalf("stale delete removed the message, or visibility 0 did not show it")
	}
	out, err := e.client.DeleteMessageBatch(t.Context(), &sqs.DeleteMessageBatchInput{QueueUrl: &url, Entries: []types.DeleteMessageBatchRequestEntry{
		{Id: aws.String("good"), ReceiptHandle: third[0].ReceiptHandle},
		{Id: aws.String("bad"), ReceiptHandle: aws.String("not a handle")},
	}})
	if err != nil {
		t.Fatalf("DeleteMessageBatch: %v", err)
	}
	if len(out.Successful) != 1 || aws.ToString(out.Successful[0].Id) != "good" ||
		len(out.Failed) != 1 || aws.ToString(out.Failed[0].Id) != "bad" || aws.ToString(out.Failed[0].Code) != "ReceiptHandleIsInvalid" || !out.Failed[0].SenderFault {
		t.Errorf("DeleteMessageBatch = %+v", out)
	}
	e.clock.Advance(time.Hour)
	if got := e.receiveAll(url, 1); len(got) != 0 {
		t.Errorf("deleted message came back")
	}

	// ChangeMessageVisibilityBatch: a message in flight can be extended; a deleted one is not
	// in flight any more.
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("n")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	fourth := e.receiveAll(url, 1)
	if len(fourth) != 1 {
		t.Fatalf("received %d, want 1", len(fourth))
	}
	cv, err := e.client.ChangeMessageVisibilityBatch(t.Context(), &sqs.ChangeMessageVisibilityBatchInput{QueueUrl: &url, Entries: []types.ChangeMessageVisibilityBatchRequestEntry{
		{Id: aws.String("live"), ReceiptHandle: fourth[0].ReceiptHandle, VisibilityTimeout: 120},
		{Id: aws.String("deleted"), ReceiptHandle: third[0].ReceiptHandle, VisibilityTimeout: 120},
	}})
	if err != nil {
		t.Fatalf("ChangeMessageVisibilityBatch: %v", err)
	}
	if len(cv.Successful) != 1 || aws.ToString(cv.Successful[0].Id) != "live" ||
		len(cv.Failed) != 1 || aws.ToString(cv.Failed[0].Code) != "AWS.SimpleQueueService.MessageNotInflight" {
		t.Errorf("ChangeMessageVisibilityBatch = %+v", cv)
	}
	e.clock.Advance(60 * time.Second) // past the queue's 30 s, inside the new 120 s
	if got := e.receiveAll(url, 1); len(got) != 0 {
		t.Errorf("the extended message became visible after the queue's default timeout")
	}

	_, err = e.client.DeleteMessage(t.Context(), &sqs.DeleteMessageInput{QueueUrl: &url, ReceiptHandle: aws.String("garbage")})
	wantAPIError[*types.ReceiptHandleIsInvalid](t, err, http.StatusNotFound)
	if st := e.fake.Stats(); st.MessagesDeleted != 1 {
		t.Errorf("MessagesDeleted = %d, want 1", st.MessagesDeleted)
	}
}

func TestDelaySeconds(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("delay", nil)
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("later"), DelaySeconds: 10}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessagesDelayed"); got != "1" {
		t.Errorf("ApproximateNumberOfMessagesDelayed = %s, want 1", got)
	}
	if got := e.receiveAll(url, 1); len(got) != 0 {
		t.Error("delayed message delivered early")
	}
	e.clock.Advance(10 * time.Second)
	if got := e.receiveAll(url, 1); len(got) != 1 {
		t.Error("delayed message not delivered after its delay")
	}
}

func TestReceiveParameterErrors(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("params", nil)
	for _, in := range []sqs.ReceiveMessageInput{
		{QueueUrl: &url, MaxNumberOfMessages: 11},
		{QueueUrl: &url, WaitTimeSeconds: 21},
		{QueueUrl: &url, VisibilityTimeout: 43201},
	} {
		_, err := e.client.ReceiveMessage(t.Context(), &in)
		wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
	}
}

func TestLongPollWakesOnSend(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("longpoll", nil)
	type result struct {
		msgs []types.Message
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		out, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 10})
		r := result{err: err, took: time.Since(start)}
		if out != nil {
			r.msgs = out.Messages
		}
		done <- r
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("wake up")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	r := <-done
	if r.err != nil || len(r.msgs) != 1 || aws.ToString(r.msgs[0].Body) != "wake up" {
		t.Fatalf("long poll = %v, %v", r.err, bodies(r.msgs))
	}
	if r.took < 250*time.Millisecond || r.took > 5*time.Second {
		t.Errorf("long poll returned after %v, want soon after the send at 300ms", r.took)
	}
}

func TestLongPollTimesOutEmpty(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("empty", nil)
	start := time.Now()
	out, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 1})
	if err != nil || len(out.Messages) != 0 {
		t.Fatalf("ReceiveMessage = %v, %d messages", err, len(out.Messages))
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("a 1 s long poll returned after %v", took)
	}
}

// A caller that gives up ends the long poll on the server too, and takes no messages with it.
func TestLongPollHonoursCancellation(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("cancel", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 20})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the context's deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("cancelled receive took %v", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.fake.mu.Lock()
		waiting := e.fake.waiting
		e.fake.mu.Unlock()
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server is still long-polling for a caller that left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("kept")}); err != nil {
		t.Fatalf("SendMessage: %v", err)
	}
	if got := e.receiveAll(url, 1); len(got) != 1 {
		t.Error("message sent after the cancelled poll was not delivered")
	}
}

func TestCloseEndsLongPolls(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("close", nil)
	done := make(chan error, 1)
	go func() {
		_, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url, WaitTimeSeconds: 20})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	e.fake.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("long poll ended by Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the long poll")
	}
}

// A Reader takes every message, once, in order, and leaves the queue empty.
func TestReader(t *testing.T) {
	e := newEnv(t)
	e.needFake()
	url := e.createQueue("reader.fifo", fifoAttrs())
	for i := range 12 {
		if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(fmt.Sprint(i)),
			MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(e.client, url)
	for len(r.Messages()) < 12 {
		if _, err := r.Receive(t.Context(), 0, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range r.Messages() {
		if aws.ToString(m.Body) != fmt.Sprint(i) || m.Attributes["MessageGroupId"] != "g" {
			t.Errorf("[%d] body %q, attributes %v", i, aws.ToString(m.Body), m.Attributes)
		}
	}
	if n, err := r.Receive(t.Context(), 0, 5*time.Second); n != 0 || err != nil || e.fake.Stats().MessagesDeleted != 12 {
		t.Errorf("after taking all: received %d (%v), %d deleted", n, err, e.fake.Stats().MessagesDeleted)
	}
}
