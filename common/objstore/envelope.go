package objstore

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/sink"
)

// The envelope is written by hand rather than with encoding/json: the payload
// must be embedded unchanged (json.Marshal of a RawMessage compacts it), the
// field order is part of the format, and this runs for every message.

type payloadKind int

const (
	kindText payloadKind = iota
	kindJSON
	kindBase64
)

func classify(p []byte) payloadKind {
	if !utf8.Valid(p) {
		return kindBase64
	}
	// Cheapest test first. Empty is text, as it is not valid JSON.
	if bytes.IndexByte(p, '\n') < 0 && bytes.IndexByte(p, '\r') < 0 && validJSON(p) {
		return kindJSON
	}
	return kindText
}

// appendDeviceField renders the part of every line that is the same for the
// whole batch, once.
func appendDeviceField(b []byte, device string) []byte {
	b = append(b, `,"device":`...)
	return appendString(b, validUTF8(device))
}

// appendLine appends m as one NDJSON line, newline included.
func appendLine(b []byte, m *sink.Message, deviceField []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, validUTF8(m.ID))
	if utf8.ValidString(m.Topic) {
		b = append(b, `,"topic":`...)
		b = appendString(b, m.Topic)
	} else {
		b = append(b, `,"topic_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, []byte(m.Topic))
		b = append(b, '"')
	}
	b = append(b, `,"received":"`...)
	b = m.Received.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if !clock.Trusted(m.Received) {
		b = append(b, `,"clock":"`+ClockUnsynchronised+`"`...)
	}
	b = append(b, deviceField...)
	switch classify(m.Payload) {
	case kindJSON:
		// Must stay the last field: Decode finds the exact bytes between
		// `"json":` and the closing brace.
		b = append(b, `,"json":`...)
		b = append(b, m.Payload...)
	case kindText:
		b = append(b, `,"text":`...)
		b = appendString(b, m.Payload)
	default:
		b = append(b, `,"base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Payload)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s, which must be valid UTF-8, as a JSON string.
// Control characters are escaped, so a line never holds a raw '\n' or '\r';
// so are U+2028 and U+2029, which JavaScript and some line splitters treat as
// line ends. Generic so a []byte payload is not copied into a string first.
func appendString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x20 && c != '"' && c != '\\' && c != 0xe2:
			continue
		case c == 0xe2:
			// U+2028 and U+2029 are e2 80 a8 and e2 80 a9.
			if i+2 >= len(s) || s[i+1] != 0x80 || (s[i+2] != 0xa8 && s[i+2] != 0xa9) {
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[s[i+2]&0xf])
			i += 2
		default:
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// validUTF8 replaces invalid UTF-8, only possible in an id or a device (a
// payload or topic that is not UTF-8 goes to base64), by U+FFFD, as
// encoding/json does.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Line is one decoded NDJSON line.
type Line struct {
	ID, Topic, Device string
	Received          time.Time
	// ClockUnsynchronised: the message was received before the device's
	// clock was set, so Received is not the true time (the "clock" field).
	ClockUnsynchronised bool
	Payload             []byte
}

// wireLine is a line as encoding/json sees it; pointers tell absent fields
// from empty ones.
type wireLine struct {
	ID          *string         `json:"id"`
	Topic       *string         `json:"topic"`
	TopicBase64 *string         `json:"topic_base64"`
	Received    *string         `json:"received"`
	Clock       *string         `json:"clock"`
	Device      *string         `json:"device"`
	JSON        json.RawMessage `json:"json"`
	Text        *string         `json:"text"`
	Base64      *string         `json:"base64"`
}

// Decode restores the messages of a batch object, in order, each payload
// byte for byte. With contentEncoding "gzip" the body is gunzipped first,
// unless it is already plain NDJSON: HTTP clients and GCS's decompressive
// transcoding may have removed the gzip on download, and a gzip stream
// (0x1f 0x8b) cannot be confused with a line, which starts with '{'.
func Decode(body []byte, contentEncoding string) ([]Line, error) {
	if strings.EqualFold(strings.TrimSpace(contentEncoding), EncodingGzip) && len(body) >= 2 && body[0] == 0x1f && body[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("objstore: gunzip: %w", err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("objstore: gunzip: %w", err)
		}
	}
	var out []Line
	for n := 1; len(body) > 0; n++ {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		l, err := decodeLine(line)
		if err != nil {
			return nil, fmt.Errorf("objstore: line %d: %w", n, err)
		}
		out = append(out, l)
	}
	return out, nil
}

func decodeLine(line []byte) (Line, error) {
	// A file passed through a CRLF conversion still decodes: a line of ours
	// ends with '}', never '\r'.
	line = bytes.TrimSuffix(line, []byte{'\r'})
	var w wireLine
	if err := json.Unmarshal(line, &w); err != nil {
		return Line{}, err
	}
	var l Line
	if w.ID == nil || w.Received == nil || w.Device == nil {
		return Line{}, errors.New(`want "id", "received" and "device"`)
	}
	l.ID, l.Device = *w.ID, *w.Device
	t, err := time.Parse(time.RFC3339Nano, *w.Received)
	if err != nil {
		return Line{}, fmt.Errorf("received: %w", err)
	}
	l.Received = t.UTC()
	if w.Clock != nil {
		if *w.Clock != ClockUnsynchronised {
			return Line{}, fmt.Errorf("clock is %q: want %q or none", *w.Clock, ClockUnsynchronised)
		}
		l.ClockUnsynchronised = true
	}
	switch {
	case w.Topic != nil && w.TopicBase64 == nil:
		l.Topic = *w.Topic
	case w.TopicBase64 != nil && w.Topic == nil:
		b, err := base64.StdEncoding.DecodeString(*w.TopicBase64)
		if err != nil {
			return Line{}, fmt.Errorf("topic_base64: %w", err)
		}
		l.Topic = string(b)
	default:
		return Line{}, errors.New(`want exactly one of "topic" and "topic_base64"`)
	}
	n := 0
	if w.JSON != nil {
		n++
		p, ok := exactJSON(line, w.JSON)
		if !ok {
			return Line{}, errors.New(`"json" must be the last field`)
		}
		l.Payload = bytes.Clone(p)
	}
	if w.Text != nil {
		n++
		l.Payload = []byte(*w.Text)
	}
	if w.Base64 != nil {
		n++
		if l.Payload, err = base64.StdEncoding.DecodeString(*w.Base64); err != nil {
			return Line{}, fmt.Errorf("base64: %w", err)
		}
	}
	if n != 1 {
		return Line{}, errors.New(`want exactly one of "json", "text" and "base64"`)
	}
	return l, nil
}

// exactJSON returns the payload bytes of a "json" field as written, leading
// and trailing whitespace included (RawMessage drops it). The field is the
// line's last, so the payload runs from after `"json":` to the final '}';
// raw, the value without whitespace, anchors the search from the end.
func exactJSON(line, raw []byte) ([]byte, bool) {
	end := len(line) - 1
	if end < 0 || line[end] != '}' {
		return nil, false
	}
	e := end
	for e > 0 && isSpace(line[e-1]) {
		e--
	}
	s := e - len(raw)
	if s < 0 || !bytes.Equal(line[s:e], raw) {
		return nil, false
	}
	for s > 0 && isSpace(line[s-1]) {
		s--
	}
	const key = `"json":`
	if s < len(key) || string(line[s-len(key):s]) != key {
		return nil, false
	}
	return line[s:end], true
}

// isSpace is JSON whitespace other than the line breaks a "json" payload
// never holds.
func isSpace(c byte) bool { return c == ' ' || c == '\t' }
