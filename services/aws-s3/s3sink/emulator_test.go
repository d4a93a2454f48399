package s3sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/emulators"
)

// gofakes3Store serves gofakes3 in-process (it keeps its data through
// Stop and Start).
func gofakes3Store(t *testing.T) (*emulators.S3, store) {
	f := emulators.StartS3(t)
	return f, storeOf(f.S3Conn)
}

func storeOf(c emulators.S3Conn) store {
	return store{Endpoint: c.Endpoint, Region: c.Region, Access: c.AccessKey, Secret: c.SecretKey}
}

// answerHook is a proxy in front of an S3 endpoint that runs the hook it
// holds, when one is set, after the store answered a PUT and before the
// answer goes back: a block killed then has written an object it never
// heard about.
func answerHook(t *testing.T, endpoint string) (string, *atomic.Pointer[func()]) {
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var hook atomic.Pointer[func()]
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if h := hook.Load(); h != nil && r.Request.Method == http.MethodPut {
			(*h)()
		}
		return nil
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	return srv.URL, &hook
}

// store is an S3 endpoint the tests read back from.
type store struct {
	Endpoint, Region, Access, Secret string
	// BucketPrefix starts the name of every bucket a test creates, and
	// Shared says the store outlives the test, which then removes them.
	BucketPrefix string
	Shared       bool
}

func (s store) client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint), Region: s.Region, UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(s.Access, s.Secret, ""),
	})
}

// env is the sink's configuration for bucket on this store.
func (s store) env(bucket string, overrides map[string]string) map[string]string {
	env := map[string]string{
		"AWS_S3_BUCKET": bucket, "AWS_S3_REGION": s.Region, "AWS_S3_ENDPOINT": s.Endpoint,
		"AWS_S3_ACCESS_KEY": s.Access, "AWS_S3_SECRET_KEY": s.Secret,
	}
	for k, v := range overrides {
		env[k] = v
	}
	return env
}

// createBucket creates the bucket BucketPrefix+name and returns its name.
func (s store) createBucket(t testing.TB, name string) string {
	t.Helper()
	bucket := s.BucketPrefix + name
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("create bucket %s: %v", bucket, err)
	}
	if s.Shared {
		t.Cleanup(func() { s.removeBucket(t, bucket) })
	}
	return bucket
}

func (s store) removeBucket(t testing.TB, bucket string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := s.client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Logf("cleaning up bucket %s: %v", bucket, err)
			return
		}
		for _, o := range page.Contents {
			if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: o.Key}); err != nil {
				t.Logf("cleaning up bucket %s: %v", bucket, err)
				return
			}
		}
	}
	if _, err := c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Logf("cleaning up bucket %s: %v", bucket, err)
	}
}

// objects lists and reads every object of the bucket.
func (s store) objects(t testing.TB, bucket string) []object {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := s.client()
	var out []object
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("list %s: %v", bucket, err)
		}
		for _, o := range page.Contents {
			get, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				t.Fatalf("get %s: %v", *o.Key, err)
			}
			body, err := io.ReadAll(get.Body)
			get.Body.Close()
			if err != nil {
				t.Fatalf("read %s: %v", *o.Key, err)
			}
			out = append(out, object{Key: *o.Key, Body: body, ContentEncoding: aws.ToString(get.ContentEncoding)})
		}
	}
	return out
}

// closedPort is an address nothing listens on.
func closedPort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// conformance runs the shared suite against a store, once per layout.
func conformance(t *testing.T, st store) {
	for name, overrides := range conformanceModes {
		t.Run(name, func(t *testing.T) {
			bucket := st.createBucket(t, "conformance-"+name)
			env := st.env(bucket, overrides)
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return loadSink(t, env) },
				NewBroken: func(t *testing.T) sink.Sink {
					broken := st.env(bucket, overrides)
					broken["AWS_S3_ENDPOINT"] = closedPort(t)
					return loadSink(t, broken)
				},
				ReadBack: func(t *testing.T, _ []string) map[string][]byte {
					got, _ := payloads(t, objstore.Mode(env["AWS_S3_OBJECT_MODE"]), st.objects(t, bucket))
					return got
				},
			})
		})
	}
}

