package blobsink

import (
	"bytes"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/objstore"
)

// devKey is the well-known key of Azurite's devstoreaccount1, not a secret.
const devKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// lookup serves variables from a map.
func lookup(env map[string]string) config.Lookup {
	return func(n string) (string, bool) {
		v, ok := env[n]
		return v, ok && v != ""
	}
}

// loadEnv loads the service's configuration from env, or fails the test.
func loadEnv(t *testing.T, env map[string]string) Config {
	t.Helper()
	l := config.NewLoader(lookup(env), Service.AllVars())
	c := load(l, "test-device")
	if err := l.Err(); err != nil {
		t.Fatalf("configuration: %v", err)
	}
	return c
}

// with returns base plus the given variables.
func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// logBuffer collects a sink's logs so tests can look for secrets in them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// storedBlob is one blob as read back from a store.
type storedBlob struct {
	name, contentType, contentEncoding string
	body                               []byte
}

// decodeBlobs maps message id -> payload for every message in blobs: batch
// blobs (.ndjson, .ndjson.gz) through objstore.Decode, message blobs by the
// id their name ends with. It also returns how many times each id was seen.
func decodeBlobs(t testing.TB, blobs []storedBlob) (payloads map[string][]byte, seen map[string]int) {
	t.Helper()
	payloads, seen = map[string][]byte{}, map[string]int{}
	for _, b := range blobs {
		if strings.HasSuffix(b.name, ".ndjson") || strings.HasSuffix(b.name, ".ndjson.gz") {
			lines, err := objstore.Decode(b.body, b.contentEncoding)
			if err != nil {
				t.Fatalf("blob %s: %v", b.name, err)
			}
			for _, l := range lines {
				payloads[l.ID] = l.Payload
				seen[l.ID]++
			}
			continue
		}
		id, err := url.PathUnescape(path.Base(b.name))
		if err != nil {
			t.Fatalf("blob %s: %v", b.name, err)
		}
		payloads[id] = b.body
		seen[id]++
	}
	return payloads, seen
}
