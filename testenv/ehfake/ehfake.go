// Package ehfake runs the project's fake Azure Event Hubs (testenv/node/eventhubs-fake.js,
// an AMQP 1.0 server on the npm library rhea) as a Node process for tests that use the
// real azeventhubs SDK.
//
// The fake serves one event hub on 127.0.0.1 with a free port and accepts any
// credentials. Events are kept in a file in the test's temp dir, so Stop followed by
// Restart simulates an outage without losing what was stored.
//
// Node 20 and the npm packages are needed: `npm ci --prefix testenv/node` (the Makefile
// does it). Set TESTENV_NODE_DIR to use another checkout of testenv/node.
package ehfake

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// DefaultMaxMessageSize is the largest message (a whole batch) the fake accepts unless
// Options say otherwise; the SDK sizes its batches from it. It matches Event Hubs Standard.
const DefaultMaxMessageSize = 1 << 20

// Options configure the fake; the zero value is valid.
type Options struct {
	Hub            string // event hub name; default "hub"
	Partitions     int    // default 4
	MaxMessageSize int    // bytes; default DefaultMaxMessageSize
}

// Server is a running (or stopped) fake Event Hubs.
type Server struct {
	Hub            string
	Partitions     int
	MaxMessageSize int
	Port           int

	t       testing.TB
	spec    procs.Spec
	logDir  string
	mu      sync.Mutex
	proc    *procs.Proc   // nil while stopped
	started []*procs.Proc // every run, for the logs of a failed test
}

// Start launches the fake, waits until it accepts connections and stops it when the
// test ends. It fails the test if Node or the npm packages are missing.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Hub == "" {
		opts.Hub = "hub"
	}
	if opts.Partitions == 0 {
		opts.Partitions = 4
	}
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	dir, err := nodeDir()
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("ehfake: node (Node.js 20) not found in PATH: %v", err)
	}
	logDir := t.TempDir()
	s := &Server{
		Hub:            opts.Hub,
		Partitions:     opts.Partitions,
		MaxMessageSize: opts.MaxMessageSize,
		Port:           procs.FreePort(t),
		t:              t,
		logDir:         logDir,
	}
	s.spec = procs.Spec{
		Name: "eventhubs-fake",
		Path: node,
		Args: []string{
			filepath.Join(dir, "eventhubs-fake.js"),
			"--host", "127.0.0.1",
			"--port", strconv.Itoa(s.Port),
			"--hub", s.Hub,
			"--partitions", strconv.Itoa(s.Partitions),
			"--max-message-size", strconv.Itoa(s.MaxMessageSize),
			"--data", filepath.Join(logDir, "events.jsonl"),
		},
		Dir:     dir,
		Ready:   procs.TCPReady(s.Addr()),
		Timeout: 20 * time.Second,
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, p := range s.started {
				procs.DumpLog(t, p)
			}
		}
	})
	if err := s.run(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Addr is host:port of the AMQP listener.
func (s *Server) Addr() string { return procs.Addr(s.Port) }

// ConnectionString is what the SDK's NewProducerClientFromConnectionString and
// NewConsumerClientFromConnectionString take (with an empty event hub argument).
func (s *Server) ConnectionString() string {
	return fmt.Sprintf("Endpoint=sb://%s;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=%s;UseDevelopmentEmulator=true",
		s.Addr(), s.Hub)
}

// Stop ends the fake (SIGTERM, then SIGKILL); stored events survive for Restart.
// Stopping a stopped fake does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.Stop()
	}
}

// Restart starts the fake again on the same port with the events it had stored,
// stopping it first if it is running. Clients reconnect on their own.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.run(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *Server) run() error {
	p, err := procs.StartNoCleanup(s.spec, s.logDir)
	if err != nil {
		return fmt.Errorf("ehfake: %w", err)
	}
	s.mu.Lock()
	s.proc = p
	s.started = append(s.started, p)
	s.mu.Unlock()
	return nil
}

// nodeDir finds testenv/node: TESTENV_NODE_DIR, else next to this package's source.
func nodeDir() (string, error) {
	dir := os.Getenv("TESTENV_NODE_DIR")
	if dir == "" {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return "", errors.New("ehfake: cannot locate testenv/node; set TESTENV_NODE_DIR")
		}
		dir = filepath.Join(filepath.Dir(file), "..", "node")
	}
	return dir, checkNodeDir(dir)
}

func checkNodeDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "eventhubs-fake.js")); err != nil {
		return fmt.Errorf("ehfake: %s has no eventhubs-fake.js (set TESTENV_NODE_DIR to testenv/node): %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "rhea", "package.json")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ehfake: npm packages missing in %s: run `npm ci --prefix testenv/node` from the repository root", dir)
	} else if err != nil {
		return fmt.Errorf("ehfake: %w", err)
	}
	return nil
}

// DecodeStored decodes one line of the fake's data file (--data): the AMQP
// message the client sent, as the fake stored it before acknowledging.
func DecodeStored(line []byte) (*amqp.Message, error) {
	var rec struct {
		Raw string `json:"raw"`
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return nil, fmt.Errorf("event hub data file: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(rec.Raw)
	if err != nil {
		return nil, fmt.Errorf("event hub data file: %w", err)
	}
	var m amqp.Message
	if err := m.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("decoding an event: %w", err)
	}
	return &m, nil
}
