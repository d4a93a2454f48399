package emulators

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// GCS is fake-gcs-server with its in-memory backend: Stop loses all objects;
// Start re-creates the buckets made with CreateBucket.
type GCS struct {
	Host string // the STORAGE_EMULATOR_HOST value: 127.0.0.1:PORT
	URL  string // http://127.0.0.1:PORT
	*process
	admin *storage.Client // for the helpers

	mu      sync.Mutex
	buckets []string
}

// StartGCS starts fake-gcs-server from .cache/bin, skipping the test when it
// has not been built.
func StartGCS(t testing.TB) *GCS {
	t.Helper()
	bin := toolBin(t, "fake-gcs-server")
	g := &GCS{}
	g.process = startProcess(t, true, func(port int) procs.Spec {
		addr := procs.Addr(port)
		return procs.Spec{
			Name: "fake-gcs-server",
			Path: bin,
			// Its defaults are https, 0.0.0.0 and a filesystem under /storage.
			// public-host and external-url make the URLs it hands out (resumable
			// upload sessions, media links) point back at this port.
			Args: []string{
				"-scheme", "http",
				"-host", "127.0.0.1",
				"-port", strconv.Itoa(port),
				"-backend", "memory",
				"-public-host", addr,
				"-external-url", httpURL(addr),
			},
			Ready: httpReady(httpURL(addr) + "/storage/v1/b"),
		}
	})
	g.Host = g.addr()
	g.URL = httpURL(g.Host)
	g.admin = g.Client(t)
	return g
}

// Env returns STORAGE_EMULATOR_HOST for a process under test.
func (g *GCS) Env() []string { return []string{"STORAGE_EMULATOR_HOST=" + g.Host} }

// ClientOptions point a storage client at the emulator without touching the
// environment (so tests may run in parallel).
func (g *GCS) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(g.URL + "/storage/v1/"),
		option.WithoutAuthentication(),
	}
}

// Client returns a storage client, closed when the test ends.
func (g *GCS) Client(t testing.TB) *storage.Client {
	t.Helper()
	c, err := storage.NewClient(context.Background(), g.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// CreateBucket creates a bucket, failing the test on error; Start re-creates
// it after an outage.
func (g *GCS) CreateBucket(t testing.TB, name string) {
	t.Helper()
	g.createBucket(t, name)
	g.mu.Lock()
	g.buckets = append(g.buckets, name)
	g.mu.Unlock()
}

func (g *GCS) createBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.admin.Bucket(name).Create(ctx, "test-project", nil); err != nil {
		t.Fatalf("create bucket %q: %v", name, err)
	}
}

// Start runs the emulator again on the same port and re-creates the buckets.
func (g *GCS) Start() {
	g.process.t.Helper()
	if !g.restart() {
		return
	}
	g.mu.Lock()
	names := append([]string(nil), g.buckets...)
	g.mu.Unlock()
	for _, n := range names {
		g.createBucket(g.process.t, n)
	}
}

// httpReady succeeds once url answers with a non-5xx status.
func httpReady(url string) func() error {
	c := &http.Client{Timeout: 2 * time.Second}
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
