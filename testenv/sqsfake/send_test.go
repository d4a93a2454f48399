package sqsfake

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

func entry(id, body string) types.SendMessageBatchRequestEntry {
	return types.SendMessageBatchRequestEntry{Id: aws.String(id), MessageBody: aws.String(body)}
}

func entries(n, size int) []types.SendMessageBatchRequestEntry {
	out := make([]types.SendMessageBatchRequestEntry, n)
	for i := range out {
		out[i] = entry(fmt.Sprintf("e%d", i), strings.Repeat("x", size))
	}
	return out
}

func stringAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

// Whole-request batch errors: the SDK must turn each into its typed error, and nothing may be
// stored.
func TestSendMessageBatchRequestErrors(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("batch", nil)
	tooLong := entries(10, 110*1024) // each well under 1 MiB, together over it
	tests := []struct {
		name    string
		entries []types.SendMessageBatchRequestEntry
		check   func(t *testing.T, err error)
	}{
		{"empty", []types.SendMessageBatchRequestEntry{}, func(t *testing.T, err error) {
			ee := wantAPIError[*types.EmptyBatchRequest](t, err, http.StatusBadRequest)
			if ee.ErrorCode() != "AWS.SimpleQueueService.EmptyBatchRequest" {
				t.Errorf("ErrorCode = %q", ee.ErrorCode())
			}
		}},
		{"eleven entries", entries(11, 1), func(t *testing.T, err error) {
			wantAPIError[*types.TooManyEntriesInBatchRequest](t, err, http.StatusBadRequest)
		}},
		{"repeated id", []types.SendMessageBatchRequestEntry{entry("a", "1"), entry("b", "2"), entry("a", "3")}, func(t *testing.T, err error) {
			wantAPIError[*types.BatchEntryIdsNotDistinct](t, err, http.StatusBadRequest)
		}},
		{"id with a space", []types.SendMessageBatchRequestEntry{entry("a b", "1")}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidBatchEntryId](t, err, http.StatusBadRequest)
		}},
		{"id of 81 characters", []types.SendMessageBatchRequestEntry{entry(strings.Repeat("i", 81), "1")}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidBatchEntryId](t, err, http.StatusBadRequest)
		}},
		{"payload over 1 MiB", tooLong, func(t *testing.T, err error) {
			wantAPIError[*types.BatchRequestTooLong](t, err, http.StatusBadRequest)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: tt.entries})
			tt.check(t, err)
		})
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "0" {
		t.Errorf("refused batches stored messages: ApproximateNumberOfMessages = %s", got)
	}

	// The limits themselves are allowed: 10 entries, 80-character ids of every allowed kind,
	// exactly 1 MiB in total.
	full := entries(10, maxBatchBytes/10)
	full[9].MessageBody = aws.String(strings.Repeat("y", maxBatchBytes-9*(maxBatchBytes/10)))
	full[0].Id = aws.String(strings.Repeat("A-z_9", 16))
	out, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(url), Entries: full})
	if err != nil {
		t.Fatalf("batch at the limits: %v", err)
	}
	if len(out.Successful) != 10 || len(out.Failed) != 0 {
		t.Errorf("batch at the limits: %d successful, %d failed, want 10 and 0", len(out.Successful), len(out.Failed))
	}
}

func TestDeleteMessageBatchRequestErrors(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("delbatch", nil)
	_, err := e.client.DeleteMessageBatch(t.Context(), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: []types.DeleteMessageBatchRequestEntry{}})
	wantAPIError[*types.EmptyBatchRequest](t, err, http.StatusBadRequest)

	many := make([]types.DeleteMessageBatchRequestEntry, 11)
	for i := range many {
		many[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint("d", i)), ReceiptHandle: aws.String("x")}
	}
	_, err = e.client.DeleteMessageBatch(t.Context(), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: many})
	wantAPIError[*types.TooManyEntriesInBatchRequest](t, err, http.StatusBadRequest)

	_, err = e.client.DeleteMessageBatch(t.Context(), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(url), Entries: many[:2:2]})
	if err != nil {
		// Both handles are garbage: that is a per-entry failure, not a request error.
		t.Fatalf("DeleteMessageBatch with bad handles: %v", err)
	}
}

