package run

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/common/deadletter"
	"github.com/cloud-block/cloud-block/common/spool"
)

// The operator's commands (deadletter, spool) act on a spool that one
// process owns at a time (spool.Open holds a flock). While the service
// runs, they ask it over a Unix socket in BUFFER_DIR (admin.sock, mode
// 0600: whoever may read the buffer may use it, nobody else; never on the
// network). While it is stopped, the command opens the spool itself and
// serves the same handler to itself in memory. One implementation, two
// ways in.

// adminSocketName is the socket's name in BUFFER_DIR.
const adminSocketName = "admin.sock"

// maxSocketPath is the longest path a Unix socket may have (sun_path).
const maxSocketPath = 107

// admin performs the operations on an open spool and dead-letter store.
type admin struct {
	sp       *spool.Spool
	dead     *deadletter.Store
	deadDir  string
	opt      spool.Options
	service  string
	device   string
	log      *slog.Logger
	running  bool          // the service delivers: a full spool drains by itself
	fullWait time.Duration // how long a full spool may stall a replay or import before it gives up
	mu       sync.Mutex    // one replay, purge or import at a time
}

// chunk bounds what a crash in the middle of a replay or import can leave
// both spooled and still pending: entries are removed from the dead-letter
// store (or counted imported) a chunk at a time, once the chunk is safe.
const (
	chunkMessages = 1000
	chunkBytes    = 8 << 20
)

// errSpoolFull: the spool stayed full while the command waited for room.
var errSpoolFull = errors.New("the spool is full")

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /deadletter/replay", a.replay)
	mux.HandleFunc("POST /deadletter/purge", a.purge)
	mux.HandleFunc("GET /spool/stats", a.stats)
	mux.HandleFunc("GET /spool/peek", a.peek)
	mux.HandleFunc("GET /spool/export", a.export)
	mux.HandleFunc("POST /spool/import", a.importBacklog)
	return mux
}

// selection names dead letters: some ids, or all of them.
type selection struct {
	IDs []string `json:"ids,omitempty"`
	All bool     `json:"all,omitempty"`
}

func (sel selection) match() func(deadletter.Entry) bool {
	if sel.All {
		return func(deadletter.Entry) bool { return true }
	}
	want := map[string]bool{}
	for _, id := range sel.IDs {
		want[id] = true
	}
	return func(e deadletter.Entry) bool { return want[e.ID] }
}

// opResult is what replay, purge and import answer.
type opResult struct {
	Done    int       `json:"done"`              // replayed, purged or imported
	Skipped []skipped `json:"skipped,omitempty"` // replay: left in the store, and why
	Missing []string  `json:"missing,omitempty"` // ids asked for that are not in the store
	Error   string    `json:"error,omitempty"`   // why it stopped before the end
}

