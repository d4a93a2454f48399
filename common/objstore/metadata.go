package objstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Metadata names of a message-mode object: the fields of a batch line. They
// are lower case letters only, which S3 (x-amz-meta-*), Azure Blob
// (x-ms-meta-*, C# identifiers) and GCS all take as they are.
const (
	MetaID       = "id"
	MetaTopic    = "topic"
	MetaReceived = "received"
	MetaDevice   = "device"
	// MetaClock is set, to ClockUnsynchronised, only on a message received
	// before the clock was set (clock.Trusted): its received time is
	// the device's clock then, not the true time.
	MetaClock = "clock"
)

// ClockUnsynchronised is the value of MetaClock (and of a batch line's
// "clock" field) on a message whose receive time cannot be trusted.
const ClockUnsynchronised = "unsynchronised"

// clockBytes is what MetaClock takes of MaxMetadataBytes when it is set.
const clockBytes = len(MetaClock) + len(ClockUnsynchronised)

// MaxMetadataBytes bounds the names and values of an object's metadata
// together: S3's limit for user metadata, the smallest of the three stores'
// (Azure Blob and GCS take 8 KiB). A topic that would exceed it is shortened.
const MaxMetadataBytes = 2048

// metaNamesBytes is what the four names take of MaxMetadataBytes.
const metaNamesBytes = len(MetaID) + len(MetaTopic) + len(MetaReceived) + len(MetaDevice)

// metaPlain marks the bytes a metadata value holds as they are: printable
// ASCII except ' ', '%' and '~'. HTTP trims spaces around a header value and
// SigV4 signs runs of spaces as one, so a space is escaped; '%' so that
// decoding is exact; '~' because it marks a shortened topic, as in keys.
var metaPlain = func() (t [256]bool) {
	for c := 0x21; c <= 0x7e; c++ {
		t[c] = c != '%' && c != '~'
	}
	return t
}()

// metaValue returns s as a metadata value: every byte metaPlain does not
// hold becomes %XX (upper-case hex), RFC 3986 percent-encoding of the
// bytes, so UTF-8 and control characters survive headers that carry only
// ASCII. A value that needs no escape is returned as it is.
func metaValue(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if !metaPlain[s[i]] {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hexUpper = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; metaPlain[c] {
			b = append(b, c)
		} else {
			b = append(b, '%', hexUpper[c>>4], hexUpper[c&0xf])
		}
	}
	return string(b)
}

// metadata is the metadata of m's object in message mode; device is the
// device's value, escaped. A topic that would take the metadata over
// MaxMetadataBytes is cut at an escape boundary and ends in "~" and 16 hex
// digits of its SHA-256, as in keys; the id, time and device never are.
func metadata(m *sink.Message, device string) (map[string]string, error) {
	id := metaValue(m.ID)
	received := m.Received.UTC().Format(time.RFC3339Nano)
	topic := metaValue(m.Topic)
	untrusted := !clock.Trusted(m.Received)
	fixed := metaNamesBytes + len(id) + len(received) + len(device)
	if untrusted {
		fixed += clockBytes
	}
	if fixed+len(topic) > MaxMetadataBytes {
		keep := MaxMetadataBytes - fixed - hashLen
		if keep < 0 {
			return nil, fmt.Errorf("objstore: the metadata of message %.60q take more than the %d bytes S3 accepts even without the topic: the id or device is too long", id, MaxMetadataBytes)
		}
		if keep >= 1 && topic[keep-1] == '%' {
			keep--
		} else if keep >= 2 && topic[keep-2] == '%' {
			keep -= 2
		}
		sum := sha256.Sum256([]byte(m.Topic))
		topic = topic[:keep] + "~" + hex.EncodeToString(sum[:8])
	}
	md := map[string]string{MetaID: id, MetaTopic: topic, MetaReceived: received, MetaDevice: device}
	if untrusted {
		md[MetaClock] = ClockUnsynchronised
	}
	return md, nil
}

// DecodeMetadata restores the id, topic, time, device and clock mark of a
// message-mode object from its metadata (Payload is left empty: it is the object's
// body). Names are matched regardless of case: S3 lowercases them and some
// SDKs return them capitalised, as HTTP headers.
func DecodeMetadata(md map[string]string) (Line, error) {
	var errs []error
	find := func(name string) (string, bool) {
		for k, v := range md {
			if strings.EqualFold(k, name) {
				return v, true
			}
		}
		return "", false
	}
	get := func(name string) string {
		for k, v := range md {
			if strings.EqualFold(k, name) {
				s, err := url.PathUnescape(v)
				if err != nil {
					errs = append(errs, fmt.Errorf("metadata %s: %w", name, err))
				}
				return s
			}
		}
		errs = append(errs, fmt.Errorf("metadata %s is missing", name))
		return ""
	}
	l := Line{ID: get(MetaID), Topic: get(MetaTopic), Device: get(MetaDevice)}
	before := len(errs)
	if r := get(MetaReceived); len(errs) == before {
		t, err := time.Parse(time.RFC3339Nano, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata received: %w", err))
		}
		l.Received = t.UTC()
	}
	if v, ok := find(MetaClock); ok {
		if v != ClockUnsynchronised {
			errs = append(errs, fmt.Errorf("metadata %s is %q: want %s or none", MetaClock, v, ClockUnsynchronised))
		}
		l.ClockUnsynchronised = true
	}
	if err := errors.Join(errs...); err != nil {
		return Line{}, fmt.Errorf("objstore: %w", err)
	}
	return l, nil
}
