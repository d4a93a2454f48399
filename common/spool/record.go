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
// A message that keeps an id given before it came here (Entry.ID: a
// replayed dead letter, an imported backlog) has the top bit of its seq
// field set and its id after the topic:
//
//	body = u64 seq|1<<63 | i64 receive time | u16 topic length | topic | u8 id length | id | payload
//
// Little-endian. A record is valid only if its length is within bounds, its
// checksum matches and its seq is above the previous record's.
const (
	headerSize  = 8
	bodyFixed   = 8 + 8 + 2
	maxTopicLen = 65535
	idFlag      = 1 << 63
	// MaxIDLen is the longest id an Entry may keep.
	MaxIDLen = 255
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Entry is what the spool stores for one message.
type Entry struct {
	Topic    string
	Received time.Time
	Payload  []byte
	// ID, when set, is the message's id for good: one it was given before
	// (a dead letter replayed, a backlog imported from another device), so
	// that it is delivered under that id. Empty: the spool's id for its seq.
	ID string
}

// Size is the record's size on disk.
func (e *Entry) Size() int { return headerSize + e.bodySize() }

func (e *Entry) bodySize() int {
	n := bodyFixed + len(e.Topic) + len(e.Payload)
	if e.ID != "" {
		n += 1 + len(e.ID)
	}
	return n
}

// ValidID says whether id may be kept by an Entry: 1 to MaxIDLen letters,
// digits, '.', '_' or '-' (ids name objects in object stores).
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// appendRecord encodes e with seq onto buf.
func appendRecord(buf []byte, seq uint64, e *Entry) []byte {
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(e.bodySize()))
	buf = binary.LittleEndian.AppendUint32(buf, 0) // crc, filled below
	body := len(buf)
	if e.ID != "" {
		seq |= idFlag
	}
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(e.Received.UnixNano()))
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(e.Topic)))
	buf = append(buf, e.Topic...)
	if e.ID != "" {
		buf = append(buf, byte(len(e.ID)))
		buf = append(buf, e.ID...)
	}
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
	rest := body[bodyFixed+tl:]
	if seq&idFlag != 0 {
		seq &^= idFlag
		if len(rest) < 1 || int(rest[0]) == 0 || 1+int(rest[0]) > len(rest) {
			return 0, e, errCorrupt
		}
		e.ID, rest = string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
	}
	e.Payload = rest
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
