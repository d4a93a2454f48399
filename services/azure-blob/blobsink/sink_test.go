package blobsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

var fakeEnv = map[string]string{
	"AZURE_BLOB_STORAGE_ACCOUNT":     "devstoreaccount1",
	"AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey,
	"AZURE_BLOB_CONTAINER_NAME":      "ctr",
}

// fakeSink returns a sink over store configured by env.
func fakeSink(t *testing.T, store *fakeStore, env map[string]string, logs *sinktest.LogBuffer) *Sink {
	t.Helper()
	c := loadEnv(t, env)
	if logs == nil {
		logs = &sinktest.LogBuffer{}
	}
	return newSink(c, store.clients(c.Container), logs.Logger())
}

func fakeBlobs(store *fakeStore, ctr string) []storedBlob {
	var out []storedBlob
	for name, b := range store.blobs(ctr) {
		out = append(out, storedBlob{name: name, body: b.body, contentType: b.contentType, contentEncoding: b.contentEncoding})
	}
	return out
}

func TestConformanceFake(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		maxBody int
	}{
		{"batch", fakeEnv, 0},
		{"batch-gzip", with(fakeEnv, "AZURE_BLOB_GZIP", "true"), 0},
		{"batch-per-topic", with(fakeEnv, "AZURE_BLOB_KEY_TEMPLATE", "{device}/{topic}/{first}-{last}"), 0},
		// Message mode stores payloads unchanged, so a store limit on the
		// body is one on the payload: the size-limit case runs too.
		{"message", with(fakeEnv, "AZURE_BLOB_OBJECT_MODE", "message"), 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := newFakeStore("ctr")
			store.maxBody = tc.maxBody
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return fakeSink(t, store, tc.env, nil) },
				NewBroken: func(t *testing.T) sink.Sink {
					return fakeSink(t, newFakeStore(), tc.env, nil) // no container
				},
				ReadBack: func(t *testing.T, ids []string) map[string][]byte {
					got, _ := decodeBlobs(t, fakeBlobs(store, "ctr"))
					return got
				},
				MaxMessageBytes: tc.maxBody,
			})
		})
	}
}

func msgs(n int, topic func(i int) string) []sink.Message {
	t0 := time.Date(2024, 3, 5, 7, 8, 9, 0, time.UTC)
	out := make([]sink.Message, n)
	for i := range out {
		out[i] = sink.Message{
			ID: fmt.Sprintf("65e6c5a1beef-%012d", i+1), Topic: topic(i),
			Received: t0.Add(time.Duration(i) * time.Millisecond), Payload: fmt.Appendf(nil, `{"i":%d}`, i),
		}
	}
	return out
}

func oneTopic(int) string { return "cloud-input" }

func TestBlobNamesAndHeaders(t *testing.T) {
	for _, tc := range []struct {
		env           map[string]string
		name, ct, enc string
	}{
		{fakeEnv, "test-device/2024/03/05/07/65e6c5a1beef-000000000001-65e6c5a1beef-000000000003.ndjson", "application/x-ndjson", ""},
		{with(fakeEnv, "AZURE_BLOB_GZIP", "true", "AZURE_BLOB_PREFIX", "raw"),
			"raw/test-device/2024/03/05/07/65e6c5a1beef-000000000001-65e6c5a1beef-000000000003.ndjson.gz", "application/x-ndjson", "gzip"},
	} {
		store := newFakeStore("ctr")
		s := fakeSink(t, store, tc.env, nil)
		if err := s.WriteBatch(context.Background(), msgs(3, oneTopic)); err != nil {
			t.Fatal(err)
		}
		got := store.blobs("ctr")
		b, ok := got[tc.name]
		if !ok || len(got) != 1 {
			t.Fatalf("blobs %v, want only %s", keys(got), tc.name)
		}
		if b.contentType != tc.ct || b.contentEncoding != tc.enc || b.metadata != nil {
			t.Errorf("%s: Content-Type %q Content-Encoding %q metadata %v, want %q %q none", tc.name, b.contentType, b.contentEncoding, b.metadata, tc.ct, tc.enc)
		}
	}
}

