package sqsfake

import (
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"strings"
)

// md5Hex is the digest SQS reports for a message body: MD5 over the body's UTF-8 bytes.
func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// md5OfAttributes computes the digest SQS reports for message attributes (and, with the same
// encoding, for message system attributes). The encoding is the one AWS documents so clients can
// check it: attributes sorted by name; for each, the length-prefixed name, the length-prefixed
// data type, one transport byte (1 for String and Number, 2 for Binary) and the length-prefixed
// value; every length is 4 bytes big-endian. An empty set has no digest at all.
func md5OfAttributes(attrs map[string]attrValue) string {
	if len(attrs) == 0 {
		return ""
	}
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)

	h := md5.New()
	var lenBuf [4]byte
	writeField := func(b []byte) {
		binary.BigEndian.PutUint32(lenBuf[:], uint32(len(b)))
		h.Write(lenBuf[:])
		h.Write(b)
	}
	for _, n := range names {
		v := attrs[n]
		writeField([]byte(n))
		writeField([]byte(v.DataType))
		if v.isBinary() {
			h.Write([]byte{2})
			writeField(v.BinaryValue)
		} else {
			h.Write([]byte{1})
			writeField([]byte(v.stringValue()))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// baseType is the part of a data type before the optional custom suffix ("Number.float" -> "Number").
func baseType(dataType string) string {
	base, _, _ := strings.Cut(dataType, ".")
	return base
}