// Errors of a single SendMessage, each a 400 client fault.
func TestSendMessageErrors(t *testing.T) {
	e := newEnv(t)
	std := e.createQueue("std", nil)
	fifo := e.createQueue("errs.fifo", fifoAttrs())
	tooMany := map[string]types.MessageAttributeValue{}
	for i := range 11 {
		tooMany[fmt.Sprint("a", i)] = stringAttr("v")
	}
	tests := []struct {
		name  string
		in    sqs.SendMessageInput
		check func(t *testing.T, err error)
	}{
		{"NUL in body", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("a\x00b")}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidMessageContents](t, err, http.StatusBadRequest)
		}},
		{"control character in body", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("bell\x07")}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidMessageContents](t, err, http.StatusBadRequest)
		}},
		{"U+FFFE in body", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("\uFFFE")}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidMessageContents](t, err, http.StatusBadRequest)
		}},
		{"U+FFFF in body", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("x\uFFFF")}, func(t *testing.T, err error) {
			wantAPIError[*types.InvalidMessageContents](t, err, http.StatusBadRequest)
		}},
		{"eleven attributes", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"), MessageAttributes: tooMany}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"reserved attribute name", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"),
			MessageAttributes: map[string]types.MessageAttributeValue{"AWS.thing": stringAttr("v")}}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"unknown data type", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"),
			MessageAttributes: map[string]types.MessageAttributeValue{"a": {DataType: aws.String("Blob"), StringValue: aws.String("v")}}}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"empty attribute value", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"),
			MessageAttributes: map[string]types.MessageAttributeValue{"a": stringAttr("")}}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"number that is not", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"),
			MessageAttributes: map[string]types.MessageAttributeValue{"n": {DataType: aws.String("Number"), StringValue: aws.String("12abc")}}}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"delay over 900 s", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"), DelaySeconds: 901}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"dedup id on a standard queue", sqs.SendMessageInput{QueueUrl: &std, MessageBody: aws.String("m"), MessageDeduplicationId: aws.String("d")}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"FIFO without group", sqs.SendMessageInput{QueueUrl: &fifo, MessageBody: aws.String("m"), MessageDeduplicationId: aws.String("d")}, func(t *testing.T, err error) {
			wantCode(t, err, "MissingParameter", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"FIFO without dedup id or content dedup", sqs.SendMessageInput{QueueUrl: &fifo, MessageBody: aws.String("m"), MessageGroupId: aws.String("g")}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"FIFO with per-message delay", sqs.SendMessageInput{QueueUrl: &fifo, MessageBody: aws.String("m"), MessageGroupId: aws.String("g"),
			MessageDeduplicationId: aws.String("d"), DelaySeconds: 5}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
		{"FIFO group id with a space", sqs.SendMessageInput{QueueUrl: &fifo, MessageBody: aws.String("m"), MessageGroupId: aws.String("g 1"),
			MessageDeduplicationId: aws.String("d")}, func(t *testing.T, err error) {
			wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.client.SendMessage(t.Context(), &tt.in)
			tt.check(t, err)
		})
	}
	for _, url := range []string{std, fifo} {
		if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "0" {
			t.Errorf("refused sends stored messages: ApproximateNumberOfMessages = %s", got)
		}
	}
}

// The size limit counts the body and every attribute's name, type and value, and is the
// queue's MaximumMessageSize: 1 MiB by default.
func TestMessageSizeLimit(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("size", nil)

	atLimit := strings.Repeat("é", defaultMaxMessageSize/2) // 2 bytes each: counted in bytes, not characters
	out, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(atLimit)})
	if err != nil {
		t.Fatalf("1 MiB body: %v", err)
	}
	if aws.ToString(out.MD5OfMessageBody) != md5Hex(atLimit) {
		t.Errorf("MD5OfMessageBody = %s, want %s", aws.ToString(out.MD5OfMessageBody), md5Hex(atLimit))
	}
	_, err = e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(atLimit + "x")})
	wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)

	got, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url})
	if err != nil {
		t.Fatalf("receive the 1 MiB message: %v", err)
	}
	if len(got.Messages) != 1 || aws.ToString(got.Messages[0].Body) != atLimit {
		t.Fatalf("received %d messages, or the body changed", len(got.Messages))
	}

	// Attributes count: name (4) + type (6) + value (5) = 15 bytes.
	attrs := map[string]types.MessageAttributeValue{"name": stringAttr("value")}
	body := strings.Repeat("b", defaultMaxMessageSize-15)
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body), MessageAttributes: attrs}); err != nil {
		t.Fatalf("body + attributes at the limit: %v", err)
	}
	_, err = e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(body + "b"), MessageAttributes: attrs})
	wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)

	// A smaller queue limit applies to SendMessage and to each batch entry.
	if _, err := e.client.SetQueueAttributes(t.Context(), &sqs.SetQueueAttributesInput{QueueUrl: &url, Attributes: map[string]string{"MaximumMessageSize": "1024"}}); err != nil {
		t.Fatalf("SetQueueAttributes: %v", err)
	}
	if _, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(strings.Repeat("s", 1024))}); err != nil {
		t.Fatalf("1024 bytes on a 1024-byte queue: %v", err)
	}
	_, err = e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String(strings.Repeat("s", 1025))})
	wantCode(t, err, "InvalidParameterValue", smithy.FaultClient, http.StatusBadRequest)
}

