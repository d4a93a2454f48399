package emulators

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// payload is binary on purpose: every byte value, so a sink or emulator that
// mangles encodings shows up as a mismatch.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func s3RoundTrip(t *testing.T, ctx context.Context, c *s3.Client, bucket, key string, body []byte) {
	t.Helper()
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	s3Expect(t, ctx, c, bucket, key, body)
}

func s3Expect(t *testing.T, ctx context.Context, c *s3.Client, bucket, key string, want []byte) {
	t.Helper()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	got, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("get %s: %d bytes differ from the %d put", key, len(got), len(want))
	}
}

// s3Outage stops the emulator, checks a request fails, starts it again and
// checks the object put before the outage is still there.
func s3Outage(t *testing.T, ctx context.Context, c *s3.Client, stop, start func(), bucket, key string, body []byte) {
	t.Helper()
	stop()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.HeadBucket(short, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
	cancel()
	if err == nil {
		t.Fatal("request succeeded while the emulator was stopped")
	}
	began := time.Now()
	start()
	t.Logf("restarted in %s", time.Since(began))
	s3Expect(t, ctx, c, bucket, key, body)
	s3RoundTrip(t, ctx, c, bucket, "after-restart", payload(1000))
}

func TestS3(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	began := time.Now()
	s := StartS3(t)
	t.Logf("gofakes3 started in %s at %s", time.Since(began), s.Endpoint)
	s.CreateBucket(t, "bkt")
	c := s.Client()
	body := payload(300 << 10)
	s3RoundTrip(t, ctx, c, "bkt", "dir/obj.bin", body)
	s3Outage(t, ctx, c, s.Stop, s.Start, "bkt", "dir/obj.bin", body)
}

func TestVersity(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	began := time.Now()
	v := StartVersity(t)
	t.Logf("versitygw started in %s at %s", time.Since(began), v.Endpoint)
	v.CreateBucket(t, "bkt")
	c := v.Client()
	body := payload(300 << 10)
	s3RoundTrip(t, ctx, c, "bkt", "dir/obj.bin", body)

	// It checks signatures, which gofakes3 does not: a wrong secret is refused.
	bad := v.S3Conn
	bad.SecretKey = "wrong"
	_, err := bad.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/obj.bin")})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("wrong secret: got %v, want an API error", err)
	}

	s3Outage(t, ctx, c, v.Stop, v.Start, "bkt", "dir/obj.bin", body)
}
