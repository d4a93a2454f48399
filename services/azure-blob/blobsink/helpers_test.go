package blobsink

import (
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// devKey is the well-known key of Azurite's devstoreaccount1, not a secret.
const devKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// loadEnv loads the service's configuration from env, or fails the test.
func loadEnv(t *testing.T, env map[string]string) Config {
	t.Helper()
	return sinktest.MustLoad(t, env, Service.AllVars(), func(l *config.Loader) (Config, error) { return load(l, "test-device"), nil })
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

// storedBlob is one blob as read back from a store.
type storedBlob struct {
	name, contentType, contentEncoding string
	body                               []byte
	metadata                           map[string]string // names as the service returns them
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
