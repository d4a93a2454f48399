package sqsfake

import (
	"crypto/md5"
	"encoding/hex"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

func str(dataType, v string) attrValue { return attrValue{DataType: dataType, StringValue: &v} }

// The expected digests are published ones (AWS SDK and emulator test suites), so the encoding is
// checked against the real service's, not against itself.
func TestMD5OfAttributesPublishedVectors(t *testing.T) {
	tests := []struct {
		name  string
		attrs map[string]attrValue
		want  string
	}{
		{"one number", map[string]attrValue{"timestamp": str("Number", "1493147359900")}, "235c5c510d26fb653d073faed50ae77c"},
		{"one string", map[string]attrValue{"SellerName": str("String", "Example Store")}, "cd28f3b68aeee4b2eac9c66f2f694b58"},
		{"sorted by name", map[string]attrValue{"ordinal": str("Number", "1"), "category": str("String", "test")}, "d21ae90c49061e927f57df5f5d72be1f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := md5OfAttributes(tt.attrs); got != tt.want {
				t.Errorf("md5OfAttributes = %s, want %s", got, tt.want)
			}
		})
	}
}

// A Binary attribute is encoded with transport byte 2 and its raw bytes; this spells the
// documented layout out byte by byte.
func TestMD5OfAttributesBinaryLayout(t *testing.T) {
	got := md5OfAttributes(map[string]attrValue{
		"b": {DataType: "Binary.gz", BinaryValue: []byte{0, 1, 0xff}},
		"a": str("String", "é"),
	})
	layout := []byte{
		0, 0, 0, 1, 'a', 0, 0, 0, 6, 'S', 't', 'r', 'i', 'n', 'g', 1, 0, 0, 0, 2, 0xc3, 0xa9,
		0, 0, 0, 1, 'b', 0, 0, 0, 9, 'B', 'i', 'n', 'a', 'r', 'y', '.', 'g', 'z', 2, 0, 0, 0, 3, 0, 1, 0xff,
	}
	sum := md5.Sum(layout)
	if want := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("md5OfAttributes = %s, want %s", got, want)
	}
	if md5OfAttributes(nil) != "" {
		t.Error("no attributes must have no digest")
	}
}

// attrsOf converts SDK attribute values to this package's, to compute the digest a reply must
// carry for what a test sent.
func attrsOf(in map[string]types.MessageAttributeValue) map[string]attrValue {
	out := map[string]attrValue{}
	for k, v := range in {
		out[k] = attrValue{DataType: aws.ToString(v.DataType), StringValue: v.StringValue, BinaryValue: v.BinaryValue}
	}
	return out
}
