package s3sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// fakeServer is gofakes3 served in-process on a fixed 127.0.0.1 port, so
// it can be stopped and started again at the same address with its data.
type fakeServer struct {
	t        testing.TB
	addr     string
	handler  *gofakes3.GoFakeS3
	Endpoint string
	Access   string
	Secret   string

	// afterPut, when set, runs after gofakes3 stored an object and before
	// the answer goes back (to kill the block in between).
	afterPut atomic.Pointer[func()]

	mu  sync.Mutex
	srv *httptest.Server
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hook := f.afterPut.Load()
	if hook == nil || r.Method != http.MethodPut {
		f.handler.Server().ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	f.handler.Server().ServeHTTP(rec, r)
	(*hook)()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func startFakeServer(t testing.TB) *fakeServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, addr: l.Addr().String(), handler: gofakes3.New(s3mem.New()),
		Access: "test-access", Secret: "test-secret"}
	f.Endpoint = "http://" + f.addr
	f.serve(l)
	t.Cleanup(f.Stop)
	return f
}

func (f *fakeServer) serve(l net.Listener) {
	srv := httptest.NewUnstartedServer(f)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	f.srv = srv
}

// Stop closes the listener and every connection; the data stays.
func (f *fakeServer) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.srv = nil
	}
}

// Start serves again on the same port.
func (f *fakeServer) Start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		return
	}
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatalf("restart gofakes3 on %s: %v", f.addr, err)
	}
	f.serve(l)
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
	f := startFakeServer(t)
	conformance(t, store{Endpoint: f.Endpoint, Region: "us-east-1", Access: f.Access, Secret: f.Secret})
}

// The real SDK's errors are classified as the fake's are.
func TestMissingBucketGofakes3(t *testing.T) {
	f := startFakeServer(t)
	st := store{Endpoint: f.Endpoint, Region: "us-east-1", Access: f.Access, Secret: f.Secret}
	err := loadSink(t, st.env("no-such-bucket", nil)).Connect(context.Background())
	if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) || !strings.Contains(err.Error(), `bucket "no-such-bucket" does not exist`) {
		t.Fatalf("Connect to a missing bucket: %v", err)
	}
	for _, mode := range []string{"batch", "message"} {
		bucket := st.createBucket(t, "deleted-"+mode)
		s := loadSink(t, st.env(bucket, map[string]string{"AWS_S3_OBJECT_MODE": mode}))
		if err := s.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
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
	f := startFakeServer(t)
	st := store{Endpoint: f.Endpoint, Region: "us-east-1", Access: f.Access, Secret: f.Secret}
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
	s := loadSink(t, env)
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	ms := textMessages(3, 10)
	if err := s.WriteBatch(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	got, _ := payloads(t, objstore.Batch, st.objects(t, bucket))
	if len(got) != 3 {
		t.Errorf("read back %d messages", len(got))
	}
}
