package s3sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// connected is a sink over f, connected.
func connected(t *testing.T, f *fakeS3, overrides map[string]string) *Sink {
	t.Helper()
	return sinktest.Connected(t, fakeSink(t, f, overrides))
}

func storedObjects(f *fakeS3) []object {
	objs, keys := f.snapshot()
	out := make([]object, len(keys))
	for i, k := range keys {
		out[i] = object{Key: k, Body: objs[k].Body, ContentEncoding: objs[k].ContentEncoding}
	}
	return out
}

func textMessages(n, size int) []sink.Message {
	return sinktest.Messages(n, func(i int) []byte {
		return bytes.Repeat([]byte{'a' + byte(i%26)}, size)
	})
}

func TestConnectChecksBucket(t *testing.T) {
	f := newFakeS3("other-bucket")
	s := fakeSink(t, f, nil)
	err := s.Connect(context.Background())
	if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) {
		t.Fatalf("Connect to a missing bucket: %v", err)
	}
	want := `bucket "test-bucket" does not exist: create it or fix AWS_S3_BUCKET (the block never creates buckets): checking bucket "test-bucket": `
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\nwant prefix %q", err, want)
	}
	if s.WriteBatch(context.Background(), textMessages(1, 3)) == nil {
		t.Error("WriteBatch after a failed Connect succeeded")
	}
	s.Close(context.Background())

	f = newFakeS3(testBucket)
	f.fail = func(op, _ string) error { return apiErr("Forbidden") }
	if err := fakeSink(t, f, nil).Connect(context.Background()); !sink.IsAuth(err) || !strings.Contains(err.Error(), `(a wrong access key or secret, or no s3:ListBucket on bucket "test-bucket")`) {
		t.Errorf("HeadBucket 403 is not an AuthError saying what it may mean: %v", err)
	}
}

func TestWrongRegionNamesTheRightOne(t *testing.T) {
	f := newFakeS3(testBucket)
	f.fail = func(string, string) error {
		return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 301, Header: http.Header{"X-Amz-Bucket-Region": {"eu-west-1"}}}},
			Err:      apiErr("MovedPermanently"),
		}}
	}
	err := fakeSink(t, f, nil).Connect(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), `bucket "test-bucket" is in region eu-west-1, not us-east-1: set AWS_S3_REGION=eu-west-1: `) {
		t.Errorf("error %v", err)
	}
}

func TestBatchObject(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			f := newFakeS3(testBucket)
			s := connected(t, f, map[string]string{"AWS_S3_GZIP": fmt.Sprint(gz), "AWS_S3_PREFIX": "raw"})
			ms := textMessages(5, 10)
			if err := s.WriteBatch(context.Background(), ms); err != nil {
				t.Fatal(err)
			}
			objs, keys := f.snapshot()
			if len(keys) != 1 {
				t.Fatalf("objects %v", keys)
			}
			o := objs[keys[0]]
			wantKey, wantEnc := fmt.Sprintf("raw/dev-1/%s/%s-%s.ndjson", ms[0].Received.Format("2006/01/02/15"), ms[0].ID, ms[4].ID), ""
			if gz {
				wantKey, wantEnc = wantKey+".gz", "gzip"
			}
			if keys[0] != wantKey || o.ContentType != "application/x-ndjson" || o.ContentEncoding != wantEnc {
				t.Errorf("object %s %q %q, want %s %q", keys[0], o.ContentType, o.ContentEncoding, wantKey, wantEnc)
			}
			got, _ := payloads(t, objstore.Batch, storedObjects(f))
			for _, m := range ms {
				if !bytes.Equal(got[m.ID], m.Payload) {
					t.Errorf("%s: %q", m.ID, got[m.ID])
				}
			}
			// A resend (after a crash) overwrites the same object with the same bytes.
			if err := s.WriteBatch(context.Background(), ms); err != nil {
				t.Fatal(err)
			}
			again, keys2 := f.snapshot()
			if len(keys2) != 1 || !bytes.Equal(again[keys[0]].Body, o.Body) {
				t.Errorf("resend wrote %v", keys2)
			}
		})
	}
}

