package objstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/sink"
)

type placeholder int

const (
	literal placeholder = iota
	phDevice
	phTopic
	phYear
	phMonth
	phDay
	phHour
	phFirst
	phLast
	phID
)

// placeholders in the order the docs list them.
var placeholders = []struct {
	name string
	ph   placeholder
}{
	{"{device}", phDevice}, {"{topic}", phTopic},
	{"{yyyy}", phYear}, {"{mm}", phMonth}, {"{dd}", phDay}, {"{hh}", phHour},
	{"{first}", phFirst}, {"{last}", phLast}, {"{id}", phID},
}

type part struct {
	ph  placeholder
	lit string
}

type template struct {
	parts  []part
	topics int // how many {topic}
}

// templateError is an invalid template; want completes config.Error's
// "is invalid: want ..." so Load and Build say the same thing.
// fixedBytes is the length of the template's literal text.
func (t template) fixedBytes() int {
	n := 0
	for _, p := range t.parts {
		n += len(p.lit)
	}
	return n
}

type templateError struct {
	template, want string
}

func (e *templateError) Error() string {
	return fmt.Sprintf("objstore: key template %q is invalid: want %s", e.template, e.want)
}

func allowedList(mode Mode) string {
	var names []string
	for _, p := range placeholders {
		if p.ph != phID || mode == PerMessage {
			names = append(names, p.name)
		}
	}
	return strings.Join(names, " ")
}

// compile parses tmpl ("" = the mode's default). Every '{' opens a
// placeholder, so a typo cannot silently become part of every key.
func compile(tmpl string, mode Mode) (template, error) {
	if tmpl == "" {
		tmpl = DefaultBatchTemplate
		if mode == PerMessage {
			tmpl = DefaultMessageTemplate
		}
	}
	var t template
	unique := false
	for rest := tmpl; rest != ""; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			t.parts = append(t.parts, part{lit: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: rest[:i]})
			rest = rest[i:]
		}
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			return template{}, &templateError{tmpl, fmt.Sprintf("a key template using only the placeholders %s (%q is not closed)", allowedList(mode), rest)}
		}
		name := rest[:j+1]
		ph := literal
		for _, p := range placeholders {
			if p.name == name {
				ph = p.ph
			}
		}
		switch {
		case ph == phID && mode == Batch:
			return template{}, &templateError{tmpl, "a key template without {id} in batch mode, where an object holds many messages: use {first} and {last}"}
		case ph == literal:
			return template{}, &templateError{tmpl, fmt.Sprintf("a key template using only the placeholders %s (%s is unknown)", allowedList(mode), name)}
		case ph == phTopic:
			t.topics++
		case ph == phFirst || ph == phID:
			unique = true
		}
		t.parts = append(t.parts, part{ph: ph})
		rest = rest[j+1:]
	}
	if !unique {
		if mode == PerMessage {
			return template{}, &templateError{tmpl, "a key template containing {id}, or each message would overwrite the last one's object"}
		}
		return template{}, &templateError{tmpl, "a key template containing {first}, or each batch would overwrite the last one's object"}
	}
	return t, nil
}

type keyer struct {
	t      template
	prefix string
	device string // escaped
	// sent is the time of sending, which dates an object whose first
	// message was received before the clock was set (clock.Trusted).
	sent time.Time
}

// hashLen is what a shortened topic ends with: "~" and 16 hex digits.
const hashLen = 1 + 16

// key renders the key of an object holding first..last (the same message in
// message mode), shortening {topic} if the key would exceed MaxKeyBytes.
func (k *keyer) key(first, last *sink.Message, ext string) (string, error) {
	var topic []byte
	if k.t.topics > 0 {
		topic = appendEscaped(nil, first.Topic, true)
	}
	b := k.render(make([]byte, 0, 128), first, last, topic, ext)
	if len(b) > MaxKeyBytes && k.t.topics > 0 {
		over := len(b) - MaxKeyBytes
		keep := len(topic) - (over+k.t.topics-1)/k.t.topics - hashLen
		if keep >= 0 {
			// Cut at an escape boundary, never inside a %XX.
			if keep >= 1 && topic[keep-1] == '%' {
				keep--
			} else if keep >= 2 && topic[keep-2] == '%' {
				keep -= 2
			}
			sum := sha256.Sum256([]byte(first.Topic))
			topic = append(topic[:keep], '~')
			topic = hex.AppendEncode(topic, sum[:8])
			b = k.render(b[:0], first, last, topic, ext)
		}
	}
	if len(b) > MaxKeyBytes {
		return "", fmt.Errorf("objstore: key %.60q... is %d bytes, more than the %d the object stores accept: shorten the prefix or the template", b, len(b), MaxKeyBytes)
	}
	return string(b), nil
}

func (k *keyer) render(b []byte, first, last *sink.Message, topic []byte, ext string) []byte {
	b = append(b, k.prefix...)
	at := first.Received.UTC()
	if !clock.Trusted(at) {
		at = k.sent.UTC()
	}
	for _, p := range k.t.parts {
		switch p.ph {
		case literal:
			b = append(b, p.lit...)
		case phDevice:
			b = append(b, k.device...)
		case phTopic:
			b = append(b, topic...)
		case phYear:
			b = appendPadded(b, at.Year(), 4)
		case phMonth:
			b = appendPadded(b, int(at.Month()), 2)
		case phDay:
			b = appendPadded(b, at.Day(), 2)
		case phHour:
			b = appendPadded(b, at.Hour(), 2)
		case phFirst, phID:
			b = appendEscaped(b, first.ID, false)
		case phLast:
			b = appendEscaped(b, last.ID, false)
		}
	}
	return append(b, ext...)
}

func appendPadded(b []byte, n, width int) []byte {
	for p := 10; width > 1; width-- {
		if n < p {
			b = append(b, '0')
		}
		p *= 10
	}
	return strconv.AppendInt(b, int64(n), 10)
}

// appendEscaped appends s made safe for a key: A-Z a-z 0-9 . _ - stay, '/'
// stays when keepSlash (topic levels become key "folders"), every other byte
// becomes %XX. A segment that is "." or ".." has its dots escaped too: GCS
// refuses such names and URL handling collapses them.
func appendEscaped(b []byte, s string, keepSlash bool) []byte {
	const hexUpper = "0123456789ABCDEF"
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && (s[i] != '/' || !keepSlash) {
			continue
		}
		seg := s[start:i]
		if seg == "." || seg == ".." {
			b = append(b, strings.Repeat("%2E", len(seg))...)
		} else {
			for j := 0; j < len(seg); j++ {
				c := seg[j]
				if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' {
					b = append(b, c)
				} else {
					b = append(b, '%', hexUpper[c>>4], hexUpper[c&0xf])
				}
			}
		}
		if i < len(s) {
			b = append(b, '/')
		}
		start = i + 1
	}
	return b
}
