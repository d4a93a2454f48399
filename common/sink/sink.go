// Package sink defines the one interface a destination implements, the
// Message it receives, and the error classes the pipeline acts on.
//
// A destination only turns a batch of messages into SDK calls. It never
// touches MQTT, the disk buffer, retries or signals: common does that.
package sink

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Message is one MQTT message as received, with a stable identity.
type Message struct {
	// ID is stable across restarts and unique for this device and service.
	// IDs of one spool sort in receive order (see spool.ID).
	ID string
	// Topic is the MQTT topic the message was published on.
	Topic string
	// Received is when the block received the message (UTC).
	Received time.Time
	// Payload holds the bytes exactly as published. Sinks must not modify it.
	Payload []byte
}

// Limits are a destination's own bounds; the pipeline cuts batches to fit.
// Zero means "no limit of its own".
type Limits struct {
	// MaxBatchMessages is the most messages one WriteBatch may carry.
	MaxBatchMessages int
	// MaxBatchBytes bounds the sum of PayloadBytes+MessageOverhead over a batch.
	MaxBatchBytes int
	// MaxMessageBytes is the largest single payload the destination accepts;
	// a larger one is dead-lettered without a call.
	MaxMessageBytes int
	// MessageOverhead is added to each payload's size when summing a batch
	// (attributes, envelope), so MaxBatchBytes is not exceeded on the wire.
	MessageOverhead int
	// MaxInFlight caps the batches sent at once (1 keeps order, e.g. SQS FIFO
	// or Pub/Sub ordering keys); 0 leaves it to BATCH_CONCURRENCY.
	MaxInFlight int
	// StableBatches asks that a batch resent after a crash hold exactly the
	// same messages as the first attempt, because the destination names what
	// it writes after the batch (object keys): the resend then overwrites
	// instead of duplicating. The pipeline records each batch's range
	// durably before sending it, and sends one batch at a time.
	StableBatches bool
}

// Sink is a destination.
type Sink interface {
	// Connect creates the SDK clients once. It is retried with backoff by
	// the pipeline until it succeeds or the context ends.
	Connect(ctx context.Context) error
	// Limits is called after a successful Connect (some limits are read from
	// the cloud, e.g. an SQS queue's MaximumMessageSize).
	Limits() Limits
	// WriteBatch blocks until every message of batch is stored in the cloud,
	// or fails. When only some fail it returns a *BatchError naming them.
	// Errors that retrying cannot fix are wrapped with Permanent.
	WriteBatch(ctx context.Context, batch []Message) error
	// Close releases the clients. Idempotent; safe after a failed Connect.
	Close(ctx context.Context) error
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that retrying cannot fix (message too large,
// invalid content). The message goes to the dead-letter store.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err (or anything it wraps) was marked Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// AuthError marks a failure to authenticate or a refusal to authorise;
// the run loop re-reads secrets before the next attempt.
type AuthError struct{ Err error }

func (e *AuthError) Error() string { return "authentication: " + e.Err.Error() }
func (e *AuthError) Unwrap() error { return e.Err }

// IsAuth reports whether err is an AuthError.
func IsAuth(err error) bool {
	var a *AuthError
	return errors.As(err, &a)
}

// BatchError reports a partial failure: Failed maps the index of each
// failed message in the batch to its error. Messages not named succeeded.
type BatchError struct {
	Failed map[int]error
}

func (e *BatchError) Error() string {
	idx := make([]int, 0, len(e.Failed))
	for i := range e.Failed {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var b strings.Builder
	fmt.Fprintf(&b, "%d messages failed", len(idx))
	for n, i := range idx {
		if n == 3 {
			fmt.Fprintf(&b, "; ...")
			break
		}
		fmt.Fprintf(&b, "; [%d] %v", i, e.Failed[i])
	}
	return b.String()
}

// Fail records err for the message at index i, creating the map on first use.
func (e *BatchError) Fail(i int, err error) {
	if e.Failed == nil {
		e.Failed = make(map[int]error)
	}
	e.Failed[i] = err
}

// Err returns e when it names any failure, else nil.
func (e *BatchError) Err() error {
	if e == nil || len(e.Failed) == 0 {
		return nil
	}
	return e
}

// Checker is a destination that can prove, before the block is deployed,
// that it is reachable and takes the configured credentials, with calls
// that leave the destination as it was (the check subcommand). Check is
// called on a connected sink: what Connect already proved need not be
// asked again.
type Checker interface {
	// Check returns what it proved, one finding a line, or the error that
	// stopped it: an AuthError when the credentials or a permission the
	// block needs were refused, any other error when the destination could
	// not be reached or did not answer as expected.
	Check(ctx context.Context, opt CheckOptions) ([]Finding, error)
}

// CheckOptions are what the check subcommand asks of a destination.
type CheckOptions struct {
	// Write asks an object store to prove the right to write: it writes a
	// small object (CheckObject) and deletes it. A destination where a
	// write reaches consumers (a queue, a topic, a hub) never writes.
	Write bool
}

// Finding is one line of a check's report.
type Finding struct {
	// Warn marks what was not proven, or what the check left behind,
	// without being an error: a read the block does not need was refused,
	// the test object could not be deleted.
	Warn bool
	Text string
}

// CheckObject is the name and content of the test object a check with
// Write writes for device: under the object layout's prefix (with a "/"
// added if it does not end in one, as for every key), where a policy may
// limit writes to, in a folder and with an extension of its own, so it is
// never taken for one of the block's.
func CheckObject(prefix, device string, now time.Time) (key string, body []byte) {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	stamp := now.UTC().Format("20060102T150405.000000000Z")
	key = prefix + "cloud-block-check/" + device + "-" + stamp + ".txt"
	return key, []byte("written by cloud-block check at " + now.UTC().Format(time.RFC3339Nano) + "; deleted by it unless it could not\n")
}
