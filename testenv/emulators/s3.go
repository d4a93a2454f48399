package emulators

import (
	"context"
	"net"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// S3Conn holds what an S3 client needs to reach an emulator.
type S3Conn struct {
	Endpoint  string // http://127.0.0.1:PORT; needs path-style addressing
	Region    string
	AccessKey string
	SecretKey string
}

// Env returns the variables the AWS SDK reads, for a process under test.
func (c S3Conn) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + c.Endpoint,
		"AWS_REGION=" + c.Region,
		"AWS_ACCESS_KEY_ID=" + c.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + c.SecretKey,
	}
}

// Client returns an SDK client for the emulator. Path-style addressing is
// required: the emulators have no DNS for bucket.127.0.0.1.
func (c S3Conn) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(c.Endpoint),
		Region:       c.Region,
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: c.AccessKey, SecretAccessKey: c.SecretKey, Source: "emulators"}, nil
		}),
	})
}

// CreateBucket creates a bucket, failing the test on error.
func (c S3Conn) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %q: %v", name, err)
	}
}

// S3 is gofakes3 served in-process. It accepts any credentials. Its backend
// lives in the test process, so buckets and objects survive Stop/Start.
type S3 struct {
	S3Conn
	t       testing.TB
	addr    string
	handler *gofakes3.GoFakeS3

	mu  sync.Mutex
	srv *httptest.Server
}

// StartS3 serves a fresh in-memory gofakes3 on a free 127.0.0.1 port.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &S3{
		t:       t,
		addr:    l.Addr().String(),
		handler: gofakes3.New(s3mem.New()),
	}
	s.S3Conn = S3Conn{
		Endpoint:  httpURL(s.addr),
		Region:    "us-east-1",
		AccessKey: "test-access-key",
		SecretKey: "test-secret-key",
	}
	s.serve(l)
	t.Cleanup(s.Stop)
	return s
}

func (s *S3) serve(l net.Listener) {
	srv := httptest.NewUnstartedServer(s.handler.Server())
	// httptest binds its own listener; ours is the one on the remembered port.
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	s.srv = srv
}

// Stop closes the listener and every connection; the data is kept.
func (s *S3) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return
	}
	// CloseClientConnections first, so Close does not wait on idle
	// keep-alive connections of clients that outlive the outage.
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.srv = nil
}

// Start serves again on the same port with the same data.
func (s *S3) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("restart gofakes3 on %s: %v", s.addr, err)
	}
	s.serve(l)
}

// Versity is versitygw, a real S3 gateway on a POSIX folder, run as a
// process. It checks SigV4 signatures against AccessKey/SecretKey, and its
// folder outlives Stop/Start, so buckets and objects survive.
type Versity struct {
	S3Conn
	Dir string // the POSIX root: one folder per bucket
	*process
}

// StartVersity starts versitygw from .cache/bin, skipping the test when it
// has not been built.
func StartVersity(t testing.TB) *Versity {
	t.Helper()
	bin := toolBin(t, "versitygw")
	v := &Versity{Dir: filepath.Join(t.TempDir(), "s3")}
	v.S3Conn = S3Conn{
		Region:    "us-east-1",
		AccessKey: "versity-test-access",
		SecretKey: "versity-test-secret-0123456789",
	}
	mkdirAll(t, v.Dir)
	v.process = startProcess(t, false, func(port int) procs.Spec {
		return procs.Spec{
			Name: "versitygw",
			Path: bin,
			Args: []string{
				"--port", procs.Addr(port),
				"--access", v.AccessKey,
				"--secret", v.SecretKey,
				"--region", v.Region,
				"posix", v.Dir,
			},
			Ready: procs.TCPReady(procs.Addr(port)),
		}
	})
	v.Endpoint = httpURL(v.addr())
	return v
}
