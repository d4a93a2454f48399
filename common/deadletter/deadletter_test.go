package deadletter

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

// Remove rewrites only what it must: the entries kept survive with their
// fields, the bytes are accounted, and a Put afterwards goes on.
func TestRemoveKeepsTheRest(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Put([]sink.Message{msg(1, 10), msg(2, 20), msg(3, 30)}, "refused")
	n, err := s.Remove(func(e Entry) bool { return e.ID == "id-2" })
	if err != nil || n != 1 {
		t.Fatalf("Remove: %d, %v", n, err)
	}
	s.Put([]sink.Message{msg(4, 5)}, "later")
	es, err := ReadAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ID)
	}
	if fmt.Sprint(ids) != "[id-1 id-3 id-4]" {
		t.Fatalf("after Remove: %v", ids)
	}
	if p, _ := base64.StdEncoding.DecodeString(es[1].PayloadBase64); !bytes.Equal(p, msg(3, 30).Payload) || es[1].Reason != "refused" {
		t.Errorf("a kept entry changed: %+v", es[1])
	}
	var onDisk int64
	files, _ := s.files()
	for _, f := range files {
		fi, _ := os.Stat(f)
		onDisk += fi.Size()
	}
	if _, b, _ := s.Stats(); b != onDisk {
		t.Errorf("Stats says %d bytes, the files hold %d", b, onDisk)
	}
	if n, _ := s.Remove(func(Entry) bool { return true }); n != 3 {
		t.Errorf("Remove all: %d", n)
	}
	if files, _ := s.files(); len(files) != 0 {
		t.Errorf("files left after removing everything: %v", files)
	}
}

// A last line cut by a crash mid-write is not an entry, and not an error.
func TestTornLastLineSkipped(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, 1<<20, slog.New(slog.DiscardHandler))
	s.Put([]sink.Message{msg(1, 10)}, "refused")
	s.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "dead-*.ndjson"))
	f, _ := os.OpenFile(files[0], os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"id":"id-2","topic":"t`)
	f.Close()
	es, err := ReadAll(dir)
	if err != nil || len(es) != 1 {
		t.Fatalf("ReadAll with a torn last line: %d entries, %v", len(es), err)
	}
}

// Info's size is the payload's, whatever the base64 padding.
func TestInfoSize(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 100} {
		e := Entry{PayloadBase64: base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{'x'}, n))}
		if got := e.Info().Size; got != n {
			t.Errorf("Info().Size of %d bytes = %d", n, got)
		}
	}
}