func TestMessageObjects(t *testing.T) {
	f := newFakeS3(testBucket)
	s := connected(t, f, map[string]string{"AWS_S3_OBJECT_MODE": "message"})
	payloadsIn := [][]byte{[]byte(`{"t":1}`), []byte("text"), {0xff, 0x00}, {}}
	ms := sinktest.Messages(len(payloadsIn), func(i int) []byte { return payloadsIn[i] })
	if err := s.WriteBatch(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	objs, keys := f.snapshot()
	if len(keys) != len(ms) {
		t.Fatalf("objects %v", keys)
	}
	wantTypes := []string{"application/json", "text/plain; charset=utf-8", "application/octet-stream", "text/plain; charset=utf-8"}
	for i, m := range ms {
		key := fmt.Sprintf("dev-1/%s/%s", m.Received.Format("2006/01/02/15"), m.ID)
		o, ok := objs[key]
		if !ok || !bytes.Equal(o.Body, m.Payload) || o.ContentType != wantTypes[i] || o.ContentEncoding != "" {
			t.Errorf("object %s: %+v (found %v)", key, o, ok)
		}
		wantMeta := map[string]string{"id": m.ID, "topic": "cloud-input/conformance", "received": m.Received.Format(time.RFC3339Nano), "device": "dev-1"}
		if !maps.Equal(o.Metadata, wantMeta) {
			t.Errorf("object %s: metadata %q, want %q", key, o.Metadata, wantMeta)
		}
	}
}

func TestMessageModeBoundedConcurrency(t *testing.T) {
	f := newFakeS3(testBucket)
	s := connected(t, f, map[string]string{"AWS_S3_OBJECT_MODE": "message"})
	f.hold = make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.WriteBatch(context.Background(), textMessages(50, 10)) }()
	for f.inFlight.Now() != putConcurrency {
		time.Sleep(time.Millisecond)
	}
	close(f.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if f.inFlight.Peak() != putConcurrency || f.puts != 50 {
		t.Errorf("max in flight %d (want %d), puts %d", f.inFlight.Peak(), putConcurrency, f.puts)
	}
}

func TestMessageModePartialFailure(t *testing.T) {
	f := newFakeS3(testBucket)
	s := connected(t, f, map[string]string{"AWS_S3_OBJECT_MODE": "message"})
	ms := textMessages(10, 10)
	f.fail = func(op, key string) error {
		switch {
		case strings.HasSuffix(key, ms[3].ID):
			return apiErr("InternalError")
		case strings.HasSuffix(key, ms[7].ID):
			return apiErr("EntityTooLarge")
		}
		return nil
	}
	err := s.WriteBatch(context.Background(), ms)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 2 {
		t.Fatalf("want a BatchError for 2 messages, got %v", err)
	}
	if e := be.Failed[3]; e == nil || sink.IsPermanent(e) {
		t.Errorf("[3] %v: want retryable", e)
	}
	if e := be.Failed[7]; e == nil || !sink.IsPermanent(e) {
		t.Errorf("[7] %v: want permanent", e)
	}
	if f.puts != 8 {
		t.Errorf("%d objects written, want 8", f.puts)
	}
}

func TestMessageModeWholeBatchErrors(t *testing.T) {
	f := newFakeS3(testBucket)
	s := connected(t, f, map[string]string{"AWS_S3_OBJECT_MODE": "message"})
	ms := textMessages(4, 10)

	// The bucket was deleted: every message fails the same way; one clear error.
	f.bucket = "gone"
	err := s.WriteBatch(context.Background(), ms)
	var be *sink.BatchError
	if err == nil || errors.As(err, &be) || sink.IsPermanent(err) || !strings.Contains(err.Error(), `bucket "test-bucket" does not exist`) {
		t.Errorf("deleted bucket: %v", err)
	}
	f.bucket = testBucket

	// An auth failure of one message concerns them all (secrets are re-read).
	f.fail = func(op, key string) error {
		if strings.HasSuffix(key, ms[1].ID) {
			return apiErr("SignatureDoesNotMatch")
		}
		return nil
	}
	if err := s.WriteBatch(context.Background(), ms); !sink.IsAuth(err) {
		t.Errorf("auth failure of one message: %v", err)
	}
}

func TestAuthErrors(t *testing.T) {
	for _, code := range []string{"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"} {
		for _, mode := range []string{"batch", "message"} {
			f := newFakeS3(testBucket)
			s := connected(t, f, map[string]string{"AWS_S3_OBJECT_MODE": mode})
			f.fail = func(string, string) error { return apiErr(code) }
			err := s.WriteBatch(context.Background(), textMessages(3, 5))
			if !sink.IsAuth(err) || sink.IsPermanent(err) {
				t.Errorf("%s in %s mode: %v", code, mode, err)
			}
		}
	}
}

func TestBatchModeRetryFailsWholeBatch(t *testing.T) {
	f := newFakeS3(testBucket)
	s := connected(t, f, map[string]string{"AWS_S3_KEY_TEMPLATE": "{topic}/{first}-{last}"})
	ms := textMessages(6, 5)
	for i := range ms {
		ms[i].Topic = fmt.Sprintf("t%d", i%2)
	}
	f.fail = func(op, key string) error {
		if strings.HasPrefix(key, "t1/") {
			return apiErr("SlowDown")
		}
		return nil
	}
	err := s.WriteBatch(context.Background(), ms)
	var be *sink.BatchError
	if err == nil || errors.As(err, &be) || sink.IsPermanent(err) {
		t.Fatalf("want a plain retryable error for the whole batch, got %v", err)
	}
	// The retry of the whole batch lays out the same two objects.
	f.fail = nil
	if err := s.WriteBatch(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	if _, keys := f.snapshot(); len(keys) != 2 {
		t.Errorf("objects %v", keys)
	}
}

func TestOversizeObjectsSplit(t *testing.T) {
	f := newFakeS3(testBucket)
	s := connected(t, f, map[string]string{"AWS_S3_MAX_OBJECT_BYTES": "64KiB"})
	ms := textMessages(40, 6000)
	// Fits the payload limit, but as a base64 line not the object.
	big := sinktest.Messages(1, func(int) []byte { return bytes.Repeat([]byte{0xff}, 60000) })[0]
	ms = append(ms[:17], append([]sink.Message{big}, ms[17:]...)...)
	err := s.WriteBatch(context.Background(), ms)
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || !sink.IsPermanent(be.Failed[17]) {
		t.Fatalf("want only the big message failed permanently, got %v", err)
	}
	if !strings.Contains(be.Failed[17].Error(), "exceeds AWS_S3_MAX_OBJECT_BYTES (65536 bytes)") {
		t.Errorf("reason %v", be.Failed[17])
	}
	objs, keys := f.snapshot()
	if len(keys) < 5 {
		t.Errorf("only %d objects", len(keys))
	}
	for _, k := range keys {
		if len(objs[k].Body) > 64<<10 {
			t.Errorf("%s has %d bytes", k, len(objs[k].Body))
		}
	}
	got, dups := payloads(t, objstore.Batch, storedObjects(f))
	if dups != 0 || len(got) != 40 {
		t.Errorf("%d messages, %d duplicates", len(got), dups)
	}
	for i, m := range ms {
		if i != 17 && !bytes.Equal(got[m.ID], m.Payload) {
			t.Errorf("message %d missing or changed", i)
		}
	}
	// A resend splits the same way: the same keys, nothing new.
	s.WriteBatch(context.Background(), ms)
	if _, again := f.snapshot(); fmt.Sprint(again) != fmt.Sprint(keys) {
		t.Errorf("resend wrote other keys:\n%v\n%v", again, keys)
	}
}

func TestConformanceFake(t *testing.T) {
	for name, env := range conformanceModes {
		t.Run(name, func(t *testing.T) {
			f := newFakeS3(testBucket)
			mode := objstore.Mode(env["AWS_S3_OBJECT_MODE"])
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return fakeSink(t, f, env) },
				NewBroken: func(t *testing.T) sink.Sink {
					return fakeSink(t, newFakeS3("missing-bucket"), env)
				},
				ReadBack: func(t *testing.T, _ []string) map[string][]byte {
					got, _ := payloads(t, mode, storedObjects(f))
					return got
				},
			})
		})
	}
}

// conformanceModes are the layouts the conformance suite runs with; the
// object limit is low enough for its size-limit case.
var conformanceModes = map[string]map[string]string{
	"batch":      {"AWS_S3_MAX_OBJECT_BYTES": "256KiB"},
	"batch-gzip": {"AWS_S3_MAX_OBJECT_BYTES": "256KiB", "AWS_S3_GZIP": "true"},
	"message":    {"AWS_S3_MAX_OBJECT_BYTES": "256KiB", "AWS_S3_OBJECT_MODE": "message"},
}
