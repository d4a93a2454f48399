package s3sink

import (
	"context"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

const testBucket = "test-bucket"

// baseEnv is a valid configuration; with overrides applied ("" unsets).
func baseEnv(overrides map[string]string) map[string]string {
	return sinktest.With(map[string]string{
		"AWS_S3_BUCKET":     testBucket,
		"AWS_S3_REGION":     "us-east-1",
		"AWS_S3_ACCESS_KEY": "AKIATESTTESTTEST",
		"AWS_S3_SECRET_KEY": "test-secret",
	}, overrides)
}

// loadSink builds a sink from env, failing the test on a configuration error.
func loadSink(t testing.TB, env map[string]string) *Sink {
	t.Helper()
	return sinktest.MustLoadSink(t, Service, run.Info{Device: "dev-1"}, env).(*Sink)
}

// fakeSink is a sink over the in-memory fake.
func fakeSink(t testing.TB, f *fakeS3, overrides map[string]string) *Sink {
	s := loadSink(t, baseEnv(overrides))
	s.dial = func(context.Context) (API, func(), error) { return f, func() {}, nil }
	return s
}

func apiErr(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: code + " (fake)"}
}

// object is one object read back from a store.
type object struct {
	Key             string
	Body            []byte
	ContentEncoding string
}

// payloads maps message id to payload over the objects of a bucket laid out
// in mode: batch objects are decoded, message objects are named by their id.
// Ids seen more than once are counted in dups.
func payloads(t testing.TB, mode objstore.Mode, objs []object) (out map[string][]byte, dups int) {
	t.Helper()
	out = map[string][]byte{}
	add := func(id string, p []byte) {
		if _, ok := out[id]; ok {
			dups++
		}
		out[id] = p
	}
	for _, o := range objs {
		if mode == objstore.PerMessage {
			id, err := url.PathUnescape(path.Base(o.Key))
			if err != nil {
				t.Fatalf("key %q: %v", o.Key, err)
			}
			add(id, o.Body)
			continue
		}
		if !strings.HasSuffix(o.Key, ".ndjson") && !strings.HasSuffix(o.Key, ".ndjson.gz") {
			t.Fatalf("batch object key %q has no .ndjson extension", o.Key)
		}
		lines, err := objstore.Decode(o.Body, o.ContentEncoding)
		if err != nil {
			t.Fatalf("decoding %q: %v", o.Key, err)
		}
		for _, l := range lines {
			add(l.ID, l.Payload)
		}
	}
	return out, dups
}
