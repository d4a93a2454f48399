package gcssink

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/api/googleapi"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func TestEnvTable(t *testing.T) { sinktest.EnvTable(t, Service) }

// The modes the conformance suite runs in, against the fake and the emulator.
var modes = map[string]map[string]string{
	"batch":      {"GCP_STORAGE_MAX_MESSAGE_BYTES": "1MiB"},
	"batch-gzip": {"GCP_STORAGE_MAX_MESSAGE_BYTES": "1MiB", "GCP_STORAGE_GZIP": "true", "GCP_STORAGE_KEY_TEMPLATE": "{topic}/{first}-{last}"},
	"message":    {"GCP_STORAGE_MAX_MESSAGE_BYTES": "1MiB", "GCP_STORAGE_OBJECT_MODE": "message"},
}

func TestConformanceFake(t *testing.T) {
	for name, env := range modes {
		t.Run(name, func(t *testing.T) {
			f := newFakeBucket()
			sinktest.Run(t, sinktest.Harness{
				New: func(t *testing.T) sink.Sink { return fakeSink(t, f, env) },
				NewBroken: func(t *testing.T) sink.Sink {
					s := fakeSink(t, f, env)
					s.dial = func(context.Context, Config) (inserter, error) {
						return nil, errors.New("gcs: creating the client: no route to host")
					}
					return s
				},
				ReadBack: func(t *testing.T, ids []string) map[string][]byte { return f.readBack(t) },
			})
		})
	}
}

// connected returns a sink on f configured from env, connected.
func connected(t *testing.T, f *fakeBucket, env map[string]string) *Sink {
	t.Helper()
	return sinktest.Connected(t, fakeSink(t, f, env))
}

// msgs is a batch of the payloads; ids ep-000000000001 and on.
func msgs(payloads ...string) []sink.Message {
	return sinktest.Batch("ep", "cloud-input/a", sinktest.Received, payloads...)
}

func TestObjectLayout(t *testing.T) {
	f := newFakeBucket()
	s := connected(t, f, map[string]string{"GCP_STORAGE_PREFIX": "site1"})
	if lim := s.Limits(); !lim.StableBatches || lim.MaxMessageBytes != 0 {
		t.Errorf("limits %+v", lim)
	}
	if err := s.WriteBatch(context.Background(), msgs(`{"t":1}`, "two")); err != nil {
		t.Fatal(err)
	}
	key := "site1/dev-1/2024/03/05/07/ep-000000000001-ep-000000000002.ndjson"
	o, ok := f.objects[key]
	if !ok || o.contentType != "application/x-ndjson" || o.contentEnc != "" {
		t.Fatalf("objects %v, want %s: %+v", f.keys(), key, o)
	}
	want := `{"id":"ep-000000000001","topic":"cloud-input/a","received":"2024-03-05T07:08:09.123456789Z","device":"dev-1","json":{"t":1}}` + "\n" +
		`{"id":"ep-000000000002","topic":"cloud-input/a","received":"2024-03-05T07:08:09.123456789Z","device":"dev-1","text":"two"}` + "\n"
	if string(o.body) != want {
		t.Errorf("body:\n%s\nwant:\n%s", o.body, want)
	}

	f = newFakeBucket()
	s = connected(t, f, map[string]string{"GCP_STORAGE_OBJECT_MODE": "message"})
	if lim := s.Limits(); lim.StableBatches {
		t.Errorf("message mode asks for stable batches: %+v", lim)
	}
	batch := msgs(`{"t":1}`, "text", "\xff\x00")
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for i, ct := range []string{"application/json", "text/plain; charset=utf-8", "application/octet-stream"} {
		o := f.objects["dev-1/2024/03/05/07/"+batch[i].ID]
		if o.contentType != ct || string(o.body) != string(batch[i].Payload) {
			t.Errorf("[%d] %+v, want %s", i, o, ct)
		}
	}
}

