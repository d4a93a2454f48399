package run

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/spool"
)

// An export is refused whole when it was cut short or altered: import
// checks it before it spools anything.
func TestExportFormatRefusesDamage(t *testing.T) {
	var buf bytes.Buffer
	ew := newExportWriter(&buf)
	now := time.Unix(1700000000, 0).UTC()
	ew.header(exportLine{Format: exportFormat, Version: 1, Service: "file", Device: "d", ExportedAt: &now})
	for i, p := range []string{"one", "two", "\x00\xff"} {
		ew.message(messageLine(spool.Record{ID: "ep-00000000000" + string(rune('1'+i)), Entry: spool.Entry{Topic: "t", Received: now, Payload: []byte(p)}}))
	}
	ew.end()
	good := buf.String()
	read := func(text string) (int, error) {
		er, err := newExportReader(strings.NewReader(text))
		if err != nil {
			return 0, err
		}
		n := 0
		for {
			e, err := er.next()
			if err == io.EOF {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			if n == 2 && !bytes.Equal(e.Payload, []byte("\x00\xff")) {
				t.Errorf("binary payload read back as %q", e.Payload)
			}
			n++
		}
	}
	if n, err := read(good); err != nil || n != 3 {
		t.Fatalf("a good export: %d messages, %v", n, err)
	}
	lines := strings.SplitAfter(good, "\n")
	bad := map[string]string{
		"cut short":      strings.Join(lines[:3], ""),
		"a line lost":    lines[0] + lines[1] + lines[3] + lines[4],
		"altered":        strings.Replace(good, `"topic":"t"`, `"topic":"u"`, 1),
		"data after":     good + lines[1],
		"not an export":  `{"hello":1}` + "\n",
		"future version": strings.Replace(good, `"version":1`, `"version":2`, 1),
		"invalid id":     strings.Replace(good, `"id":"ep-000000000001"`, `"id":"has space"`, 1),
		"empty":          "",
	}
	for name, text := range bad {
		if _, err := read(text); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
