package spool

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"
)

// On-disk record:
//
//	u32 body length | u32 CRC-32C of body | body
//	body = u64 seq | i64 receive time (unix ns) | u16 topic length | topic | payload
//
// Little-endian. A record is valid only if its length is within bounds, its
// checksum matches and its seq is above the previous record's.
const (
	headerSize  = 8
	bodyFixed   = 8 + 8 + 2
	maxTopicLen = 65535
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Entry is what the spool stores for one message.
type Entry struct {
	Topic    string
	Received time.Time
	Payload  []byte
}

// Size is the record's size on disk.
func (e *Entry) Size() int { return headerSize + bodyFixed + len(e.Topic) + len(e.Payload) }

// appendRecord encodes e with seq onto buf.
func appendRecord(buf []byte, seq uint64, e *Entry) []byte {
	bodyLen := bodyFixed + len(e.Topic) + len(e.Payload)
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(bodyLen))
	buf = binary.LittleEndian.AppendUint32(buf, 0) // crc, filled below
	body := len(buf)
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(e.Received.UnixNano()))
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(e.Topic)))
	buf = append(buf, e.Topic...)
	buf = append(buf, e.Payload...)
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[body:], castagnoli))
	return buf
}

var errCorrupt = errors.New("corrupt record")

// decodeBody parses a record body whose checksum has been verified.
func decodeBody(body []byte) (seq uint64, e Entry, err error) {
	if len(body) < bodyFixed {
		return 0, e, errCorrupt
	}
	seq = binary.LittleEndian.Uint64(body)
	e.Received = time.Unix(0, int64(binary.LittleEndian.Uint64(body[8:]))).UTC()
	tl := int(binary.LittleEndian.Uint16(body[16:]))
	if bodyFixed+tl > len(body) {
		return 0, e, errCorrupt
	}
	e.Topic = string(body[bodyFixed : bodyFixed+tl])
	e.Payload = body[bodyFixed+tl:]
	return seq, e, nil
}

// parseHeader returns the body length and checksum, or false when the length
// is outside (bodyFixed, maxBody].
func parseHeader(h []byte, maxBody int) (int, uint32, bool) {
	n := int(binary.LittleEndian.Uint32(h))
	if n < bodyFixed || n > maxBody {
		return 0, 0, false
	}
	return n, binary.LittleEndian.Uint32(h[4:]), true
}

// DecodeRecord decodes one record at the start of b, for fuzzing and tools:
// it returns the record's seq, entry and size, or an error.
func DecodeRecord(b []byte, maxBody int) (uint64, Entry, int, error) {
	if len(b) < headerSize {
		return 0, Entry{}, 0, errCorrupt
	}
	n, sum, ok := parseHeader(b, maxBody)
	if !ok || len(b) < headerSize+n {
		return 0, Entry{}, 0, errCorrupt
	}
	body := b[headerSize : headerSize+n]
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, Entry{}, 0, errCorrupt
	}
	seq, e, err := decodeBody(body)
	return seq, e, headerSize + n, err
}
