package sqssink

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Message attributes put on every message (README: "How messages map").
const (
	AttrTopic    = "mqtt.topic"
	AttrReceived = "cloudblock.received"
	AttrDevice   = "cloudblock.device"
	AttrID       = "cloudblock.id"
	// AttrEncoding is set only when the body is not the payload itself.
	AttrEncoding = "cloudblock.encoding"

	// EncodingBase64: the body is the payload in standard base64 (with padding).
	EncodingBase64 = "base64"
	// EncodingEmpty: the payload is empty; the body is EmptyBody, because SQS
	// refuses empty bodies.
	EncodingEmpty = "empty"
	EmptyBody     = "(empty)"

	// ReceivedLayout is RFC 3339 in UTC with a fixed nine-digit fraction, so
	// the attribute's size is the same for every message.
	ReceivedLayout = "2006-01-02T15:04:05.000000000Z"

	typeString = "String"
	typeBinary = "Binary"
	// maxID is SQS's limit on a MessageGroupId or MessageDeduplicationId.
	maxID = 128
)

// sqsText reports whether SQS takes p unchanged as a body or String
// attribute: UTF-8 of the XML 1.0 characters #x9 | #xA | #xD | #x20-#xD7FF |
// #xE000-#xFFFD | #x10000-#x10FFFF. Anything else (binary, invalid UTF-8,
// control characters) must be encoded to arrive byte-exact.
func sqsText(p string) bool {
	for i := 0; i < len(p); {
		c := p[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(p[i:])
		if r == utf8.RuneError && n == 1 || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		i += n
	}
	return true
}

// textAttr is a String attribute, or a Binary one when SQS would refuse the
// text (an MQTT topic may hold control characters).
func textAttr(s string) types.MessageAttributeValue {
	if sqsText(s) {
		return types.MessageAttributeValue{DataType: stringType, StringValue: ptr(s)}
	}
	return types.MessageAttributeValue{DataType: binaryType, BinaryValue: []byte(s)}
}

// attrSize is what an attribute counts against MaximumMessageSize: its name,
// data type and value.
func attrSize(name string, v types.MessageAttributeValue) int {
	n := len(name) + len(*v.DataType)
	if v.StringValue != nil {
		return n + len(*v.StringValue)
	}
	return n + len(v.BinaryValue)
}

// body returns the message body for payload p and its AttrEncoding value
// (nil when the body is the payload).
func body(p []byte) (string, *string) {
	if len(p) == 0 {
		return EmptyBody, emptyValue
	}
	// The body needs a string copy anyway; a binary payload wastes it.
	if s := string(p); sqsText(s) {
		return s, nil
	}
	return base64.StdEncoding.EncodeToString(p), base64Value
}

// entry is one message ready for SendMessageBatch.
type entry struct {
	i     int // index in the batch
	e     types.SendMessageBatchRequestEntry
	size  int // body plus attributes, as SQS counts them
	coded bool
}

// entry builds the request entry of m, the i-th message of the batch.
func (c *conn) entry(i int, m sink.Message) entry {
	b, enc := body(m.Payload)
	attrs := make(map[string]types.MessageAttributeValue, 5)
	attrs[AttrTopic] = textAttr(m.Topic)
	attrs[AttrReceived] = types.MessageAttributeValue{DataType: stringType, StringValue: ptr(m.Received.UTC().Format(ReceivedLayout))}
	attrs[AttrID] = types.MessageAttributeValue{DataType: stringType, StringValue: ptr(m.ID)}
	if c.device.DataType != nil {
		attrs[AttrDevice] = c.device
	}
	if enc != nil {
		attrs[AttrEncoding] = types.MessageAttributeValue{DataType: stringType, StringValue: enc}
	}
	out := entry{i: i, size: len(b), coded: enc == base64Value}
	for name, v := range attrs {
		out.size += attrSize(name, v)
	}
	out.e = types.SendMessageBatchRequestEntry{Id: ptr(strconv.Itoa(i)), MessageBody: ptr(b), MessageAttributes: attrs}
	if c.fifo {
		group := c.group
		if c.groupByTopic {
			group = groupID(m.Topic)
		}
		out.e.MessageGroupId = ptr(group)
		// The device is part of the id: spools of two devices may hand out
		// the same id, and SQS deduplicates across the whole queue.
		out.e.MessageDeduplicationId = ptr(groupID(m.ID + "@" + c.deviceName))
	}
	return out
}

// groupID returns s when SQS takes it as a MessageGroupId or
// MessageDeduplicationId (1 to 128 printable ASCII characters), else a
// digest of it that does, so the same s always maps to the same id.
func groupID(s string) string {
	if validGroupID(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + hex.EncodeToString(sum[:])
}

func validGroupID(s string) bool {
	if s == "" || len(s) > maxID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' {
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }

// Shared, never written: one allocation fewer per attribute.
var (
	stringType  = ptr(typeString)
	binaryType  = ptr(typeBinary)
	base64Value = ptr(EncodingBase64)
	emptyValue  = ptr(EncodingEmpty)
)
