package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}()

// syncBuffer is the demo's output, written by its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoS3 runs `make demo`'s default for a few seconds: data must arrive
// in the emulator, and the stop must leave nothing undelivered or lost.
func TestDemoS3(t *testing.T) {
	if _, err := mosquittoPath(); err != nil {
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("builds and runs the block")
	}
	// Long enough for a cold build of the block on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, config{Service: "aws-s3", Interval: 100 * time.Millisecond, Every: time.Second,
			Root: repoRoot, Work: t.TempDir()}, &out)
	}()
	// Stop (as Ctrl-C would) a few seconds after the first data.
	for !strings.Contains(out.String(), "first data in the emulator") {
		select {
		case err := <-done:
			t.Fatalf("the demo ended before data arrived: %v\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(3 * time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	log := out.String()
	m := regexp.MustCompile(`sensor published (\d+) readings .*block delivered (\d+) of the (\d+) it received \(0 left in its buffer\); the emulator holds (\d+) distinct readings \(0 duplicates\)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no clean stop line:\n%s", log)
	}
	if m[1] != m[2] || m[2] != m[3] || m[3] != m[4] {
		t.Errorf("published %s, delivered %s of %s received, emulator holds %s: want all equal\n%s", m[1], m[2], m[3], m[4], log)
	}
}

func TestDemoRefusesUnknownAndMissingServices(t *testing.T) {
	err := run(context.Background(), config{Service: "aws-s4", Root: repoRoot}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "unknown service") {
		t.Errorf("unknown service: %v", err)
	}
	// A checkout where the service has not landed yet says so.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "services", "aws-s3"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), config{Service: "aws-s3", Root: root}, &syncBuffer{})
	if !errors.Is(err, errUnavailable) {
		t.Errorf("missing service: %v, want errUnavailable", err)
	}
}
