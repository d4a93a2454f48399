package sqsfake

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// endpointEnv, when set, points the tests at another SQS implementation (LocalStack, ElasticMQ,
// the real service) instead of this package's server, to check the fake against it. Tests that
// need the fake's own switches (clock, SetDown, Stats) are skipped then.
const endpointEnv = "SQSFAKE_TEST_ENDPOINT"

// env is one test's server and SDK client.
type env struct {
	t      *testing.T
	client *sqs.Client
	url    string
	fake   *Server    // nil against an external endpoint
	clock  *fakeClock // drives the fake's idea of now; nil against an external endpoint
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t}
	if ext := os.Getenv(endpointEnv); ext != "" {
		e.url = ext
	} else {
		e.fake = New()
		e.clock = &fakeClock{now: time.Now().Truncate(time.Second)}
		e.fake.now = e.clock.Now
		e.url = e.fake.Listen(t).URL
	}
	e.client = Client(e.url)
	return e
}

// needFake skips a test that needs the fake's own controls.
func (e *env) needFake() {
	e.t.Helper()
	if e.fake == nil {
		e.t.Skipf("needs the in-process fake; %s is set", endpointEnv)
	}
}

// retrying makes a client retry a failed call up to attempts times in all,
// waiting at most maxBackoff between tries.
func retrying(attempts int, maxBackoff time.Duration) func(*sqs.Options) {
	return func(o *sqs.Options) {
		o.RetryMaxAttempts = attempts
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) { so.MaxBackoff = maxBackoff })
	}
}

// createQueue creates a queue with a name unique to the test run (so the tests can share an
// external endpoint) and returns its URL.
func (e *env) createQueue(base string, attrs map[string]string) string {
	e.t.Helper()
	_, url := CreateQueue(e.t, e.client, base, attrs)
	return url
}

// fifoAttrs are the attributes of a FIFO queue, plus extra ones.
func fifoAttrs(extra ...string) map[string]string {
	m := map[string]string{"FifoQueue": "true"}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

// queueAttr reads one queue attribute.
func (e *env) queueAttr(url, name string) string {
	e.t.Helper()
	out, err := e.client.GetQueueAttributes(e.t.Context(), &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeName(name)},
	})
	if err != nil {
		e.t.Fatalf("get attribute %s: %v", name, err)
	}
	return out.Attributes[name]
}

// wantAPIError asserts err is (or wraps) a T, the typed error the SDK builds for a modelled
// service error, and that it came with HTTP status.
func wantAPIError[T error](t *testing.T, err error, status int) T {
	t.Helper()
	var target T
	if !errors.As(err, &target) {
		t.Fatalf("error = %v (%T), want %T", err, err, target)
	}
	if got := httpStatus(err); got != status {
		t.Errorf("HTTP status = %d, want %d", got, status)
	}
	return target
}

// wantCode asserts err is a service error with the given (legacy Query) code, fault and status.
func wantCode(t *testing.T, err error, code string, fault smithy.ErrorFault, status int) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error = %v (%T), want a service error %s", err, err, code)
	}
	if ae.ErrorCode() != code {
		t.Errorf("error code = %q, want %q (error %v)", ae.ErrorCode(), code, err)
	}
	if ae.ErrorFault() != fault {
		t.Errorf("fault = %v, want %v", ae.ErrorFault(), fault)
	}
	if got := httpStatus(err); got != status {
		t.Errorf("HTTP status = %d, want %d", got, status)
	}
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// fakeClock is a clock that moves only when told, so visibility timeouts and the deduplication
// window can be tested without sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