// One bad entry fails alone: the others are stored, and Failed names exactly the bad ones with
// the code and fault of the single-message error.
func TestSendMessageBatchPartialFailure(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("partial", map[string]string{"MaximumMessageSize": "2048"})
	tooMany := map[string]types.MessageAttributeValue{}
	for i := range 11 {
		tooMany[fmt.Sprint("a", i)] = stringAttr("v")
	}
	in := []types.SendMessageBatchRequestEntry{
		entry("ok1", "first"),
		entry("badchar", "nul\x00here"),
		entry("toolong", strings.Repeat("x", 2049)),
		entry("ok2", "second"),
		{Id: aws.String("attrs"), MessageBody: aws.String("m"), MessageAttributes: tooMany},
	}
	out, err := e.client.SendMessageBatch(t.Context(), &sqs.SendMessageBatchInput{QueueUrl: &url, Entries: in})
	if err != nil {
		t.Fatalf("SendMessageBatch: %v", err)
	}
	wantFailed := map[string]string{"badchar": "InvalidMessageContents", "toolong": "InvalidParameterValue", "attrs": "InvalidParameterValue"}
	if len(out.Failed) != len(wantFailed) {
		t.Errorf("Failed = %+v, want %v", out.Failed, wantFailed)
	}
	for _, f := range out.Failed {
		id := aws.ToString(f.Id)
		if code, ok := wantFailed[id]; !ok || aws.ToString(f.Code) != code || !f.SenderFault {
			t.Errorf("failed entry %s: code %s sender fault %v, want %s and true", id, aws.ToString(f.Code), f.SenderFault, code)
		}
	}
	var okIDs []string
	for _, s := range out.Successful {
		okIDs = append(okIDs, aws.ToString(s.Id))
		if aws.ToString(s.MessageId) == "" {
			t.Errorf("entry %s has no MessageId", aws.ToString(s.Id))
		}
	}
	slices.Sort(okIDs)
	if !slices.Equal(okIDs, []string{"ok1", "ok2"}) {
		t.Errorf("Successful ids = %v, want [ok1 ok2]", okIDs)
	}
	if got := e.queueAttr(url, "ApproximateNumberOfMessages"); got != "2" {
		t.Errorf("ApproximateNumberOfMessages = %s, want 2", got)
	}
}

// What the SDK itself does with a body that is not valid UTF-8: it sends U+FFFD in its place but
// checks the reply's MD5 against the original bytes, so the call fails although the (altered)
// message was stored. A sink must therefore never put raw binary into MessageBody.
func TestSDKReplacesInvalidUTF8(t *testing.T) {
	e := newEnv(t)
	url := e.createQueue("utf8", nil)
	_, err := e.client.SendMessage(t.Context(), &sqs.SendMessageInput{QueueUrl: &url, MessageBody: aws.String("bad \xff byte")})
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("SendMessage with invalid UTF-8: err = %v, want the SDK's checksum error", err)
	}
	got, err := e.client.ReceiveMessage(t.Context(), &sqs.ReceiveMessageInput{QueueUrl: &url})
	if err != nil {
		t.Fatalf("ReceiveMessage: %v", err)
	}
	if len(got.Messages) != 1 || aws.ToString(got.Messages[0].Body) != "bad \uFFFD byte" {
		t.Errorf("stored %+v, want the body with U+FFFD", got.Messages)
	}
}
