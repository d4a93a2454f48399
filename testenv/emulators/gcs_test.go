package emulators

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"cloud.google.com/go/storage"
)

func gcsRoundTrip(t *testing.T, ctx context.Context, c *storage.Client, bucket, name string, body []byte) {
	t.Helper()
	w := c.Bucket(bucket).Object(name).NewWriter(ctx)
	// The default 16 MiB chunk buffer per writer is waste for small objects;
	// 0 sends the object in one request.
	w.ChunkSize = 0
	if _, err := w.Write(body); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close writer %s: %v", name, err)
	}
	r, err := c.Bucket(bucket).Object(name).NewReader(ctx)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("read %s: %d bytes differ from the %d written", name, len(got), len(body))
	}
}

func TestGCS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	began := time.Now()
	g := StartGCS(t)
	t.Logf("fake-gcs-server started in %s at %s", time.Since(began), g.URL)
	g.CreateBucket(t, "bkt")
	c := g.Client(t)
	gcsRoundTrip(t, ctx, c, "bkt", "dir/obj.bin", payload(300<<10))

	g.Stop()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := c.Bucket("bkt").Attrs(short)
	cancel()
	if err == nil {
		t.Fatal("request succeeded while fake-gcs-server was stopped")
	}
	began = time.Now()
	g.Start()
	t.Logf("fake-gcs-server restarted in %s", time.Since(began))

	// In memory: the object is gone, the bucket was re-created by Start.
	_, err = c.Bucket("bkt").Object("dir/obj.bin").Attrs(ctx)
	if !errors.Is(err, storage.ErrObjectNotExist) {
		t.Fatalf("after restart: got %v, want ErrObjectNotExist", err)
	}
	gcsRoundTrip(t, ctx, c, "bkt", "after-restart", payload(1000))
}
