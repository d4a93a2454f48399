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
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
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

// Info is an entry without its payload: what lists and pages show.
type Info struct {
	ID       string    `json:"id"`
	Topic    string    `json:"topic"`
	Received time.Time `json:"received"`
	DeadAt   time.Time `json:"dead_at"`
	Reason   string    `json:"reason"`
	Size     int       `json:"size"` // of the payload, in bytes
}

// Info is e without its payload.
func (e Entry) Info() Info {
	b64 := e.PayloadBase64
	size := len(b64)/4*3 - (len(b64) - len(strings.TrimRight(b64, "=")))
	return Info{ID: e.ID, Topic: e.Topic, Received: e.Received, DeadAt: e.DeadAt, Reason: e.Reason, Size: size}
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
	// A rewrite that a crash interrupted (Remove) left its old file whole.
	if tmps, _ := filepath.Glob(filepath.Join(dir, "dead-*.ndjson.tmp")); len(tmps) > 0 {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
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
	syncDir(s.dir) // the new name; a lost one only loses an empty file
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
// A last line cut short by a crash mid-write is skipped: its Put did not
// return, so its messages were not taken as dead-lettered.
func ReadAll(dir string) ([]Entry, error) {
	files, err := filepath.Glob(filepath.Join(dir, "dead-*.ndjson"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []Entry
	for _, f := range files {
		es, err := readFile(f)
		out = append(out, es...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// readFile reads one file's entries.
func readFile(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for n := 1; len(data) > 0; n++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // a torn last line
		}
		var e Entry
		if err := json.Unmarshal(data[:i], &e); err != nil {
			return out, fmt.Errorf("%s: line %d: %w", path, n, err)
		}
		out = append(out, e)
		data = data[i+1:]
	}
	return out, nil
}

// Remove deletes the entries for which match is true and returns how many.
// Each file holding one is rewritten without them (a new file, fsynced,
// renamed over the old one), so a crash leaves either file whole.
func (s *Store) Remove(match func(Entry) bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil { // the next Put starts a new file
		s.f.Close()
		s.f = nil
	}
	files, err := s.files()
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, f := range files {
		es, err := readFile(f)
		if err != nil {
			return removed, fmt.Errorf("dead-letter store: %w", err)
		}
		var keep []byte
		n := 0
		for _, e := range es {
			if match(e) {
				n++
				continue
			}
			line, err := json.Marshal(e)
			if err != nil {
				return removed, err
			}
			keep = append(append(keep, line...), '\n')
		}
		if n == 0 {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return removed, err
		}
		if len(keep) == 0 {
			err = os.Remove(f)
		} else {
			err = replaceFile(f, keep)
		}
		if err != nil {
			return removed, fmt.Errorf("dead-letter store: %w", err)
		}
		removed += n
		s.total += int64(len(keep)) - fi.Size()
	}
	if removed > 0 {
		if err := syncDir(s.dir); err != nil {
			return removed, fmt.Errorf("dead-letter store: %w", err)
		}
	}
	return removed, nil
}

// replaceFile writes data to path through a fsynced temporary file.
func replaceFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