// A batch sent again (after a crash, or a reply lost on the way) finds its
// object already there: that is success, and nothing is duplicated.
func TestResentBatchKeepsTheObject(t *testing.T) {
	f := newFakeBucket()
	s := connected(t, f, nil)
	batch := msgs("a", "b", "c")
	for range 2 {
		if err := s.WriteBatch(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.objects) != 1 || f.inserts != 2 {
		t.Errorf("objects %v after %d inserts", f.keys(), f.inserts)
	}
}

func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		err             error
		auth, permanent bool
		text            string
	}{
		{&googleapi.Error{Code: 403, Message: "denied"}, true, false, "refused (the service account needs the Storage Object Creator role on it)"},
		{&googleapi.Error{Code: 401, Message: "bad token"}, true, false, "gcs: writing to bucket bkt was refused"},
		{&googleapi.Error{Code: 404, Message: "The specified bucket does not exist."}, false, false, "gcs: bucket bkt not found (create it, or check GCP_STORAGE_BUCKET)"},
		{&googleapi.Error{Code: 503, Message: "backend error"}, false, false, "gcs: writing"},
		{&googleapi.Error{Code: 429, Message: "slow down"}, false, false, "slow down"},
		{&googleapi.Error{Code: 400, Message: "invalid"}, false, true, "refused: googleapi: Error 400: invalid"},
		{context.DeadlineExceeded, false, false, "deadline"},
	} {
		f := newFakeBucket()
		f.fail = func(*objstore.Object) error { return tc.err }
		// Two topics, two objects: both fail.
		s := connected(t, f, map[string]string{"GCP_STORAGE_KEY_TEMPLATE": "{topic}/{first}"})
		batch := msgs("a", "b", "c")
		batch[1].Topic = "cloud-input/b"
		err := s.WriteBatch(context.Background(), batch)
		if err == nil || sink.IsAuth(err) != tc.auth || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%v: got %v (auth %v)", tc.err, err, sink.IsAuth(err))
			continue
		}
		var be *sink.BatchError
		if tc.permanent {
			if !errors.As(err, &be) || len(be.Failed) != 3 || !sink.IsPermanent(be.Failed[1]) {
				t.Errorf("%v: want every message failed permanently: %v", tc.err, err)
			}
		} else if sink.IsPermanent(err) || errors.As(err, &be) {
			t.Errorf("%v: a whole-batch failure should be one retryable error: %v", tc.err, err)
		}
	}
}

// With one object per topic, a failed object fails the batch whole (the
// object stores' one verdict, objstore.Writer), and the retry lays out the
// very same objects: the one already stored is kept, the other written.
func TestPartialFailureByObject(t *testing.T) {
	f := newFakeBucket()
	var failedKey string
	f.fail = func(o *objstore.Object) error {
		if strings.HasPrefix(o.Key, "cloud-input/b/") && failedKey == "" {
			failedKey = o.Key
			return &googleapi.Error{Code: 503}
		}
		return nil
	}
	s := connected(t, f, map[string]string{"GCP_STORAGE_KEY_TEMPLATE": "{topic}/{first}-{last}"})
	batch := msgs("a1", "b1", "a2", "b2")
	batch[1].Topic, batch[3].Topic = "cloud-input/b", "cloud-input/b"
	err := s.WriteBatch(context.Background(), batch)
	var be *sink.BatchError
	if err == nil || errors.As(err, &be) || sink.IsPermanent(err) {
		t.Fatalf("got %v, want one retryable error for the batch", err)
	}
	if err := s.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.objects[failedKey]; !ok || len(f.objects) != 2 {
		t.Errorf("objects %v, want %s among them", f.keys(), failedKey)
	}
}

func TestMessageModeConcurrentWithPerMessageFailures(t *testing.T) {
	f := newFakeBucket()
	f.gate = make(chan struct{})
	f.fail = func(o *objstore.Object) error {
		if strings.HasSuffix(o.Key, "3") {
			return &googleapi.Error{Code: 500}
		}
		return nil
	}
	s := connected(t, f, map[string]string{"GCP_STORAGE_OBJECT_MODE": "message", "GCP_STORAGE_MAX_MESSAGE_BYTES": "10"})
	batch := msgs(strings.Split("0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 this-is-too-long", " ")...)
	done := make(chan error)
	go func() { done <- s.WriteBatch(context.Background(), batch) }()
	time.Sleep(50 * time.Millisecond)
	close(f.gate)
	err := <-done
	var be *sink.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 3 {
		t.Fatalf("got %v", err)
	}
	// ids ending in 3: messages 3 and 13 (ids ...0003, ...0013 are indexes 2 and 12).
	for _, i := range []int{2, 12} {
		if e := be.Failed[i]; e == nil || sink.IsPermanent(e) {
			t.Errorf("[%d] = %v", i, e)
		}
	}
	if e := be.Failed[20]; !sink.IsPermanent(e) || !strings.Contains(e.Error(), "payload of 16 bytes exceeds GCP_STORAGE_MAX_MESSAGE_BYTES (10 bytes)") {
		t.Errorf("[20] = %v", e)
	}
	if f.inFlight.Peak() != uploadConcurrency || len(f.objects) != 18 {
		t.Errorf("peak %d uploads at once (want %d), %d objects", f.inFlight.Peak(), uploadConcurrency, len(f.objects))
	}
}

