package sqsfake

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// The wire shapes below follow the member names of the SQS Smithy model, which is what AWS JSON 1.0
// puts on the wire (no renaming). Optional scalars are pointers so "absent" and "zero" differ, as
// they do for the real service (an absent DelaySeconds means "use the queue's").

// attrValue is a MessageAttributeValue (and a MessageSystemAttributeValue, which has the same shape).
// Blobs travel as standard base64 in JSON, which []byte gives for free.
type attrValue struct {
	DataType         string   `json:"DataType"`
	StringValue      *string  `json:"StringValue,omitempty"`
	BinaryValue      []byte   `json:"BinaryValue,omitempty"`
	StringListValues []string `json:"StringListValues,omitempty"`
	BinaryListValues [][]byte `json:"BinaryListValues,omitempty"`
}

func (v attrValue) isBinary() bool { return baseType(v.DataType) == "Binary" }

func (v attrValue) stringValue() string {
	if v.StringValue == nil {
		return ""
	}
	return *v.StringValue
}

// size is what the attribute adds to a message's size: name, data type and value, in bytes.
func (v attrValue) size(name string) int {
	n := len(name) + len(v.DataType)
	if v.isBinary() {
		return n + len(v.BinaryValue)
	}
	return n + len(v.stringValue())
}

type createQueueInput struct {
	QueueName  string            `json:"QueueName"`
	Attributes map[string]string `json:"Attributes"`
	Tags       map[string]string `json:"tags"`
}

type queueURLOutput struct {
	QueueUrl string `json:"QueueUrl"`
}

type getQueueURLInput struct {
	QueueName              string `json:"QueueName"`
	QueueOwnerAWSAccountId string `json:"QueueOwnerAWSAccountId"`
}

type queueInput struct {
	QueueUrl string `json:"QueueUrl"`
}

type getQueueAttributesInput struct {
	QueueUrl       string   `json:"QueueUrl"`
	AttributeNames []string `json:"AttributeNames"`
}

type attributesOutput struct {
	Attributes map[string]string `json:"Attributes,omitempty"`
}

type setQueueAttributesInput struct {
	QueueUrl   string            `json:"QueueUrl"`
	Attributes map[string]string `json:"Attributes"`
}

type listQueuesInput struct {
	QueueNamePrefix string `json:"QueueNamePrefix"`
}

type listQueuesOutput struct {
	QueueUrls []string `json:"QueueUrls,omitempty"`
}

// sendEntry is the common part of SendMessage and one SendMessageBatch entry.
type sendEntry struct {
	Id                      string               `json:"Id"`
	MessageBody             *string              `json:"MessageBody"`
	DelaySeconds            *int64               `json:"DelaySeconds"`
	MessageAttributes       map[string]attrValue `json:"MessageAttributes"`
	MessageSystemAttributes map[string]attrValue `json:"MessageSystemAttributes"`
	MessageDeduplicationId  *string              `json:"MessageDeduplicationId"`
	MessageGroupId          *string              `json:"MessageGroupId"`
}

type sendMessageInput struct {
	QueueUrl string `json:"QueueUrl"`
	sendEntry
}

type sendResult struct {
	Id                           string `json:"Id,omitempty"`
	MessageId                    string `json:"MessageId"`
	MD5OfMessageBody             string `json:"MD5OfMessageBody"`
	MD5OfMessageAttributes       string `json:"MD5OfMessageAttributes,omitempty"`
	MD5OfMessageSystemAttributes string `json:"MD5OfMessageSystemAttributes,omitempty"`
	SequenceNumber               string `json:"SequenceNumber,omitempty"`
}

type sendMessageBatchInput struct {
	QueueUrl string      `json:"QueueUrl"`
	Entries  []sendEntry `json:"Entries"`
}

type batchError struct {
	Id          string `json:"Id"`
	SenderFault bool   `json:"SenderFault"`
	Code        string `json:"Code"`
	Message     string `json:"Message,omitempty"`
}

type batchID struct {
	Id string `json:"Id"`
}

type sendMessageBatchOutput struct {
	Successful []sendResult `json:"Successful"`
	Failed     []batchError `json:"Failed"`
}

type receiveMessageInput struct {
	QueueUrl                    string   `json:"QueueUrl"`
	AttributeNames              []string `json:"AttributeNames"`
	MessageSystemAttributeNames []string `json:"MessageSystemAttributeNames"`
	MessageAttributeNames       []string `json:"MessageAttributeNames"`
	MaxNumberOfMessages         *int64   `json:"MaxNumberOfMessages"`
	VisibilityTimeout           *int64   `json:"VisibilityTimeout"`
	WaitTimeSeconds             *int64   `json:"WaitTimeSeconds"`
	ReceiveRequestAttemptId     string   `json:"ReceiveRequestAttemptId"`
}

type wireMessage struct {
	MessageId              string               `json:"MessageId"`
	ReceiptHandle          string               `json:"ReceiptHandle"`
	MD5OfBody              string               `json:"MD5OfBody"`
	Body                   string               `json:"Body"`
	Attributes             map[string]string    `json:"Attributes,omitempty"`
	MD5OfMessageAttributes string               `json:"MD5OfMessageAttributes,omitempty"`
	MessageAttributes      map[string]attrValue `json:"MessageAttributes,omitempty"`
}

type receiveMessageOutput struct {
	Messages []wireMessage `json:"Messages,omitempty"`
}

type receiptInput struct {
	QueueUrl          string `json:"QueueUrl"`
	ReceiptHandle     string `json:"ReceiptHandle"`
	VisibilityTimeout *int64 `json:"VisibilityTimeout"`
}

type receiptEntry struct {
	Id                string `json:"Id"`
	ReceiptHandle     string `json:"ReceiptHandle"`
	VisibilityTimeout *int64 `json:"VisibilityTimeout"`
}

type receiptBatchInput struct {
	QueueUrl string         `json:"QueueUrl"`
	Entries  []receiptEntry `json:"Entries"`
}

type receiptBatchOutput struct {
	Successful []batchID    `json:"Successful"`
	Failed     []batchError `json:"Failed"`
}

// apiError is an error the service reports to the caller.
//
// The SDK resolves the error type from "__type" (namespace stripped) against its registry of
// modelled errors, so "com.amazonaws.sqs#QueueDoesNotExist" becomes *types.QueueDoesNotExist; the
// legacy Query-protocol code from the x-amzn-query-error header then becomes that error's
// ErrorCode(), and for unmodelled errors (InvalidParameterValue, MissingParameter, ...) it is the
// code of the smithy.GenericAPIError. The real service sends both, and so do we.
type apiError struct {
	status    int
	shape     string // Smithy shape name, sent as com.amazonaws.sqs#<shape>
	queryCode string // legacy code, sent in x-amzn-query-error
	server    bool   // fault is the service's (Receiver) rather than the caller's (Sender)
	message   string
}

func (e *apiError) Error() string { return e.queryCode + ": " + e.message }

func (e *apiError) write(w http.ResponseWriter) {
	fault := "Sender"
	if e.server {
		fault = "Receiver"
	}
	w.Header().Set("X-Amzn-Query-Error", e.queryCode+";"+fault)
	writeJSON(w, e.status, struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}{"com.amazonaws.sqs#" + e.shape, e.message})
}

// writeJSON answers with an AWS JSON 1.0 body. HTML escaping is off so the bytes on the wire are
// the plain JSON a real service sends; it is valid JSON either way.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Every value encoded here is built by this package; failing to encode one is a bug.
		panic("sqsfake: encode response: " + err.Error())
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
