package gcssink

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"sync"
	"testing"

	"google.golang.org/api/googleapi"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// stored is an object as the fake keeps it.
type stored struct {
	body                    []byte
	contentType, contentEnc string
}

// fakeBucket stands in for the JSON API: it keeps objects, refuses to
// overwrite one (ifGenerationMatch=0, as the sink asks) and can be told to
// fail.
type fakeBucket struct {
	mu      sync.Mutex
	objects map[string]stored
	// fail, if set, returns the error for an object (nil writes it).
	fail     func(o *objstore.Object) error
	inserts  int
	inFlight sinktest.Concurrency // inserts
	// gate, if set, holds every insert until it is closed.
	gate chan struct{}

	// For the check: Get Bucket's error, the permissions granted, and
	// the error of a delete.
	attrsErr, deleteErr error
	granted             []string
}

func newFakeBucket() *fakeBucket { return &fakeBucket{objects: map[string]stored{}} }

func (f *fakeBucket) Insert(ctx context.Context, bucket string, o *objstore.Object) error {
	defer f.inFlight.Enter()()
	f.mu.Lock()
	f.inserts++
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.fail != nil {
		if err := f.fail(o); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.objects[o.Key]; ok {
		return &googleapi.Error{Code: http.StatusPreconditionFailed, Message: "At least one of the pre-conditions you specified did not hold."}
	}
	f.objects[o.Key] = stored{body: append([]byte(nil), o.Body...), contentType: o.ContentType, contentEnc: o.ContentEncoding}
	return nil
}

func (f *fakeBucket) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.objects {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readBack decodes what the fake holds: batch objects line by line, message
// objects by the id at the end of their key.
func (f *fakeBucket) readBack(t testing.TB) map[string][]byte {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]byte{}
	for key, o := range f.objects {
		for id, p := range decodeObject(t, key, o.body, o.contentType, o.contentEnc) {
			out[id] = p
		}
	}
	return out
}

// decodeObject returns the messages an object holds by id.
func decodeObject(t testing.TB, key string, body []byte, contentType, contentEnc string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	if contentType == objstore.ContentTypeNDJSON {
		lines, err := objstore.Decode(body, contentEnc)
		if err != nil {
			t.Fatalf("object %s: %v", key, err)
		}
		for _, l := range lines {
			out[l.ID] = l.Payload
		}
		return out
	}
	id, err := url.PathUnescape(path.Base(key))
	if err != nil {
		t.Fatalf("object %s: %v", key, err)
	}
	out[id] = body
	return out
}

func (f *fakeBucket) bucketAttrs(context.Context, string) error { return f.attrsErr }

func (f *fakeBucket) testPermissions(_ context.Context, _ string, perms []string) ([]string, error) {
	var out []string
	for _, p := range perms {
		if slices.Contains(f.granted, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f *fakeBucket) deleteObject(_ context.Context, _, key string) error {
	if f.deleteErr != nil {
		return f.deleteErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objects, key)
	return nil
}

// loadDev is the service's load for the device the tests use.
func loadDev(l *config.Loader) (Config, error) { return load(l, "dev-1"), nil }

// loadEnv reads the service's variables from env the way run does.
func loadEnv(env map[string]string) (Config, error) {
	return sinktest.Load(env, Service.AllVars(), loadDev)
}

// fakeSink returns a sink on f configured from env (plus a bucket).
func fakeSink(t *testing.T, f *fakeBucket, env map[string]string) *Sink {
	t.Helper()
	cfg := sinktest.MustLoad(t, sinktest.With(map[string]string{"GCP_STORAGE_BUCKET": "bkt"}, env), Service.AllVars(), loadDev)
	return newSink(cfg, func(context.Context, Config) (inserter, error) { return f, nil })
}
