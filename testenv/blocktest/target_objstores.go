package blocktest

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"google.golang.org/api/iterator"

	"github.com/cloud-block/cloud-block/testenv/emulators"
)

// --- aws-s3 on gofakes3 (in this process) or versitygw (a process, which
// checks signatures) ---------------------------------------------------------

type s3Backend struct {
	conn   emulators.S3Conn
	bucket string
	objCache
}

func openS3(t *testing.T) backend {
	s := emulators.StartS3(t)
	// gofakes3 takes any key: the block gets one of its own to keep secret.
	s.SecretKey = "s3Secret-" + randHex(10)
	b := &s3Backend{conn: s.S3Conn, bucket: "blocktest"}
	s.CreateBucket(t, b.bucket)
	return b
}

func openVersity(t *testing.T) backend {
	v := emulators.StartVersity(t)
	b := &s3Backend{conn: v.S3Conn, bucket: "blocktest"}
	v.CreateBucket(t, b.bucket)
	return b
}

func (b *s3Backend) env(addr string) map[string]string {
	return map[string]string{
		"AWS_S3_BUCKET": b.bucket, "AWS_S3_REGION": b.conn.Region, "AWS_S3_ENDPOINT": "http://" + addr,
		"AWS_S3_ACCESS_KEY": b.conn.AccessKey, "AWS_S3_SECRET_KEY": b.conn.SecretKey,
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

func (b *s3Backend) upstream() string  { return strings.TrimPrefix(b.conn.Endpoint, "http://") }
func (b *s3Backend) secrets() []string { return []string{b.conn.SecretKey} }

func (b *s3Backend) read(t testing.TB) []msg {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := b.conn.Client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(b.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if isDown(err) {
				break // stopped: what was read is kept
			}
			t.Fatalf("listing %s: %v", b.bucket, err)
		}
		for _, o := range page.Contents {
			key, tag := aws.ToString(o.Key), aws.ToString(o.ETag)
			if b.has(key, tag) {
				continue
			}
			out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.bucket), Key: o.Key})
			if err != nil {
				t.Fatalf("get %s: %v", key, err)
			}
			body, err := readAllBody(out.Body)
			if err != nil {
				t.Fatalf("get %s: %v", key, err)
			}
			b.add(t, key, tag, body, aws.ToString(out.ContentEncoding), out.Metadata)
		}
	}
	return b.all()
}

// isDown tells an emulator that is stopped from a real failure.
func isDown(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "connection reset") || errors.Is(err, context.DeadlineExceeded)
}

// --- azure-blob on Azurite (shared by the rigs) ------------------------------

type blobBackend struct {
	a      *emulators.Azurite
	c      *azblob.Client
	ctr    string
	hostPt string
	objCache
}

func openBlob(t *testing.T) backend {
	a := sharedAzurite(t)
	b := &blobBackend{a: a, c: a.Client(t), ctr: "faults-" + randHex(6)}
	a.CreateContainer(t, b.ctr)
	u, err := url.Parse(a.BlobEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	b.hostPt = u.Host
	return b
}

func (b *blobBackend) env(addr string) map[string]string {
	return map[string]string{
		"AZURE_BLOB_STORAGE_ACCOUNT":     b.a.AccountName,
		"AZURE_BLOB_STORAGE_ACCOUNT_KEY": b.a.AccountKey,
		"AZURE_BLOB_ENDPOINT":            "http://" + addr + "/" + b.a.AccountName + "/",
		"AZURE_BLOB_CONTAINER_NAME":      b.ctr,
	}
}

func (b *blobBackend) upstream() string { return b.hostPt }

// The account key is Azurite's well-known one, but it is the value the
// block holds as its secret: it must not show either.
func (b *blobBackend) secrets() []string { return []string{b.a.AccountKey} }

func (b *blobBackend) read(t testing.TB) []msg { return readBlobs(t, b.c, b.ctr, &b.objCache) }

// readBlobs adds the container's blobs not yet in cache, with their
// content encoding and metadata, and returns every message read so far.
func readBlobs(t testing.TB, c *azblob.Client, ctr string, cache *objCache) []msg {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pager := c.NewListBlobsFlatPager(ctr, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatalf("listing %s: %v", ctr, err)
		}
		for _, it := range page.Segment.BlobItems {
			name, tag := *it.Name, string(*it.Properties.ETag)
			if cache.has(name, tag) {
				continue
			}
			resp, err := c.DownloadStream(ctx, ctr, name, nil)
			if err != nil {
				t.Fatalf("download %s: %v", name, err)
			}
			body, err := readAllBody(resp.Body)
			if err != nil {
				t.Fatalf("download %s: %v", name, err)
			}
			enc := ""
			if resp.ContentEncoding != nil {
				enc = *resp.ContentEncoding
			}
			var md map[string]string
			for k, v := range resp.Metadata {
				if md == nil {
					md = map[string]string{}
				}
				md[k] = *v
			}
			cache.add(t, name, tag, body, enc, md)
		}
	}
	return cache.all()
}

// --- gcp-storage on fake-gcs-server (shared by the rigs) ---------------------

type gcsBackend struct {
	g      *emulators.GCS
	c      *storage.Client
	bucket string
	objCache
}

func openGCS(t *testing.T) backend {
	g := sharedGCS(t)
	b := &gcsBackend{g: g, c: g.Client(t), bucket: "faults-" + randHex(6)}
	g.CreateBucket(t, b.bucket)
	return b
}

func (b *gcsBackend) env(addr string) map[string]string {
	return map[string]string{"GCP_STORAGE_BUCKET": b.bucket, "GCP_STORAGE_PROJECT_ID": "test-project", "STORAGE_EMULATOR_HOST": addr}
}

func (b *gcsBackend) upstream() string  { return b.g.Host }
func (b *gcsBackend) secrets() []string { return nil }

func (b *gcsBackend) read(t testing.TB) []msg {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	it := b.c.Bucket(b.bucket).Objects(ctx, nil)
	for {
		o, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatalf("listing %s: %v", b.bucket, err)
		}
		tag := o.Etag + "/" + o.Updated.String()
		if b.has(o.Name, tag) {
			continue
		}
		// ReadCompressed: the body as stored; Decode gunzips it. The
		// listing holds each object's metadata (message mode).
		r, err := b.c.Bucket(b.bucket).Object(o.Name).ReadCompressed(true).NewReader(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", o.Name, err)
		}
		body, err := readAllBody(r)
		if err != nil {
			t.Fatalf("read %s: %v", o.Name, err)
		}
		b.add(t, o.Name, tag, body, o.ContentEncoding, o.Metadata)
	}
	return b.all()
}