type skipped struct {
	ID  string `json:"id"`
	Why string `json:"why"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func decodeSelection(w http.ResponseWriter, r *http.Request) (selection, bool) {
	var sel selection
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&sel); err != nil || (!sel.All && len(sel.IDs) == 0) {
		writeJSON(w, http.StatusBadRequest, opResult{Error: "want {\"ids\": [...]} or {\"all\": true}"})
		return sel, false
	}
	return sel, true
}

// missingIDs lists the ids of sel that no entry has.
func missingIDs(sel selection, es []deadletter.Entry) []string {
	if sel.All {
		return nil
	}
	have := map[string]bool{}
	for _, e := range es {
		have[e.ID] = true
	}
	var out []string
	for _, id := range sel.IDs {
		if !have[id] {
			out = append(out, id)
		}
	}
	return out
}

// replay sends the selected dead letters back through the spool under
// their ids, a chunk at a time: each chunk is appended, waited for until
// it is safe (written, or delivered), and only then removed from the
// store. A crash in between leaves a chunk in both places: sent again, not
// lost. An entry that fails again is dead-lettered again, with the new
// reason, as a new entry that this removal does not touch (it removes the
// entries it read, by id and time of death).
func (a *admin) replay(w http.ResponseWriter, r *http.Request) {
	sel, ok := decodeSelection(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	all, err := deadletter.ReadAll(a.deadDir)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, opResult{Error: err.Error()})
		return
	}
	match := sel.match()
	res := opResult{Missing: missingIDs(sel, all)}
	var chunk []deadletter.Entry
	var chunkSize int
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		entries := make([]spool.Entry, 0, len(chunk))
		for _, e := range chunk {
			p, _ := base64.StdEncoding.DecodeString(e.PayloadBase64)
			entries = append(entries, spool.Entry{ID: e.ID, Topic: e.Topic, Received: e.Received, Payload: p})
		}
		if err := a.appendSafe(r.Context(), entries); err != nil {
			return err
		}
		type key struct {
			id string
			at time.Time
		}
		done := map[key]bool{}
		for _, e := range chunk {
			done[key{e.ID, e.DeadAt}] = true
		}
		n, err := a.dead.Remove(func(e deadletter.Entry) bool { return done[key{e.ID, e.DeadAt}] })
		res.Done += n
		chunk, chunkSize = chunk[:0], 0
		return err
	}
	for _, e := range all {
		if !match(e) {
			continue
		}
		p, err := base64.StdEncoding.DecodeString(e.PayloadBase64)
		switch {
		case err != nil:
			res.Skipped = append(res.Skipped, skipped{e.ID, "its payload is not valid base64 in the store: " + err.Error()})
			continue
		case !spool.ValidID(e.ID):
			res.Skipped = append(res.Skipped, skipped{e.ID, "not an id the spool can keep"})
			continue
		case len(e.Topic)+1+len(e.ID)+len(p) > a.sp.MaxRecordPayload():
			res.Skipped = append(res.Skipped, skipped{e.ID, fmt.Sprintf(
				"%d bytes: larger than the spool's record limit of %d bytes (raise BUFFER_MAX_BYTES, a quarter of which a message may take)",
				len(p), a.sp.MaxRecordPayload())})
			continue
		}
		chunk = append(chunk, e)
		chunkSize += len(p)
		if len(chunk) >= chunkMessages || chunkSize >= chunkBytes {
			if err := flush(); err != nil {
				res.Error = err.Error()
				break
			}
		}
	}
	if res.Error == "" {
		if err := flush(); err != nil {
			res.Error = err.Error()
		}
	}
	a.log.Info("dead letters replayed", "replayed", res.Done, "skipped", len(res.Skipped), "err", res.Error)
	writeJSON(w, status(res), res)
}

func status(res opResult) int {
	if res.Error != "" {
		return http.StatusInternalServerError
	}
	return http.StatusOK
}

// appendSafe appends entries and returns once every one is safe. While
// the spool is full it waits for the service to deliver; with no service
// delivering (the command opened the spool itself), or past fullWait, it
// gives up: what was appended stays spooled.
func (a *admin) appendSafe(ctx context.Context, entries []spool.Entry) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(len(entries))
	appended := make(chan error, 1)
	go func() {
		defer close(appended)
		for i, e := range entries {
			if err := a.sp.Append(ctx, e, func(uint64) { wg.Done() }); err != nil {
				for range entries[i:] {
					wg.Done()
				}
				appended <- err
				return
			}
		}
	}()
	safe := make(chan struct{})
	go func() { wg.Wait(); close(safe) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var fullSince time.Time
	for {
		select {
		case <-safe:
			if err := <-appended; err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if !a.sp.Stats().Full {
				fullSince = time.Time{}
				continue
			}
			if fullSince.IsZero() {
				fullSince = time.Now()
			}
			if time.Since(fullSince) >= a.fullWait {
				if a.running {
					return fmt.Errorf("%w for %s (BUFFER_MAX_BYTES=%d): the destination is not taking the backlog; try again once it drains", errSpoolFull, a.fullWait, a.opt.MaxBytes)
				}
				return fmt.Errorf("%w (BUFFER_MAX_BYTES=%d) and nothing delivers while the service is stopped: start it, let the backlog drain, and run this again", errSpoolFull, a.opt.MaxBytes)
			}
		}
	}
}

func (a *admin) purge(w http.ResponseWriter, r *http.Request) {
	sel, ok := decodeSelection(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	all, err := deadletter.ReadAll(a.deadDir)
	res := opResult{Missing: missingIDs(sel, all)}
	if err == nil {
		res.Done, err = a.dead.Remove(sel.match())
	}
	if err != nil {
		res.Error = err.Error()
	}
	a.log.Info("dead letters purged", "purged", res.Done, "err", res.Error)
	writeJSON(w, status(res), res)
}

// spoolStats is what `spool stats` shows.
type spoolStats struct {
	Running          bool                `json:"service_running"`
	Dir              string              `json:"buffer_dir"`
	Undelivered      uint64              `json:"undelivered"`
	Held             int                 `json:"held_in_memory"`
	Bytes            int64               `json:"bytes"`
	MaxBytes         int64               `json:"max_bytes"`
	Full             bool                `json:"full"`
	Oldest           *time.Time          `json:"oldest_received,omitempty"`
	OldestID         string              `json:"oldest_id,omitempty"`
	OldestAgeSeconds float64             `json:"oldest_age_seconds,omitempty"`
	Segments         []spool.SegmentInfo `json:"segments"`
	DamagedBytes     int64               `json:"damaged_bytes_at_start"`
	DamagedMessages  uint64              `json:"damaged_messages_at_start"`
	SetAside         []string            `json:"set_aside,omitempty"`
	WriteError       string              `json:"write_error,omitempty"`
	DeadLetters      int                 `json:"dead_letters"`
	DeadLetterBytes  int64               `json:"dead_letter_bytes"`
}

func (a *admin) stats(w http.ResponseWriter, r *http.Request) {
	in, err := a.sp.Inspect()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, opResult{Error: err.Error()})
		return
	}
	st := a.sp.Stats()
	out := spoolStats{Running: a.running, Dir: a.opt.Dir, Undelivered: in.Undelivered, Held: in.Held,
		Bytes: st.Bytes, MaxBytes: a.opt.MaxBytes, Full: st.Full, Segments: in.Segments,
		DamagedBytes: st.DamagedBytes, DamagedMessages: st.DamagedMessages, WriteError: st.Failing}
	if out.Segments == nil {
		out.Segments = []spool.SegmentInfo{}
	}
	if !in.Oldest.IsZero() {
		o := in.Oldest
		out.Oldest, out.OldestID, out.OldestAgeSeconds = &o, in.OldestID, time.Since(o).Seconds()
	}
	aside, _ := filepath.Glob(filepath.Join(a.opt.Dir, "corrupt", "*"))
	for _, f := range aside {
		out.SetAside = append(out.SetAside, filepath.Base(f))
	}
	dl, _ := deadletter.ReadAll(a.deadDir)
	out.DeadLetters = len(dl)
	_, out.DeadLetterBytes, _ = a.dead.Stats()
	writeJSON(w, http.StatusOK, out)
}

// The export format: NDJSON, a header line, one line a message, and an end
// line with the count and a SHA-256 of the message lines, so that a file
// cut short or altered on its way is refused before anything is imported.
const exportFormat = "cloud-block-spool-export"

type exportLine struct {
	// header
	Format     string     `json:"format,omitempty"`
	Version    int        `json:"version,omitempty"`
	Service    string     `json:"service,omitempty"`
	Device     string     `json:"device,omitempty"`
	ExportedAt *time.Time `json:"exported_at,omitempty"`
	// message
	ID            string     `json:"id,omitempty"`
	Topic         *string    `json:"topic,omitempty"`
	Received      *time.Time `json:"received,omitempty"`
	PayloadBase64 *string    `json:"payload_base64,omitempty"`
	// end
	End      bool   `json:"end,omitempty"`
	Messages *int   `json:"messages,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	// peek: why it stopped early
	Error string `json:"error,omitempty"`
}

