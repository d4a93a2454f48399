package gcssink

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"cloud.google.com/go/auth"
	"google.golang.org/api/googleapi"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
)

// uploadConcurrency bounds the objects written at once (message mode, or
// one object per topic): enough to hide a round trip, few enough for the
// memory and uplink of a small device.
const uploadConcurrency = 8

// Sink writes batches as objects to one bucket.
type Sink struct {
	cfg  Config
	dial dialer

	mu  sync.Mutex
	ins inserter
}

func newSink(cfg Config, dial dialer) *Sink { return &Sink{cfg: cfg, dial: dial} }

// Connect creates the client once.
func (s *Sink) Connect(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ins != nil {
		return nil
	}
	ins, err := s.dial(ctx, s.cfg)
	if err != nil {
		return err
	}
	s.ins = ins
	return nil
}

// Limits: batch objects are named after their first and last message, so a
// batch sent again after a crash must hold the same messages to land on the
// same object. In message mode a key names one message, so batches may
// differ and several may be in flight.
func (s *Sink) Limits() sink.Limits {
	return sink.Limits{
		MaxMessageBytes: s.cfg.maxMessage,
		StableBatches:   s.cfg.objects.Mode != objstore.PerMessage,
	}
}

// WriteBatch writes the batch's objects through the object stores' one
// write path (objstore.Writer).
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	s.mu.Lock()
	ins := s.ins
	s.mu.Unlock()
	if ins == nil {
		return errors.New("gcs: not connected")
	}
	w := objstore.Writer{
		Layout:     s.cfg.objects,
		MaxMessage: int64(s.cfg.maxMessage), MaxMessageVar: prefix + "_MAX_MESSAGE_BYTES",
		Concurrency: uploadConcurrency,
		Put: func(ctx context.Context, o *objstore.Object) (bool, error) {
			return s.put(ctx, ins, o)
		},
	}
	if err := w.Write(ctx, batch); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("gcs: writing to bucket %s: %w", s.cfg.bucket, err)
		}
		return err
	}
	return nil
}

// put writes one object and classifies its error for the pipeline;
// existed reports an object an earlier attempt had stored.
func (s *Sink) put(ctx context.Context, ins inserter, o *objstore.Object) (existed bool, err error) {
	err = ins.Insert(ctx, s.cfg.bucket, o)
	if err == nil {
		return false, nil
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == http.StatusPreconditionFailed:
			// The object exists: this batch was written by an attempt whose
			// success was not recorded (a crash, a lost reply).
			return true, nil
		case ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden:
			return false, &sink.AuthError{Err: fmt.Errorf("gcs: writing to bucket %s was refused (the service account needs the Storage Object Creator role on it): %w", s.cfg.bucket, err)}
		case ge.Code == http.StatusNotFound:
			return false, fmt.Errorf("gcs: bucket %s not found (create it, or check %s_BUCKET): %w", s.cfg.bucket, prefix, err)
		case ge.Code == http.StatusBadRequest:
			// The same request is refused again: the object's messages go
			// to the dead-letter store rather than block the ones behind.
			return false, sink.Permanent(fmt.Errorf("gcs: object %s refused: %w", o.Key, err))
		}
	}
	// Workload identity federation: the token endpoint down or refusing
	// the device. Retried; the error names the endpoint.
	var te *tokenError
	if errors.As(err, &te) {
		return false, fmt.Errorf("gcs: writing %s to bucket %s: %w", o.Key, s.cfg.bucket, te)
	}
	// The token endpoint refusing the key (revoked, wrong) is an auth
	// failure too; one that cannot be reached is an outage.
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil && (ae.Response.StatusCode == http.StatusBadRequest ||
		ae.Response.StatusCode == http.StatusUnauthorized || ae.Response.StatusCode == http.StatusForbidden) {
		return false, &sink.AuthError{Err: fmt.Errorf("gcs: getting an access token: %w", err)}
	}
	return false, fmt.Errorf("gcs: writing %s to bucket %s: %w", o.Key, s.cfg.bucket, err)
}

// Close forgets the client; idempotent. The JSON API client holds no
// resources beyond pooled connections.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	s.ins = nil
	s.mu.Unlock()
	return nil
}
