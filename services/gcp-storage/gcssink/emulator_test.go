package gcssink

import (
	"context"
	"errors"
	"io"
	"maps"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// startGCS starts fake-gcs-server (emulators fails the test when it was not
// built, so CI never passes without having run these tests).
func startGCS(t *testing.T) *emulators.GCS {
	t.Helper()
	if testing.Short() {
		t.Skip("emulator test")
	}
	return emulators.StartGCS(t)
}

// object is one object read back from the emulator.
type object struct {
	key, contentType, contentEncoding string
	body                              []byte
	metadata                          map[string]string
}

// listObjects reads every object of bucket as stored (gzip not undone).
func listObjects(t testing.TB, g *emulators.GCS, bucket string) []object {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := g.Client(t).Bucket(bucket)
	var out []object
	it := b.Objects(ctx, nil)
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatalf("list %s: %v", bucket, err)
		}
		r, err := b.Object(a.Name).ReadCompressed(true).NewReader(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", a.Name, err)
		}
		body, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("read %s: %v", a.Name, err)
		}
		out = append(out, object{key: a.Name, contentType: a.ContentType, contentEncoding: a.ContentEncoding, body: body, metadata: a.Metadata})
	}
}

// readAll decodes every object of bucket into messages by id.
func readAll(t testing.TB, g *emulators.GCS, bucket string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, o := range listObjects(t, g, bucket) {
		for id, p := range decodeObject(t, o.key, o.body, o.contentType, o.contentEncoding) {
			out[id] = p
		}
	}
	return out
}

func envSink(t *testing.T, env map[string]string) *Sink {
	t.Helper()
	return newSink(sinktest.MustLoad(t, env, Service.AllVars(), loadDev), dialRaw)
}

func TestConformanceEmulator(t *testing.T) {
	g := startGCS(t)
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			bucket := "conformance-" + name
			g.CreateBucket(t, bucket)
			env := map[string]string{"GCP_STORAGE_BUCKET": bucket, "STORAGE_EMULATOR_HOST": g.Host}
			for k, v := range mode {
				env[k] = v
			}
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return envSink(t, env) },
				NewBroken: func(t *testing.T) sink.Sink {
					broken := map[string]string{"STORAGE_EMULATOR_HOST": procs.Addr(procs.FreePort(t))}
					for k, v := range env {
						if broken[k] == "" {
							broken[k] = v
						}
					}
					return envSink(t, broken)
				},
				ReadBack: func(t *testing.T, ids []string) map[string][]byte { return readAll(t, g, bucket) },
			})
		})
	}
}

// Through the JSON API client and the emulator: headers as stored, a resent
// batch leaves its object as it is, a missing bucket is a clear, retryable
// error.
func TestEmulatorObjects(t *testing.T) {
	g := startGCS(t)
	g.CreateBucket(t, "objects")
	s := sinktest.Connected(t, envSink(t, map[string]string{"GCP_STORAGE_BUCKET": "objects", "STORAGE_EMULATOR_HOST": "http://" + g.Host, "GCP_STORAGE_GZIP": "true"}))
	ctx := context.Background()
	batch := msgs(`{"t":1}`, "two", "\xff")
	for range 2 {
		if err := s.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	objs := listObjects(t, g, "objects")
	if len(objs) != 1 {
		t.Fatalf("%d objects after writing a batch twice", len(objs))
	}
	o := objs[0]
	if o.key != "dev-1/2024/03/05/07/ep-000000000001-ep-000000000003.ndjson.gz" || o.contentType != "application/x-ndjson" || o.contentEncoding != "gzip" {
		t.Errorf("object %s, %s, %s", o.key, o.contentType, o.contentEncoding)
	}
	got := decodeObject(t, o.key, o.body, o.contentType, o.contentEncoding)
	for _, m := range batch {
		if string(got[m.ID]) != string(m.Payload) {
			t.Errorf("%s: %q, want %q", m.ID, got[m.ID], m.Payload)
		}
	}

	// The emulator honours the precondition the sink relies on.
	ins := s.ins.(storageInserter)
	err := ins.Insert(ctx, "objects", &objstore.Object{Key: o.key, Body: []byte("other"), ContentType: "text/plain"})
	var ge *googleapi.Error
	if !errors.As(err, &ge) || ge.Code != 412 {
		t.Errorf("overwriting an object: %v, want 412", err)
	}

	missing := envSink(t, map[string]string{"GCP_STORAGE_BUCKET": "no-such-bucket", "STORAGE_EMULATOR_HOST": g.Host})
	missing.Connect(ctx)
	err = missing.WriteBatch(ctx, batch)
	if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) || !strings.Contains(err.Error(), "bucket no-such-bucket not found") {
		t.Errorf("missing bucket: %v", err)
	}
}

// In message mode each object's custom metadata, as the emulator stores and
// lists it, is the message's id, topic, time and device, whatever bytes the
// topic holds (UTF-8, a control byte, '%', not UTF-8 at all).
func TestEmulatorMessageMetadata(t *testing.T) {
	g := startGCS(t)
	g.CreateBucket(t, "metadata")
	s := sinktest.Connected(t, envSink(t, map[string]string{"GCP_STORAGE_BUCKET": "metadata", "STORAGE_EMULATOR_HOST": g.Host, "GCP_STORAGE_OBJECT_MODE": "message"}))
	batch := msgs(`{"t":1}`, "two", "\xff")
	batch[1].Topic = "café/\x01/100% a+b"
	batch[2].Topic = "bad\xff/ü"
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	objs, err := s.cfg.objects.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]object{}
	for _, o := range listObjects(t, g, "metadata") {
		stored[o.key] = o
	}
	for i, o := range objs {
		got, ok := stored[o.Key]
		if !ok || !maps.Equal(got.metadata, o.Metadata) {
			t.Errorf("object %s (found %v): metadata %q, want %q", o.Key, ok, got.metadata, o.Metadata)
		}
		l, err := objstore.DecodeMetadata(got.metadata)
		m := batch[i]
		if err != nil || l.ID != m.ID || l.Topic != m.Topic || !l.Received.Equal(m.Received) || l.Device != "dev-1" {
			t.Errorf("object %s: metadata decode to %+v (%v), want %q %q %v dev-1", o.Key, l, err, m.ID, m.Topic, m.Received)
		}
	}
}
