package objstore

import (
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/sink"
)

// A message received before the clock was set is named by the time of
// sending, never by 1970, and marked in its line and metadata; a trusted
// one keeps its receive time and no mark.
func TestUntrustedReceiveTime(t *testing.T) {
	early := clock.Unsynchronised(42 * time.Second)
	good := time.Date(2027, 2, 3, 4, 5, 6, 0, time.UTC)
	batch := []sink.Message{
		{ID: "e-1", Topic: "t", Received: early, Payload: []byte(`{"a":1}`)},
		{ID: "e-2", Topic: "t", Received: good, Payload: []byte("x")},
	}
	for _, mode := range []Mode{Batch, PerMessage} {
		before := time.Now().UTC().Truncate(time.Hour)
		objs, err := Options{Mode: mode, Device: "d"}.Build(batch)
		after := time.Now().UTC()
		if err != nil {
			t.Fatal(err)
		}
		first := objs[0].Key
		if strings.Contains(first, "1970") {
			t.Errorf("%s: key %s names 1970", mode, first)
		}
		ok := false
		for h := before; !h.After(after); h = h.Add(time.Hour) {
			ok = ok || strings.HasPrefix(first, "d/"+h.Format("2006/01/02/15")+"/")
		}
		if !ok {
			t.Errorf("%s: key %s is not dated by the time of sending (%s)", mode, first, before.Format("2006/01/02/15"))
		}
		switch mode {
		case Batch:
			lines, err := Decode(objs[0].Body, "")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(objs[0].Body), `"received":"1970-01-01T00:00:42Z","clock":"unsynchronised","device":"d"`) {
				t.Errorf("line: %s", objs[0].Body)
			}
			if !lines[0].ClockUnsynchronised || !lines[0].Received.Equal(early) || lines[1].ClockUnsynchronised {
				t.Errorf("decoded lines: %+v", lines)
			}
			if strings.Count(string(objs[0].Body), `"clock"`) != 1 {
				t.Errorf("a trusted line marked: %s", objs[0].Body)
			}
		case PerMessage:
			if objs[0].Metadata[MetaClock] != ClockUnsynchronised {
				t.Errorf("metadata %v without %s=%s", objs[0].Metadata, MetaClock, ClockUnsynchronised)
			}
			if _, ok := objs[1].Metadata[MetaClock]; ok {
				t.Errorf("a trusted message marked: %v", objs[1].Metadata)
			}
			if want := "d/2027/02/03/04/e-2"; objs[1].Key != want {
				t.Errorf("trusted key %s, want %s", objs[1].Key, want)
			}
			l, err := DecodeMetadata(objs[0].Metadata)
			if err != nil || !l.ClockUnsynchronised || !l.Received.Equal(early) {
				t.Errorf("DecodeMetadata: %+v, %v", l, err)
			}
			l, err = DecodeMetadata(objs[1].Metadata)
			if err != nil || l.ClockUnsynchronised {
				t.Errorf("DecodeMetadata of a trusted one: %+v, %v", l, err)
			}
		}
	}
	if _, err := Decode([]byte(`{"id":"1","topic":"t","received":"1970-01-01T00:00:00Z","clock":"maybe","device":"d","text":""}`+"\n"), ""); err == nil || !strings.Contains(err.Error(), `clock is "maybe"`) {
		t.Errorf("a bad clock field: %v", err)
	}
}