// In message mode each blob carries the message's id, topic, time and
// device as its metadata.
func TestMessageBlobMetadata(t *testing.T) {
	store := newFakeStore("ctr")
	s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_OBJECT_MODE", "message"), nil)
	batch := msgs(2, func(i int) string { return []string{"cloud-input", "ünï/c 100%"}[i] })
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	got := store.blobs("ctr")
	for name, want := range map[string]map[string]string{
		"test-device/2024/03/05/07/65e6c5a1beef-000000000001": {"id": "65e6c5a1beef-000000000001", "topic": "cloud-input", "received": "2024-03-05T07:08:09Z", "device": "test-device"},
		"test-device/2024/03/05/07/65e6c5a1beef-000000000002": {"id": "65e6c5a1beef-000000000002", "topic": "%C3%BCn%C3%AF/c%20100%25", "received": "2024-03-05T07:08:09.001Z", "device": "test-device"},
	} {
		if b, ok := got[name]; !ok || !maps.Equal(b.metadata, want) {
			t.Errorf("blob %s: metadata %q, want %q (blobs %v)", name, b.metadata, want, keys(got))
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// A batch sent again (after a crash, the pipeline resends exactly the same
// messages) finds its blob and leaves it as it is.
func TestResendKeepsStoredBlob(t *testing.T) {
	store := newFakeStore("ctr")
	logs := &sinktest.LogBuffer{}
	s := fakeSink(t, store, fakeEnv, logs)
	batch := msgs(5, oneTopic)
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	before := store.blobs("ctr")
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatalf("resend: %v", err)
	}
	after := store.blobs("ctr")
	if len(after) != 1 || store.uploads != 1 {
		t.Fatalf("after a resend: %d blobs, %d uploads applied; want 1, 1", len(after), store.uploads)
	}
	for k := range before {
		if !bytes.Equal(before[k].body, after[k].body) {
			t.Error("resend changed the blob")
		}
	}
	if !strings.Contains(logs.String(), "already stored by an earlier attempt") {
		t.Errorf("resend not logged: %s", logs)
	}
}

// In message mode only the messages whose upload failed are named, with
// their error's class.
func TestPartialFailureMessageMode(t *testing.T) {
	store := newFakeStore("ctr")
	store.fail = func(op, name string) error {
		switch {
		case op != "upload":
		case strings.HasSuffix(name, "-000000000003"):
			return azErr(503, "ServerBusy", "The server is currently unable to receive requests.")
		case strings.HasSuffix(name, "-000000000005"):
			return azErr(413, "RequestBodyTooLarge", "The request body is too large.")
		}
		return nil
	}
	s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_OBJECT_MODE", "message"), nil)
	err := s.WriteBatch(context.Background(), msgs(6, oneTopic))
	var be *sink.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want a BatchError", err)
	}
	if len(be.Failed) != 2 || be.Failed[2] == nil || be.Failed[4] == nil {
		t.Fatalf("failed %v, want indexes 2 and 4", be.Failed)
	}
	if sink.IsPermanent(be.Failed[2]) || !sink.IsPermanent(be.Failed[4]) {
		t.Errorf("503 must be retried, 413 dead-lettered: %v", be)
	}
	if n := len(store.blobs("ctr")); n != 4 {
		t.Errorf("%d blobs stored, want 4", n)
	}
}

// With {topic} in the template a batch is one blob per topic; a failed blob
// fails the batch whole (the object stores' one verdict, objstore.Writer),
// and the retry lands under the same names: the blob already stored is
// found there and kept, the other written.
func TestPartialFailurePerTopic(t *testing.T) {
	store := newFakeStore("ctr")
	failing := true
	store.fail = func(op, name string) error {
		if op == "upload" && strings.HasPrefix(name, "b/") && failing {
			return azErr(500, "InternalError", "Server encountered an internal error.")
		}
		return nil
	}
	s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_KEY_TEMPLATE", "{topic}/{first}-{last}"), nil)
	batch := msgs(6, func(i int) string { return []string{"a", "b"}[i%2] })
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if err == nil || errors.As(err, &be) || sink.IsPermanent(err) {
		t.Fatalf("got %v, want one retryable error for the batch", err)
	}
	failing = false
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	want := []string{"a/65e6c5a1beef-000000000001-65e6c5a1beef-000000000005.ndjson", "b/65e6c5a1beef-000000000002-65e6c5a1beef-000000000006.ndjson"}
	if got := keys(store.blobs("ctr")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("blobs %v, want %v", got, want)
	}
}

// When every upload fails alike, the error keeps its class (an AuthError
// stays one, so the pipeline sees it) instead of becoming a BatchError.
func TestAllFailedKeepsClass(t *testing.T) {
	store := newFakeStore("ctr")
	store.fail = func(op, _ string) error {
		return azErr(403, "AuthenticationFailed", "Server failed to authenticate the request.")
	}
	s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_OBJECT_MODE", "message"), nil)
	err := s.WriteBatch(context.Background(), msgs(4, oneTopic))
	if !sink.IsAuth(err) || sink.IsPermanent(err) {
		t.Fatalf("got %v, want an AuthError", err)
	}
	if !strings.HasPrefix(err.Error(), "authentication: uploading blob ") {
		t.Errorf("message %q", err)
	}
}

func TestUploadConcurrencyBounded(t *testing.T) {
	store := newFakeStore("ctr")
	store.delay = 20 * time.Millisecond
	s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_OBJECT_MODE", "message", "AZURE_BLOB_UPLOAD_CONCURRENCY", "3"), nil)
	start := time.Now()
	if err := s.WriteBatch(context.Background(), msgs(30, oneTopic)); err != nil {
		t.Fatal(err)
	}
	if store.inFlight.Peak() != 3 {
		t.Errorf("%d uploads at once, want 3", store.inFlight.Peak())
	}
	t.Logf("30 uploads of 20 ms, 3 at once: %s", time.Since(start).Round(time.Millisecond))
}

func TestClassify(t *testing.T) {
	s := fakeSink(t, newFakeStore("ctr"), fakeEnv, nil)
	sasURL := "https://acct.blob.core.windows.net/ctr/x?sv=2024-08-04&sp=c&sig=SECRETSIG"
	for _, tc := range []struct {
		name            string
		err             error
		auth, permanent bool
		msg             string
	}{
		{"auth failed", azErr(403, "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."),
			true, false, "authentication: op: 403 AuthenticationFailed: Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."},
		{"not permitted", azErr(403, "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission."),
			true, false, "authentication: op: 403 AuthorizationPermissionMismatch: This request is not authorized to perform this operation using this permission."},
		{"firewall", azErr(403, "AuthorizationFailure", "This request is not authorized to perform this operation."), true, false, ""},
		{"no container", azErr(404, "ContainerNotFound", "The specified container does not exist."),
			false, false, `op: 404 ContainerNotFound: The specified container does not exist. (container "ctr" at https://fake.blob.example/: create it, or set AZURE_BLOB_CREATE_CONTAINER=true)`},
		{"too large", azErr(413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit."), false, true, ""},
		{"busy", azErr(503, "ServerBusy", "The server is currently unable to receive requests. Please retry your request."), false, false, ""},
		{"internal", azErr(500, "InternalError", "Server encountered an internal error. Please try again after some time."), false, false, ""},
		{"timeout", azErr(500, "OperationTimedOut", "The operation could not be completed within the permitted time."), false, false, ""},
		{"refused", &url.Error{Op: "Put", URL: sasURL, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", errors.New("connection refused"))}},
			false, false, `op: Put "https://acct.blob.core.windows.net/ctr/x": dial tcp: connect: connection refused`},
		{"cancelled", &url.Error{Op: "Put", URL: sasURL, Err: context.Canceled}, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.classify(tc.err, "op")
			if sink.IsAuth(err) != tc.auth || sink.IsPermanent(err) != tc.permanent {
				t.Errorf("%v: auth %v permanent %v, want %v %v", err, sink.IsAuth(err), sink.IsPermanent(err), tc.auth, tc.permanent)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message\n%q, want\n%q", err, tc.msg)
			}
			if strings.Contains(err.Error(), "SECRETSIG") || strings.Contains(err.Error(), "sig=") || strings.Contains(err.Error(), "\n") {
				t.Errorf("message leaks the SAS or spans lines: %q", err)
			}
			if tc.name == "cancelled" && !errors.Is(err, context.Canceled) {
				t.Errorf("cancellation lost: %v", err)
			}
		})
	}
}

func TestConnect(t *testing.T) {
	ctx := context.Background()
	t.Run("exists", func(t *testing.T) {
		if err := fakeSink(t, newFakeStore("ctr"), fakeEnv, nil).Connect(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		err := fakeSink(t, newFakeStore(), fakeEnv, nil).Connect(ctx)
		if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) || !strings.Contains(err.Error(), "set AZURE_BLOB_CREATE_CONTAINER=true") {
			t.Fatalf("got %v, want a retryable error with the hint", err)
		}
	})
	t.Run("create", func(t *testing.T) {
		store := newFakeStore()
		s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_CREATE_CONTAINER", "true"), nil)
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := store.containers["ctr"]; !ok {
			t.Fatal("container not created")
		}
		if err := s.Connect(ctx); err != nil {
			t.Fatalf("second connect, container exists: %v", err)
		}
	})
	t.Run("create refused", func(t *testing.T) {
		store := newFakeStore()
		store.fail = func(op, _ string) error {
			return azErr(403, "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission.")
		}
		err := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_CREATE_CONTAINER", "true"), nil).Connect(ctx)
		if !sink.IsAuth(err) {
			t.Fatalf("got %v, want an AuthError", err)
		}
	})
	t.Run("write-only credential", func(t *testing.T) {
		store := newFakeStore("ctr")
		store.fail = func(op, _ string) error {
			if op == "properties" {
				return azErr(403, "AuthorizationPermissionMismatch", "This request is not authorized to perform this operation using this permission.")
			}
			return nil
		}
		logs := &sinktest.LogBuffer{}
		if err := fakeSink(t, store, fakeEnv, logs).Connect(ctx); err != nil {
			t.Fatalf("a credential that may only write must connect: %v", err)
		}
		if !strings.Contains(logs.String(), "existence is not checked") {
			t.Errorf("not warned: %s", logs)
		}
	})
	t.Run("bad key", func(t *testing.T) {
		store := newFakeStore("ctr")
		store.fail = func(string, string) error {
			return azErr(403, "AuthenticationFailed", "Server failed to authenticate the request.")
		}
		if err := fakeSink(t, store, fakeEnv, nil).Connect(ctx); !sink.IsAuth(err) {
			t.Fatalf("got %v, want an AuthError", err)
		}
	})
}

// Build errors (a key that cannot fit 1024 bytes) can never be fixed by a retry.
func TestLayoutErrorIsPermanent(t *testing.T) {
	// Configuration refuses a prefix and template whose fixed text alone
	// cannot fit; these fit, but not with the message ids added.
	tmpl := strings.Repeat("k", 490) + "/{first}-{last}"
	s := fakeSink(t, newFakeStore("ctr"), with(fakeEnv, "AZURE_BLOB_PREFIX", strings.Repeat("p", 500), "AZURE_BLOB_KEY_TEMPLATE", tmpl), nil)
	err := s.WriteBatch(context.Background(), msgs(1, oneTopic))
	if !sink.IsPermanent(err) {
		t.Fatalf("got %v, want permanent", err)
	}
}

func TestCancelledMidBatch(t *testing.T) {
	store := newFakeStore("ctr")
	store.delay = time.Second
	s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_OBJECT_MODE", "message", "AZURE_BLOB_UPLOAD_CONCURRENCY", "2"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.WriteBatch(ctx, msgs(10, oneTopic))
	if err == nil || sink.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("took %s to stop", d)
	}
}

func TestEnvTable(t *testing.T) { sinktest.EnvTable(t, Service) }
