package sqsfake

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// What the tests that use the fake share: the fake on the network for one
// test, an SDK client for it (or for any other SQS), a queue of their own,
// a consumer that takes what the queue holds.

// Endpoint is a Server on the network for one test: over HTTP, on a port of
// 127.0.0.1 it keeps for the whole test. The queues live in the Server, so
// Stop and Start, which take it off that port and put it back, are an
// outage, not a loss. Its methods are safe for concurrent use.
type Endpoint struct {
	// URL is the endpoint an SDK client is given: http://127.0.0.1:<port>.
	URL string

	fake *Server
	addr string
	mu   sync.Mutex
	srv  *http.Server // nil while stopped
}

// Listen serves s on a free port of 127.0.0.1 until the test ends. When it
// ends, s is closed (which ends the long polls in progress) and then the
// endpoint stopped.
func (s *Server) Listen(t testing.TB) *Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sqsfake: %v", err)
	}
	e := &Endpoint{fake: s, addr: ln.Addr().String()}
	e.URL = "http://" + e.addr
	e.serve(ln)
	t.Cleanup(func() {
		s.Close()
		e.Stop()
	})
	return e
}

func (e *Endpoint) serve(ln net.Listener) {
	e.srv = &http.Server{Handler: e.fake}
	go e.srv.Serve(ln)
}

// Stop closes the port and every connection to it: a client's calls fail to
// connect until Start. Stopping a stopped endpoint does nothing.
func (e *Endpoint) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		e.srv.Close()
		e.srv = nil
	}
}

// Start serves again on the same port, waiting up to 10 seconds for the port
// to be free. Starting a running endpoint does nothing.
func (e *Endpoint) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ln, err = net.Listen("tcp", e.addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("sqsfake: serving again on %s: %w", e.addr, err)
	}
	e.serve(ln)
	return nil
}

// Client returns the AWS SDK's SQS client for the SQS at endpoint (an
// Endpoint's URL, or another implementation's), built from nothing on the
// machine, so no shared config file or AWS_ variable changes what a test
// sees: region us-east-1, static credentials test/test (what LocalStack and
// ElasticMQ take), and one attempt per call, because a receive retried after
// its reply was lost would hide the messages it took until their visibility
// timeout. opts change any of these (the region, a retryer, the HTTP client).
func Client(endpoint string, opts ...func(*sqs.Options)) *sqs.Client {
	return sqs.New(sqs.Options{
		Region:           defaultRegion,
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider("test", "test", ""),
		RetryMaxAttempts: 1,
	}, opts...)
}

// CreateQueue creates a queue with attrs through c, deletes it when the test
// ends, and returns its name and URL. The name is name with a random suffix
// (before a .fifo ending), so tests may share a queue service, even an
// external one. A name ending in .fifo makes a FIFO queue: FifoQueue=true
// joins attrs. A refusal fails the test.
func CreateQueue(t testing.TB, c *sqs.Client, name string, attrs map[string]string) (queue, url string) {
	t.Helper()
	stem, fifo := strings.CutSuffix(name, ".fifo")
	queue = stem + "-" + randomHex()
	if fifo {
		queue += ".fifo"
		attrs = maps.Clone(attrs)
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs["FifoQueue"] = "true"
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := c.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(queue), Attributes: attrs})
	if err != nil {
		t.Fatalf("CreateQueue %s: %v", queue, err)
	}
	url = aws.ToString(out.QueueUrl)
	t.Cleanup(func() {
		// The test's context has ended by now.
		c.DeleteQueue(context.Background(), &sqs.DeleteQueueInput{QueueUrl: aws.String(url)})
	})
	return queue, url
}

// Reader takes the messages of one queue as a consumer does: it receives
// them, with all their attributes, and deletes them. It keeps each message
// once however often it is received (again after a deletion that failed, or
// after its visibility timeout ran out first). Its methods are safe for
// concurrent use.
type Reader struct {
	c   *sqs.Client
	url string

	mu   sync.Mutex
	got  []types.Message
	seen map[string]bool // by MessageId
}

// NewReader returns a Reader of the queue at url.
func NewReader(c *sqs.Client, url string) *Reader {
	return &Reader{c: c, url: url, seen: map[string]bool{}}
}

// Receive receives once, up to 10 messages, waiting up to wait for a first
// (0: not at all) and hiding them from other receives for visibility; it
// keeps those it had not received before and deletes them all. It returns
// how many messages it received.
func (r *Reader) Receive(ctx context.Context, wait, visibility time.Duration) (int, error) {
	out, err := r.c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(r.url), MaxNumberOfMessages: 10,
		WaitTimeSeconds: int32(wait / time.Second), VisibilityTimeout: int32(visibility / time.Second),
		MessageAttributeNames:       []string{"All"},
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
	})
	if err != nil || len(out.Messages) == 0 {
		return 0, err
	}
	del := make([]types.DeleteMessageBatchRequestEntry, len(out.Messages))
	r.mu.Lock()
	for i, m := range out.Messages {
		del[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle}
		if id := aws.ToString(m.MessageId); !r.seen[id] {
			r.seen[id] = true
			r.got = append(r.got, m)
		}
	}
	r.mu.Unlock()
	if _, err := r.c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(r.url), Entries: del}); err != nil {
		return 0, err
	}
	return len(out.Messages), nil
}

// Messages returns the messages kept so far, in the order received.
func (r *Reader) Messages() []types.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}