// TestConformanceExternal runs the suite against a store outside the test
// (MinIO, LocalStack, AWS) when S3_TEST_ENDPOINT names one.
func TestConformanceExternal(t *testing.T) {
	endpoint := os.Getenv("S3_TEST_ENDPOINT")
	if endpoint == "" {
		t.Skip("S3_TEST_ENDPOINT is not set (e.g. http://localhost:9000 for MinIO)")
	}
	region := os.Getenv("S3_TEST_REGION")
	if region == "" {
		region = "us-east-1"
	}
	conformance(t, store{
		Endpoint: endpoint, Region: region,
		Access: os.Getenv("S3_TEST_ACCESS_KEY"), Secret: os.Getenv("S3_TEST_SECRET_KEY"),
		BucketPrefix: fmt.Sprintf("cb-test-%08x-", rand.Uint32()), Shared: true,
	})
}

func TestConformanceGofakes3(t *testing.T) {
	_, st := gofakes3Store(t)
	conformance(t, st)
}

// The real SDK's errors are classified as the fake's are.
func TestMissingBucketGofakes3(t *testing.T) {
	_, st := gofakes3Store(t)
	err := loadSink(t, st.env("no-such-bucket", nil)).Connect(context.Background())
	if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
		t.Fatalf("Connect to a missing bucket: %v", err)
	}
	for _, mode := range []string{"batch", "message"} {
		bucket := st.createBucket(t, "deleted-"+mode)
		s := sinktest.Connected(t, loadSink(t, st.env(bucket, map[string]string{"AWS_S3_OBJECT_MODE": mode})))
		if _, err := st.client().DeleteBucket(context.Background(), &s3.DeleteBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatal(err)
		}
		err := s.WriteBatch(context.Background(), textMessages(3, 10))
		var be *sink.BatchError
		if err == nil || errors.As(err, &be) || sink.IsPermanent(err) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("%s mode, bucket deleted: %v", mode, err)
		}
	}
}

// Without keys the SDK's default chain is used: here its environment
// provider. The instance metadata service is disabled: tests must never
// reach for 169.254.169.254.
func TestDefaultCredentialChain(t *testing.T) {
	_, st := gofakes3Store(t)
	bucket := st.createBucket(t, "chain")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	env := st.env(bucket, map[string]string{"AWS_S3_ACCESS_KEY": "", "AWS_S3_SECRET_KEY": ""})

	err := loadSink(t, env).Connect(context.Background())
	if !sink.IsAuth(err) || !strings.Contains(err.Error(), "no credentials from the default chain") {
		t.Errorf("no credentials anywhere: %v", err)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", "from-env")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "from-env-secret")
	s := sinktest.Connected(t, loadSink(t, env))
	ms := textMessages(3, 10)
	if err := s.WriteBatch(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	got, _ := payloads(t, objstore.Batch, st.objects(t, bucket))
	if len(got) != 3 {
		t.Errorf("read back %d messages", len(got))
	}
}

func TestMessageMetadataGofakes3(t *testing.T) {
	_, st := gofakes3Store(t)
	checkMessageMetadata(t, st)
}

// checkMessageMetadata writes messages in message mode to st and reads each
// object's user metadata back through the SDK: the four fields as objstore
// laid them out, decoding to the message's own, topics of UTF-8, control
// bytes and '%' included.
func checkMessageMetadata(t *testing.T, st store) {
	bucket := st.createBucket(t, "metadata")
	s := sinktest.Connected(t, loadSink(t, st.env(bucket, map[string]string{"AWS_S3_OBJECT_MODE": "message"})))
	batch := sinktest.Batch("md", "sensors/temp", sinktest.Received, `{"t":1}`, "two", "\xff")
	batch[1].Topic = "café/\x01/100% a+b"
	batch[2].Topic = "bad\xff/ü"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	objs, err := s.cfg.Objects.Build(batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range objs {
		head, err := st.client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(o.Key)})
		if err != nil {
			t.Fatalf("head %s: %v", o.Key, err)
		}
		if !maps.Equal(head.Metadata, o.Metadata) {
			t.Errorf("%s: metadata %q, want %q", o.Key, head.Metadata, o.Metadata)
		}
		l, err := objstore.DecodeMetadata(head.Metadata)
		m := batch[i]
		if err != nil || l.ID != m.ID || l.Topic != m.Topic || !l.Received.Equal(m.Received) || l.Device != "dev-1" {
			t.Errorf("%s: metadata decode to %+v (%v), want %q %q %v dev-1", o.Key, l, err, m.ID, m.Topic, m.Received)
		}
	}
}
