// Package filesink is the destination used by tests and benchmarks: it
// appends every delivered message to a local NDJSON file (fsync'd per
// batch), so the pipeline's promises can be checked end to end without a
// cloud. It can be told to fail, to model outages and refusals.
package filesink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Vars are the test destination's variables.
var Vars = []config.Var{
	{Name: "FILE_SINK_PATH", Required: true, Doc: "File that delivered messages are appended to, one JSON line each."},
	{Name: "FILE_SINK_FAIL_FILE", Doc: "While this file exists every send fails (a retryable outage)."},
	{Name: "FILE_SINK_REJECT_PREFIX", Doc: "Messages whose payload starts with this are refused permanently (dead-lettered)."},
	{Name: "FILE_SINK_MAX_MESSAGE_BYTES", Default: "0", Doc: "Largest payload accepted (0 = no limit): larger ones are dead-lettered unsent."},
	{Name: "FILE_SINK_MAX_BATCH_MESSAGES", Default: "0", Doc: "The destination's own batch limit (0 = none)."},
	{Name: "FILE_SINK_FSYNC", Default: "true", Doc: "fsync each batch, as a durable destination would."},
	{Name: "FILE_SINK_STABLE_BATCHES", Default: "false", Doc: "Ask for exact resends after a crash, as object stores do."},
}

// Service is the test destination's run.Service.
var Service = run.Service{Name: "file", Vars: Vars, New: New}

// Line is one delivered message as written.
type Line struct {
	ID       string    `json:"id"`
	Topic    string    `json:"topic"`
	Received time.Time `json:"received"`
	Payload  string    `json:"payload_base64"`
	Batch    int64     `json:"batch"`
}

// Sink appends to a file.
type Sink struct {
	path, failFile string
	reject         []byte
	limits         sink.Limits
	fsync          bool

	mu    sync.Mutex
	f     *os.File
	buf   []byte
	batch int64
}

// New reads the variables.
func New(l *config.Loader, _ run.Info) (sink.Sink, error) {
	s := &Sink{
		path:     l.String("FILE_SINK_PATH"),
		failFile: l.String("FILE_SINK_FAIL_FILE"),
		reject:   []byte(l.String("FILE_SINK_REJECT_PREFIX")),
		fsync:    l.Bool("FILE_SINK_FSYNC"),
	}
	s.limits.MaxMessageBytes = int(l.Bytes("FILE_SINK_MAX_MESSAGE_BYTES", 0, 1<<30))
	s.limits.MaxBatchMessages = l.Int("FILE_SINK_MAX_BATCH_MESSAGES", 0, 1_000_000)
	s.limits.StableBatches = l.Bool("FILE_SINK_STABLE_BATCHES")
	return s, nil
}

var errOutage = errors.New("file sink: simulated outage (FILE_SINK_FAIL_FILE exists)")

func (s *Sink) down() bool {
	if s.failFile == "" {
		return false
	}
	_, err := os.Stat(s.failFile)
	return err == nil
}

// Connect opens the file, ending a line a crash may have cut short.
func (s *Sink) Connect(ctx context.Context) error {
	if s.down() {
		return errOutage
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			f.Write([]byte("\n"))
		}
	}
	s.f = f
	s.batch = time.Now().UnixNano()
	return nil
}

// Limits are the configured ones.
func (s *Sink) Limits() sink.Limits { return s.limits }

// WriteBatch appends the batch as one write (and fsync).
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.down() {
		return errOutage
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var be sink.BatchError
	s.buf = s.buf[:0]
	s.batch++
	for i, m := range batch {
		if s.limits.MaxMessageBytes > 0 && len(m.Payload) > s.limits.MaxMessageBytes {
			be.Fail(i, sink.Permanent(fmt.Errorf("file sink: payload of %d bytes over the limit of %d", len(m.Payload), s.limits.MaxMessageBytes)))
			continue
		}
		if len(s.reject) > 0 && bytes.HasPrefix(m.Payload, s.reject) {
			be.Fail(i, sink.Permanent(fmt.Errorf("file sink: payload refused (starts with %q)", s.reject)))
			continue
		}
		line, err := json.Marshal(Line{ID: m.ID, Topic: m.Topic, Received: m.Received, Payload: base64.StdEncoding.EncodeToString(m.Payload), Batch: s.batch})
		if err != nil {
			return err
		}
		s.buf = append(append(s.buf, line...), '\n')
	}
	if _, err := s.f.Write(s.buf); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if s.fsync {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("file sink: %w", err)
		}
	}
	return be.Err()
}

// Close closes the file; idempotent.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// Read returns every complete line delivered to path so far.
func Read(path string) ([]Line, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Line
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		b, err := r.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			var l Line
			if json.Unmarshal(b, &l) == nil {
				out = append(out, l)
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// Bytes decodes a line's payload.
func (l Line) Bytes() []byte {
	b, _ := base64.StdEncoding.DecodeString(l.Payload)
	return b
}
