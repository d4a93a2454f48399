package emulators

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

func azRoundTrip(t *testing.T, ctx context.Context, c *azblob.Client, container, name string, body []byte) {
	t.Helper()
	if _, err := c.UploadBuffer(ctx, container, name, body, nil); err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	resp, err := c.DownloadStream(ctx, container, name, nil)
	if err != nil {
		t.Fatalf("download %s: %v", name, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("download %s: %d bytes differ from the %d uploaded", name, len(got), len(body))
	}
}

func TestAzurite(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	began := time.Now()
	a := StartAzurite(t)
	t.Logf("azurite started in %s at %s", time.Since(began), a.BlobEndpoint)
	a.CreateContainer(t, "ctr")
	c := a.Client(t)
	azRoundTrip(t, ctx, c, "ctr", "dir/blob.bin", payload(300<<10))

	a.Stop()
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := c.DownloadStream(short, "ctr", "dir/blob.bin", nil)
	cancel()
	if err == nil {
		t.Fatal("download succeeded while Azurite was stopped")
	}
	began = time.Now()
	a.Start()
	t.Logf("azurite restarted in %s", time.Since(began))

	// In memory: the blob is gone, the container was re-created by Start.
	_, err = c.DownloadStream(ctx, "ctr", "dir/blob.bin", nil)
	if !bloberror.HasCode(err, bloberror.BlobNotFound) {
		t.Fatalf("after restart: got %v, want BlobNotFound", err)
	}
	azRoundTrip(t, ctx, c, "ctr", "after-restart", payload(1000))
}
