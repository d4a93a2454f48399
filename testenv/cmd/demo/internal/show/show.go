// Package show is what the demo and its read-back helpers share: what
// arrived in an emulator, and how a helper reports it to the demo (one JSON
// line per arrival on stdout).
package show

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/cloud-block/cloud-block/common/objstore"
)

// Arrival is something an emulator received since the last look: an object,
// or a group of messages.
type Arrival struct {
	Label    string   `json:"label"`
	Lines    []string `json:"lines,omitempty"`    // what to print, as stored
	Payloads [][]byte `json:"payloads,omitempty"` // the MQTT payloads it carries
}

// Ready is the line a helper prints once its emulator is set up.
const Ready = `{"ready":true}`

// Emit writes one arrival as a JSON line.
func Emit(w io.Writer, a Arrival) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// Parse reads a line written by Emit; ok is false for any other line (a
// helper's log messages share its output).
func Parse(line []byte) (a Arrival, ok bool) {
	if !bytes.HasPrefix(line, []byte(`{"label":`)) {
		return a, false
	}
	return a, json.Unmarshal(line, &a) == nil
}

// Object decodes an object store's object: an NDJSON batch line by line (the
// common layout of the S3, Blob and GCS destinations), anything else (message
// mode) as one payload.
func Object(label string, body []byte) Arrival {
	lines, err := objstore.Decode(body, objstore.EncodingGzip)
	if err != nil {
		return Arrival{Label: fmt.Sprintf("%s (%d bytes)", label, len(body)), Lines: []string{string(body)}, Payloads: [][]byte{body}}
	}
	a := Arrival{Label: fmt.Sprintf("%s (%s)", label, Plural(len(lines), "message"))}
	raw := body
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		raw = nil // gzip: print the decoded payloads instead of the lines
	}
	for _, l := range lines {
		a.Payloads = append(a.Payloads, l.Payload)
		if raw != nil {
			var line []byte
			line, raw, _ = bytes.Cut(raw, []byte{'\n'})
			a.Lines = append(a.Lines, string(line))
		} else {
			a.Lines = append(a.Lines, string(l.Payload))
		}
	}
	return a
}

// Messages groups messages read back from a queue, a hub or a subscription.
func Messages(label string, bodies [][]byte) Arrival {
	a := Arrival{Label: fmt.Sprintf("%s %s", Plural(len(bodies), "message"), label), Payloads: bodies}
	for _, b := range bodies {
		a.Lines = append(a.Lines, string(b))
	}
	return a
}

// Plural is "1 message", "2 messages".
func Plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
