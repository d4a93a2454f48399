package deadletter

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

func msg(i int, size int) sink.Message {
	return sink.Message{ID: fmt.Sprintf("id-%d", i), Topic: "t/x", Received: time.Unix(int64(i), 0).UTC(), Payload: bytes.Repeat([]byte{byte(i)}, size)}
}

func TestPutReadAllSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put([]sink.Message{msg(1, 10), msg(2, 0)}, "too large"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, _ = Open(dir, 1<<20, slog.New(slog.DiscardHandler))
	s.Put([]sink.Message{msg(3, 5)}, "invalid")
	s.Close()
	got, err := ReadAll(dir)
	if err != nil || len(got) != 3 {
		t.Fatalf("%d entries, %v", len(got), err)
	}
	p, _ := base64.StdEncoding.DecodeString(got[0].PayloadBase64)
	if got[0].ID != "id-1" || got[0].Reason != "too large" || !bytes.Equal(p, msg(1, 10).Payload) || got[2].Reason != "invalid" {
		t.Errorf("entries %+v", got)
	}
}

func TestBoundedEvictsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20, slog.New(slog.DiscardHandler)) // 128KiB files
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 200; i++ {
		if err := s.Put([]sink.Message{msg(i, 10000)}, "r"); err != nil {
			t.Fatal(err)
		}
	}
	stored, bytes, lost := s.Stats()
	if stored != 200 || lost == 0 || bytes > 1<<20 {
		t.Fatalf("stored %d bytes %d lost %d", stored, bytes, lost)
	}
	left, _ := ReadAll(dir)
	if uint64(len(left))+lost != 200 || left[len(left)-1].ID != "id-199" {
		t.Fatalf("left %d + lost %d != 200", len(left), lost)
	}
}
