// Package deadletter keeps the messages that can never be delivered (the
// destination refuses them, or they are too large for the spool) on disk,
// with the reason, so they survive restarts and can be inspected and
// replayed. It is bounded: past its budget the oldest file is removed and
// the messages in it are counted as lost.
//
// Files are NDJSON, one message a line:
//
//	{"id":"...","topic":"...","received":"RFC3339Nano","dead_at":"RFC3339Nano","reason":"...","payload_base64":"..."}
package deadletter

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Entry is one dead-lettered message as stored.
type Entry struct {
	ID            string    `json:"id"`
	Topic         string    `json:"topic"`
	Received      time.Time `json:"received"`
	DeadAt        time.Time `json:"dead_at"`
	Reason        string    `json:"reason"`
	PayloadBase64 string    `json:"payload_base64"`
}

// Store appends dead messages durably.
type Store struct {
	dir      string
	maxBytes int64
	fileMax  int64
	log      *slog.Logger

	mu    sync.Mutex
	f     *os.File
	size  int64 // of the current file
	total int64 // of all files
	lost  uint64
	count uint64
}

// Open opens (creating) the store in dir, bounded by maxBytes.
func Open(dir string, maxBytes int64, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dead-letter store: %w", err)
	}
	s := &Store{dir: dir, maxBytes: maxBytes, fileMax: max(min(maxBytes/8, 8<<20), 64<<10), log: log}
	files, err := s.files()
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			s.total += fi.Size()
		}
	}
	return s, nil
}

func (s *Store) files() ([]string, error) {
	m, err := filepath.Glob(filepath.Join(s.dir, "dead-*.ndjson"))
	sort.Strings(m)
	return m, err
}

// Put stores msgs with reason and returns once they are on disk.
func (s *Store) Put(msgs []sink.Message, reason string) error {
	now := time.Now().UTC()
	var buf []byte
	for _, m := range msgs {
		line, err := json.Marshal(Entry{ID: m.ID, Topic: m.Topic, Received: m.Received, DeadAt: now, Reason: reason,
			PayloadBase64: base64.StdEncoding.EncodeToString(m.Payload)})
		if err != nil {
			return err
		}
		buf = append(append(buf, line...), '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil || s.size+int64(len(buf)) > s.fileMax {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	for s.total+int64(len(buf)) > s.maxBytes {
		if !s.dropOldest() {
			break
		}
	}
	if _, err := s.f.Write(buf); err != nil {
		return fmt.Errorf("dead-letter store: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("dead-letter store: %w", err)
	}
	s.size += int64(len(buf))
	s.total += int64(len(buf))
	s.count += uint64(len(msgs))
	return nil
}

func (s *Store) rotate() error {
	if s.f != nil {
		s.f.Close()
	}
	name := filepath.Join(s.dir, fmt.Sprintf("dead-%020d.ndjson", time.Now().UnixNano()))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("dead-letter store: %w", err)
	}
	s.f, s.size = f, 0
	d, err := os.Open(s.dir)
	if err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// dropOldest removes the oldest file other than the current one.
func (s *Store) dropOldest() bool {
	files, _ := s.files()
	if len(files) < 2 {
		return false
	}
	old := files[0]
	n, _ := countLines(old)
	fi, err := os.Stat(old)
	if err != nil || os.Remove(old) != nil {
		return false
	}
	s.total -= fi.Size()
	s.lost += n
	s.log.Warn("dead-letter store over its budget: removed the oldest file", "file", filepath.Base(old), "messages", n)
	return true
}

func countLines(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n uint64
	r := bufio.NewReader(f)
	for {
		_, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// Stats returns the messages stored since start, the bytes on disk, and the
// messages removed to stay within budget.
func (s *Store) Stats() (stored uint64, bytes int64, lost uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.total, s.lost
}

// ReadAll returns every entry in the store, oldest first (tools and tests).
func ReadAll(dir string) ([]Entry, error) {
	files, err := filepath.Glob(filepath.Join(dir, "dead-*.ndjson"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []Entry
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(fh)
		for {
			var e Entry
			if err := dec.Decode(&e); err == io.EOF {
				break
			} else if err != nil {
				fh.Close()
				return out, fmt.Errorf("%s: %w", f, err)
			}
			out = append(out, e)
		}
		fh.Close()
	}
	return out, nil
}

// Close closes the current file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
