package sqssink

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloud-block/cloud-block/common/sink"
)

// isolateSDK keeps the SDK's default chain away from this machine's AWS
// set-up and from the EC2 metadata address, and makes it try each call once.
func isolateSDK(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_MAX_ATTEMPTS":            "1",
	} {
		t.Setenv(k, v)
	}
	for _, k := range []string{"AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// sqsReply is a tiny SQS endpoint: GetQueueUrl and GetQueueAttributes
// answer, SendMessageBatch answers with the error set (or success).
type sqsReply struct {
	mu     sync.Mutex
	status int
	typ    string // __type
	query  string // x-amzn-query-error
	auth   []string
	srv    *httptest.Server
}

func newReply(t *testing.T) *sqsReply {
	r := &sqsReply{}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *sqsReply) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	var in struct{ Entries []struct{ Id string } }
	body, _ := io.ReadAll(req.Body)
	json.Unmarshal(body, &in)
	switch strings.TrimPrefix(req.Header.Get("X-Amz-Target"), "AmazonSQS.") {
	case "GetQueueUrl":
		json.NewEncoder(w).Encode(map[string]string{"QueueUrl": r.srv.URL + "/000000000000/q"})
	case "GetQueueAttributes":
		json.NewEncoder(w).Encode(map[string]any{"Attributes": map[string]string{"MaximumMessageSize": "262144"}})
	case "SendMessageBatch":
		if r.status == 0 {
			var ok []map[string]string
			for _, e := range in.Entries {
				ok = append(ok, map[string]string{"Id": e.Id, "MessageId": "m-" + e.Id})
			}
			json.NewEncoder(w).Encode(map[string]any{"Successful": ok, "Failed": []any{}})
			return
		}
		if r.query != "" {
			w.Header().Set("X-Amzn-Query-Error", r.query)
		}
		w.WriteHeader(r.status)
		json.NewEncoder(w).Encode(map[string]string{"__type": r.typ, "message": "the service says no"})
	}
}

// The real SDK's errors, as SQS sends them, land in the right class.
func TestSDKErrorsClassified(t *testing.T) {
	isolateSDK(t)
	r := newReply(t)
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
	s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_SQS_REGION": "eu-west-1", "AWS_SQS_ENDPOINT": r.srv.URL,
		"AWS_SQS_ACCESS_KEY": "AKIDEXAMPLE", "AWS_SQS_SECRET_KEY": secret}, testDevice)
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if err := s.WriteBatch(context.Background(), msgs([]byte("ok"))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		status     int
		typ, query string
		class      string
	}{
		{403, "com.amazon.coral.service#AccessDeniedException", "AccessDenied;Sender", "auth"},
		{400, "com.amazon.coral.service#InvalidClientTokenId", "InvalidClientTokenId;Sender", "auth"},
		{403, "com.amazon.coral.service#InvalidSignatureException", "SignatureDoesNotMatch;Sender", "auth"},
		{400, "com.amazon.coral.service#ExpiredTokenException", "ExpiredToken;Sender", "auth"},
		{400, "com.amazon.coral.service#UnrecognizedClientException", "", "auth"},
		{400, "com.amazonaws.sqs#KmsAccessDenied", "KMS.AccessDeniedException;Sender", "auth"},
		{400, "com.amazonaws.sqs#RequestThrottled", "RequestThrottled;Sender", "retry"},
		{400, "com.amazon.coral.availability#ThrottlingException", "ThrottlingException;Sender", "retry"},
		{400, "com.amazonaws.sqs#KmsThrottled", "KMS.ThrottlingException;Sender", "retry"},
		{400, "com.amazonaws.sqs#QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue;Sender", "retry"},
		{500, "com.amazon.coral.service#InternalFailure", "InternalFailure;Receiver", "retry"},
		{503, "com.amazon.coral.service#ServiceUnavailableException", "ServiceUnavailable;Receiver", "retry"},
		{400, "com.amazonaws.sqs#InvalidMessageContents", "InvalidMessageContents;Sender", "permanent"},
		{400, "com.amazonaws.sqs#BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong;Sender", "permanent"},
		{400, "com.amazon.coral.service#InvalidParameterValueException", "InvalidParameterValue;Sender", "permanent"},
	} {
		r.mu.Lock()
		r.status, r.typ, r.query = tc.status, tc.typ, tc.query
		r.mu.Unlock()
		err := s.WriteBatch(context.Background(), msgs([]byte("x")))
		class := "retry"
		var be *sink.BatchError
		if errors.As(err, &be) {
			err = be.Failed[0]
		}
		switch {
		case err == nil:
			class = "ok"
		case sink.IsPermanent(err):
			class = "permanent"
		case sink.IsAuth(err):
			class = "auth"
		}
		if class != tc.class {
			t.Errorf("%d %s: %s (%v), want %s", tc.status, tc.typ, class, err, tc.class)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("secret key in the error: %v", err)
		}
	}
}

func TestDefaultCredentialChain(t *testing.T) {
	t.Run("environment keys and endpoint", func(t *testing.T) {
		isolateSDK(t)
		r := newReply(t)
		t.Setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
		t.Setenv("AWS_REGION", "ap-southeast-2")
		t.Setenv("AWS_ENDPOINT_URL_SQS", r.srv.URL)
		s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "q"}, testDevice)
		if err := s.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer s.Close(context.Background())
		if err := s.WriteBatch(context.Background(), msgs([]byte("x"))); err != nil {
			t.Fatal(err)
		}
		if a := r.auth[0]; !strings.Contains(a, "Credential=AKIDFROMENV/") || !strings.Contains(a, "/ap-southeast-2/sqs/") {
			t.Errorf("Authorization %q", a)
		}
	})
	t.Run("region from the queue URL", func(t *testing.T) {
		isolateSDK(t)
		r := newReply(t)
		s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "https://sqs.eu-north-1.amazonaws.com/123456789012/q",
			"AWS_SQS_ENDPOINT": r.srv.URL, "AWS_SQS_ACCESS_KEY": "AKID", "AWS_SQS_SECRET_KEY": "secret"}, testDevice)
		if err := s.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer s.Close(context.Background())
		if a := r.auth[0]; !strings.Contains(a, "/eu-north-1/sqs/") {
			t.Errorf("Authorization %q", a)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		isolateSDK(t)
		r := newReply(t)
		s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_SQS_REGION": "eu-west-1", "AWS_SQS_ENDPOINT": r.srv.URL}, testDevice)
		err := s.Connect(context.Background())
		if !sink.IsAuth(err) || !strings.Contains(err.Error(), "no AWS credentials") {
			t.Errorf("want an AuthError about credentials, got %v", err)
		}
		if len(r.auth) != 0 {
			t.Errorf("%d requests without credentials", len(r.auth))
		}
		s.Close(context.Background())
	})
	t.Run("no region", func(t *testing.T) {
		isolateSDK(t)
		s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_SQS_ACCESS_KEY": "AKID", "AWS_SQS_SECRET_KEY": "secret"}, testDevice)
		err := s.Connect(context.Background())
		if err == nil || !strings.Contains(err.Error(), "no AWS region: set AWS_SQS_REGION") {
			t.Errorf("got %v", err)
		}
	})
}