func messageLine(rec spool.Record) exportLine {
	p := base64.StdEncoding.EncodeToString(rec.Payload)
	t, topic := rec.Received, rec.Topic
	return exportLine{ID: rec.ID, Topic: &topic, Received: &t, PayloadBase64: &p}
}

// peek answers the first n undelivered messages, one exportLine a line.
func (a *admin) peek(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.Atoi(r.URL.Query().Get("n"))
	if err != nil || n < 1 {
		writeJSON(w, http.StatusBadRequest, opResult{Error: "want n, a number of messages, 1 or more"})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	err = a.sp.Undelivered(func(rec spool.Record) bool {
		n--
		return enc.Encode(messageLine(rec)) == nil && n > 0
	})
	if err != nil {
		enc.Encode(exportLine{Error: err.Error()})
	}
}

// export streams the undelivered backlog in the export format.
func (a *admin) export(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	now := time.Now().UTC()
	ew := newExportWriter(w)
	if err := ew.header(exportLine{Format: exportFormat, Version: 1, Service: a.service, Device: a.device, ExportedAt: &now}); err != nil {
		return
	}
	var werr error
	err := a.sp.Undelivered(func(rec spool.Record) bool {
		werr = ew.message(messageLine(rec))
		return werr == nil
	})
	if err != nil || werr != nil {
		// No end line: the file is refused on import as cut short.
		a.log.Warn("spool export stopped", "err", errors.Join(err, werr))
		return
	}
	ew.end()
	a.log.Info("spool exported", "messages", ew.n)
}

type exportWriter struct {
	w   io.Writer
	sum hash.Hash
	n   int
}

func newExportWriter(w io.Writer) *exportWriter { return &exportWriter{w: w, sum: sha256.New()} }

func (e *exportWriter) line(l exportLine, summed bool) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if summed {
		e.sum.Write(b)
	}
	_, err = e.w.Write(b)
	return err
}

func (e *exportWriter) header(l exportLine) error { return e.line(l, false) }
func (e *exportWriter) message(l exportLine) error {
	e.n++
	return e.line(l, true)
}
func (e *exportWriter) end() error {
	n := e.n
	return e.line(exportLine{End: true, Messages: &n, SHA256: hex.EncodeToString(e.sum.Sum(nil))}, false)
}

// exportReader reads the export format, checking every line, and the end
// line against what it read.
type exportReader struct {
	r      *bufio.Reader
	sum    hash.Hash
	n      int
	line   int
	Header exportLine
}

