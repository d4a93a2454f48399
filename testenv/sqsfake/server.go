// Package sqsfake is an in-memory server that speaks the Amazon SQS API the way the current AWS
// SDKs do (AWS JSON 1.0), for tests. No SQS emulator that speaks that protocol can be installed on
// the build machines, so this one enforces the service rules the project's SQS sink depends on:
// batch limits, the message size limit, the allowed body characters, FIFO ordering and
// deduplication, and the MD5 digests the SDK checks in every reply.
//
// Queue URLs have the form http://<request host>/<AccountID>/<queue name>.
package sqsfake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// AccountID is the account every queue belongs to; it appears in queue URLs and ARNs.
const AccountID = "000000000000"

const (
	contentType  = "application/x-amz-json-1.0"
	targetPrefix = "AmazonSQS."
	// maxRequestBytes bounds what one request may upload. A legal SendMessageBatch is at most
	// 1 MiB of payload, but JSON escaping and base64 inflate it, and a request a little over the
	// limit must still be read to be refused with BatchRequestTooLong rather than a broken pipe.
	maxRequestBytes = 64 << 20
	defaultRegion   = "us-east-1"
)

// Stats counts what the server has done since it was created.
type Stats struct {
	Requests              int // every request received, including refused ones
	Refused               int // requests answered 503 because the server was set down
	SendMessageCalls      int
	SendMessageBatchCalls int
	ReceiveMessageCalls   int
	MessagesEnqueued      int // messages stored; FIFO duplicates are not stored again
	DuplicatesDropped     int // FIFO sends accepted but deduplicated
	MessagesDeleted       int
	EntriesFailed         int // SendMessageBatch entries reported in Failed
}

// Server is an SQS-compatible http.Handler. The zero value is not usable; call New.
// All methods are safe for concurrent use.
type Server struct {
	mu     sync.Mutex
	queues map[string]*queue
	down   bool
	closed bool
	// wake is closed (and replaced) whenever a long-polling receive may find something new:
	// a message sent or made visible, a queue deleted, the server set down or closed.
	wake     chan struct{}
	stats    Stats
	failNext int
	waiting  int              // receives currently long-polling; tests check it drops after a cancel
	now      func() time.Time // tests replace it to move time without sleeping
}

// New returns an empty server.
func New() *Server {
	return &Server{
		queues: map[string]*queue{},
		wake:   make(chan struct{}),
		now:    time.Now,
	}
}

// SetDown makes every request fail with HTTP 503 ServiceUnavailable while down is true, as during
// an outage; long polls in progress end with that error too. Queues and messages are kept.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	s.wakeAll()
}

// FailNextEntries makes the next n SendMessageBatch entries fail with a service-side fault
// (SenderFault false, code InternalError), as SQS occasionally reports, so callers can test that
// they resend exactly the failed entries. The entries' messages are not stored.
func (s *Server) FailNextEntries(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext = n
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close ends every long poll in progress (they return no messages) and makes later ones return at
// once, so an http.Server or httptest.Server in front of it can shut down without waiting up to
// 20 seconds. Requests are still served.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.wakeAll()
}

// wakeAll must be called with s.mu held.
func (s *Server) wakeAll() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// request is one decoded call.
type request struct {
	r         *http.Request
	body      []byte
	region    string
	accessKey string
}

func (req *request) decode(v any) *apiError {
	body := req.body
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errSerialization(err)
	}
	return nil
}

type handlerFunc func(s *Server, req *request) (any, *apiError)

var actions = map[string]handlerFunc{
	"CreateQueue":                  (*Server).createQueue,
	"GetQueueUrl":                  (*Server).getQueueURL,
	"GetQueueAttributes":           (*Server).getQueueAttributes,
	"SetQueueAttributes":           (*Server).setQueueAttributes,
	"ListQueues":                   (*Server).listQueues,
	"DeleteQueue":                  (*Server).deleteQueue,
	"PurgeQueue":                   (*Server).purgeQueue,
	"SendMessage":                  (*Server).sendMessage,
	"SendMessageBatch":             (*Server).sendMessageBatch,
	"ReceiveMessage":               (*Server).receiveMessage,
	"DeleteMessage":                (*Server).deleteMessage,
	"DeleteMessageBatch":           (*Server).deleteMessageBatch,
	"ChangeMessageVisibility":      (*Server).changeMessageVisibility,
	"ChangeMessageVisibilityBatch": (*Server).changeMessageVisibilityBatch,
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amzn-Requestid", newUUID())

	s.mu.Lock()
	s.stats.Requests++
	down := s.down
	if down {
		s.stats.Refused++
	}
	s.mu.Unlock()
	if down {
		errServiceUnavailable().write(w)
		return
	}

	out, apiErr := s.serve(w, r)
	if apiErr != nil {
		apiErr.write(w)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) (any, *apiError) {
	target := r.Header.Get("X-Amz-Target")
	if r.Method != http.MethodPost || !strings.HasPrefix(target, targetPrefix) {
		return nil, errUnknownOperation(target)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, contentType) {
		return nil, errUnsupportedProtocol(ct)
	}
	handle, ok := actions[strings.TrimPrefix(target, targetPrefix)]
	if !ok {
		return nil, errUnknownOperation(target)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		return nil, errSerialization(fmt.Errorf("read request body: %w", err))
	}
	req := &request{r: r, body: body, region: defaultRegion}
	req.accessKey, req.region = credentialScope(r.Header.Get("Authorization"))
	return handle(s, req)
}

// credentialScope takes the access key id and region out of a SigV4 Authorization header
// ("... Credential=AKID/20240101/us-east-1/sqs/aws4_request, ..."). The signature itself is not
// checked: tests use made-up credentials.
func credentialScope(auth string) (accessKey, region string) {
	region = defaultRegion
	_, rest, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return "", region
	}
	rest, _, _ = strings.Cut(rest, ",")
	parts := strings.Split(rest, "/")
	if len(parts) >= 3 && parts[2] != "" {
		region = parts[2]
	}
	return parts[0], region
}

func (req *request) queueURL(name string) string {
	scheme := "http"
	if req.r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + req.r.Host + "/" + AccountID + "/" + name
}

// queueName extracts the queue name from a queue URL. Any host is accepted: clients reach the
// server under many names (localhost, 127.0.0.1, a compose service name).
func queueName(queueURL string) (string, *apiError) {
	if queueURL == "" {
		return "", errMissingParameter("QueueUrl")
	}
	u, err := url.Parse(queueURL)
	if err != nil {
		return "", errQueueDoesNotExist()
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] != AccountID {
		return "", errQueueDoesNotExist()
	}
	return parts[1], nil
}

// lookup finds the queue a URL names; s.mu must be held.
func (s *Server) lookup(queueURL string) (*queue, *apiError) {
	name, err := queueName(queueURL)
	if err != nil {
		return nil, err
	}
	q, ok := s.queues[name]
	if !ok {
		return nil, errQueueDoesNotExist()
	}
	return q, nil
}

func randomHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newUUID returns a random (version 4) UUID, the form SQS uses for message and request ids.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