func TestContextEndsTheUpload(t *testing.T) {
	f := newFakeBucket()
	f.gate = make(chan struct{})
	defer close(f.gate)
	s := connected(t, f, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.WriteBatch(ctx, msgs("a"))
	if !errors.Is(err, context.DeadlineExceeded) || sink.IsPermanent(err) {
		t.Errorf("got %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Error(err)
	}
	if err := s.WriteBatch(context.Background(), msgs("a")); err == nil || sink.IsPermanent(err) {
		t.Errorf("after close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GCP_STORAGE_BUCKET is not set: required: Bucket the objects are written to. It must exist; the service account needs the Storage Object Creator role on it (`roles/storage.objectCreator`)."},
		{map[string]string{"GCP_STORAGE_BUCKET": "My_Bucket"},
			`GCP_STORAGE_BUCKET="My_Bucket" is invalid: want a bucket name: 3 to 63 lower-case letters, digits, - _ and . (up to 222 with dots), starting and ending with a letter or digit`},
		{map[string]string{"GCP_STORAGE_BUCKET": strings.Repeat("b", 64)},
			`GCP_STORAGE_BUCKET="` + strings.Repeat("b", 64) + `" is invalid: want a bucket name: 3 to 63 lower-case letters, digits, - _ and . (up to 222 with dots), starting and ending with a letter or digit`},
		{map[string]string{"GCP_STORAGE_BUCKET": "bkt", "GCP_STORAGE_OBJECT_MODE": "message", "GCP_STORAGE_GZIP": "true"},
			`GCP_STORAGE_GZIP="true" is invalid: want false when GCP_STORAGE_OBJECT_MODE is message, which stores each payload unchanged`},
		{map[string]string{"GCP_STORAGE_BUCKET": "bkt", "GCP_STORAGE_MAX_MESSAGE_BYTES": "2GiB"},
			`GCP_STORAGE_MAX_MESSAGE_BYTES="2GiB" is invalid: want a size such as 262144, 256KiB or 64MiB, from 0 to 1GiB`},
		{map[string]string{"GCP_STORAGE_BUCKET": "bkt", "GCP_STORAGE_PRIVATE_KEY": "x"},
			"GCP_STORAGE_CLIENT_EMAIL is not set: required when GCP_STORAGE_PRIVATE_KEY is set\nGCP_STORAGE_PRIVATE_KEY=(secret value not shown) is invalid: want the service account's PEM private key, -----BEGIN PRIVATE KEY----- ... (literal \\n allowed): no PEM block found"},
		{map[string]string{"GCP_STORAGE_BUCKET": "bkt", "GCP_STORAGE_ENDPOINT": "http://storage.example.com"},
			`GCP_STORAGE_ENDPOINT="http://storage.example.com" is invalid: want an https://host[:port] URL without a path (the API's /storage/v1/ is added)`},
		{map[string]string{"GCP_STORAGE_BUCKET": "bkt", "GCP_STORAGE_ENDPOINT": "https://storage.example.com", "STORAGE_EMULATOR_HOST": "127.0.0.1:4443"},
			`GCP_STORAGE_ENDPOINT="https://storage.example.com" is invalid: want unset when STORAGE_EMULATOR_HOST is set: an emulator is reached without credentials, an endpoint with them`},
	} {
		_, err := loadEnv(tc.env)
		if err == nil || err.Error() != tc.want {
			t.Errorf("env %v:\n got %v\nwant %s", tc.env, err, tc.want)
		}
	}
	// Names with dots may be longer; the original block's project variable is accepted.
	if _, err := loadEnv(map[string]string{"GCP_STORAGE_BUCKET": strings.Repeat("b", 60) + ".example.com", "GCP_STORAGE_PROJECT_ID": "p"}); err != nil {
		t.Error(err)
	}
}

// The real client with a service account key whose token request is
// refused: an AuthError, and the error shows no secret.
func TestTokenRefusedIsAuthError(t *testing.T) {
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_grant","error_description":"Invalid JWT Signature."}`))
	}))
	defer tokens.Close()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	key := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	js, _ := json.Marshal(map[string]string{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
		"private_key": key, "token_uri": tokens.URL + "/token"})
	s := sinktest.Connected(t, envSink(t, map[string]string{"GCP_STORAGE_BUCKET": "bkt", "GCP_STORAGE_CREDENTIALS_JSON": string(js)}))
	err = s.WriteBatch(context.Background(), msgs("a"))
	if !sink.IsAuth(err) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("got %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(der[:8])) {
		t.Errorf("error shows the key: %v", err)
	}
}
