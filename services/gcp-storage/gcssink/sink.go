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
	cfg  settings
	dial dialer

	mu  sync.Mutex
	ins inserter
}

func newSink(cfg settings, dial dialer) *Sink { return &Sink{cfg: cfg, dial: dial} }

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

// WriteBatch writes the batch's objects and reports the messages of those
// that failed. A batch that failed whole returns the error itself, so the
// pipeline sees an AuthError as one.
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	ins := s.ins
	s.mu.Unlock()
	if ins == nil {
		return errors.New("gcs: not connected")
	}

	var be sink.BatchError
	// pos maps an index of the messages laid out to its index in batch.
	msgs, pos := batch, []int(nil)
	if s.cfg.maxMessage > 0 {
		msgs = make([]sink.Message, 0, len(batch))
		for i, m := range batch {
			if len(m.Payload) > s.cfg.maxMessage {
				be.Fail(i, sink.Permanent(fmt.Errorf("gcs: payload of %d bytes exceeds %s_MAX_MESSAGE_BYTES (%d)", len(m.Payload), prefix, s.cfg.maxMessage)))
				continue
			}
			msgs = append(msgs, m)
			pos = append(pos, i)
		}
	}
	objs, err := s.cfg.objects.Build(msgs)
	if err != nil {
		// A key that cannot be made (a prefix or device id too long): the
		// configuration needs fixing; the messages wait in the spool.
		return fmt.Errorf("gcs: laying out objects: %w", err)
	}
	errs := s.putAll(ctx, ins, objs)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("gcs: writing to bucket %s: %w", s.cfg.bucket, err)
	}
	for k, err := range errs {
		if err == nil {
			continue
		}
		for _, j := range objs[k].Indexes {
			if pos != nil {
				j = pos[j]
			}
			be.Fail(j, err)
		}
	}
	if len(be.Failed) == len(batch) {
		var first error
		for _, e := range be.Failed {
			if sink.IsPermanent(e) {
				return &be
			}
			first = e
		}
		if len(objs) == 1 {
			return first
		}
		return fmt.Errorf("all %d objects failed: %w", len(objs), first)
	}
	return be.Err()
}

// putAll writes the objects, a few at once, and returns each one's error.
func (s *Sink) putAll(ctx context.Context, ins inserter, objs []objstore.Object) []error {
	errs := make([]error, len(objs))
	if len(objs) == 1 {
		errs[0] = s.put(ctx, ins, &objs[0])
		return errs
	}
	sem := make(chan struct{}, uploadConcurrency)
	var wg sync.WaitGroup
	for k := range objs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[k] = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[k] = s.put(ctx, ins, &objs[k])
		}()
	}
	wg.Wait()
	return errs
}

// put writes one object and classifies its error for the pipeline.
func (s *Sink) put(ctx context.Context, ins inserter, o *objstore.Object) error {
	err := ins.Insert(ctx, s.cfg.bucket, o)
	if err == nil {
		return nil
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == http.StatusPreconditionFailed:
			// The object exists: this batch was written by an attempt whose
			// success was not recorded (a crash, a lost reply).
			return nil
		case ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden:
			return &sink.AuthError{Err: fmt.Errorf("gcs: writing to bucket %s was refused (the service account needs the Storage Object Creator role on it): %w", s.cfg.bucket, err)}
		case ge.Code == http.StatusNotFound:
			return fmt.Errorf("gcs: bucket %s not found (create it, or check %s_BUCKET): %w", s.cfg.bucket, prefix, err)
		case ge.Code == http.StatusBadRequest:
			// The same request is refused again: the object's messages go
			// to the dead-letter store rather than block the ones behind.
			return sink.Permanent(fmt.Errorf("gcs: object %s refused: %w", o.Key, err))
		}
	}
	// The token endpoint refusing the key (revoked, wrong) is an auth
	// failure too; one that cannot be reached is an outage.
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil && (ae.Response.StatusCode == http.StatusBadRequest ||
		ae.Response.StatusCode == http.StatusUnauthorized || ae.Response.StatusCode == http.StatusForbidden) {
		return &sink.AuthError{Err: fmt.Errorf("gcs: getting an access token: %w", err)}
	}
	return fmt.Errorf("gcs: writing %s to bucket %s: %w", o.Key, s.cfg.bucket, err)
}

// Close forgets the client; idempotent. The JSON API client holds no
// resources beyond pooled connections.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	s.ins = nil
	s.mu.Unlock()
	return nil
}