func newExportReader(r io.Reader) (*exportReader, error) {
	er := &exportReader{r: bufio.NewReaderSize(r, 1<<20), sum: sha256.New()}
	b, err := er.readLine()
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &er.Header); err != nil || er.Header.Format != exportFormat {
		return nil, fmt.Errorf("line 1: not a cloud-block spool export (want a header with \"format\":%q)", exportFormat)
	}
	if er.Header.Version != 1 {
		return nil, fmt.Errorf("line 1: export format version %d: this build reads version 1", er.Header.Version)
	}
	return er, nil
}

func (er *exportReader) readLine() ([]byte, error) {
	er.line++
	b, err := er.r.ReadBytes('\n')
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: the file ends without its end line: cut short", er.line)
	}
	return b, err
}

// next returns the next message, or io.EOF after a valid end line.
func (er *exportReader) next() (spool.Entry, error) {
	b, err := er.readLine()
	if err != nil {
		return spool.Entry{}, err
	}
	var l exportLine
	if err := json.Unmarshal(b, &l); err != nil {
		return spool.Entry{}, fmt.Errorf("line %d: %w", er.line, err)
	}
	if l.End {
		switch {
		case l.Messages == nil || *l.Messages != er.n:
			return spool.Entry{}, fmt.Errorf("line %d: the end line counts %v messages, the file has %d", er.line, l.Messages, er.n)
		case l.SHA256 != hex.EncodeToString(er.sum.Sum(nil)):
			return spool.Entry{}, fmt.Errorf("line %d: the messages' SHA-256 does not match the end line's: the file was altered", er.line)
		}
		if _, err := er.r.ReadByte(); err != io.EOF {
			return spool.Entry{}, fmt.Errorf("line %d: data after the end line", er.line+1)
		}
		return spool.Entry{}, io.EOF
	}
	er.sum.Write(b)
	er.n++
	if !spool.ValidID(l.ID) || l.Topic == nil || l.Received == nil || l.PayloadBase64 == nil {
		return spool.Entry{}, fmt.Errorf("line %d: want a message with a valid id, topic, received and payload_base64", er.line)
	}
	p, err := base64.StdEncoding.DecodeString(*l.PayloadBase64)
	if err != nil {
		return spool.Entry{}, fmt.Errorf("line %d: payload_base64: %w", er.line, err)
	}
	return spool.Entry{ID: l.ID, Topic: *l.Topic, Received: *l.Received, Payload: p}, nil
}

// importBacklog appends the messages of an export under their ids, a chunk
// at a time, each chunk once safe. The command checks the whole file before
// it sends it; this checks it again as it reads.
func (a *admin) importBacklog(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var res opResult
	er, err := newExportReader(r.Body)
	if err != nil {
		res.Error = err.Error()
		writeJSON(w, http.StatusBadRequest, res)
		return
	}
	var chunk []spool.Entry
	size := 0
	for {
		e, err := er.next()
		if err == nil {
			if len(e.Topic)+len(e.Payload)+len(e.ID)+1 > a.sp.MaxRecordPayload() {
				err = fmt.Errorf("line %d: message %s of %d bytes is larger than this spool's record limit of %d bytes (raise BUFFER_MAX_BYTES)",
					er.line, e.ID, len(e.Payload), a.sp.MaxRecordPayload())
			} else {
				chunk = append(chunk, e)
				size += len(e.Payload)
			}
		}
		if err != nil || len(chunk) >= chunkMessages || size >= chunkBytes {
			if ferr := a.appendSafe(r.Context(), chunk); ferr != nil {
				res.Error = ferr.Error()
				break
			}
			res.Done += len(chunk)
			chunk, size = chunk[:0], 0
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			res.Error = err.Error()
			break
		}
	}
	a.log.Info("spool imported", "messages", res.Done, "from_device", er.Header.Device, "err", res.Error)
	writeJSON(w, status(res), res)
}

// serveAdmin listens on BUFFER_DIR/admin.sock for the operator's commands
// while the service runs, and returns what stops it.
func serveAdmin(a *admin, log *slog.Logger) func() {
	path := filepath.Join(a.opt.Dir, adminSocketName)
	if len(path) > maxSocketPath {
		log.Warn("no admin socket: its path is too long for a Unix socket; the deadletter and spool commands need the service stopped",
			"path", path, "max", maxSocketPath)
		return func() {}
	}
	os.Remove(path) // left by a process that died: this one holds the spool's lock
	ln, err := net.Listen("unix", path)
	if err != nil {
		log.Warn("no admin socket; the deadletter and spool commands need the service stopped", "path", path, "err", err)
		return func() {}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		log.Warn("no admin socket: cannot restrict it to this user", "path", path, "err", err)
		return func() {}
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			os.Remove(path)
		})
	}
}
