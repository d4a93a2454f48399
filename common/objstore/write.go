package objstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Put stores one object in a destination. existed reports an object that
// an earlier attempt of the same batch had already stored (the keys are
// deterministic and the bytes the same, so it is kept). The error is
// classified for the pipeline: a *sink.AuthError for refused credentials,
// sink.Permanent for an object the store will never take, anything else is
// retried.
type Put func(ctx context.Context, o *Object) (existed bool, err error)

// Writer is the one write path of the object stores (S3, Azure Blob,
// Cloud Storage): the layout, per-message and per-object limits, a bounded
// fan-out that honours the context, and one verdict for the batch. The
// stores differ only in Put.
type Writer struct {
	Layout Options
	// MaxMessage refuses, permanently and alone, a payload larger than
	// this; MaxMessageVar names the setting in the error. 0: no limit.
	MaxMessage    int64
	MaxMessageVar string
	// MaxObject splits a batch object larger than this in halves until
	// each part fits, each named after its own first and last message, so
	// that a resend splits the same way; a message whose own object is
	// larger fails permanently. MaxObjectVar names the setting. 0: no limit.
	MaxObject    int64
	MaxObjectVar string
	// Concurrency is how many objects are written at once (at least 1).
	Concurrency int
	Put         Put
	Log         *slog.Logger
}

// Write stores batch as objects. The verdict:
//   - nil when every object is stored (or was already);
//   - a permanent error for a layout that cannot be made (the batch is
//     dead-lettered with the reason: a retry would make the same keys);
//   - the error itself, retried whole, for refused credentials, an ended
//     context, and in batch mode any failure that is not permanent (the
//     batch is sent again as it was: stored objects are kept or rewritten
//     with the same bytes, the others written);
//   - otherwise a *sink.BatchError naming the messages refused for good
//     (too large, or their object refused) and, in message mode, those
//     whose object failed for now; the same error whole when every message
//     failed alike and none for good, so that /ready shows it.
func (w *Writer) Write(ctx context.Context, batch []sink.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var failed sink.BatchError
	pos := make([]int, 0, len(batch))
	for i, m := range batch {
		if w.MaxMessage > 0 && int64(len(m.Payload)) > w.MaxMessage {
			failed.Fail(i, sink.Permanent(fmt.Errorf("payload of %d bytes exceeds %s (%d bytes)", len(m.Payload), w.MaxMessageVar, w.MaxMessage)))
			continue
		}
		pos = append(pos, i)
	}
	objs, err := w.layout(batch, pos, &failed)
	if err != nil {
		// A key that cannot be made (with a long topic in the template, more
		// than the stores' 1,024 bytes): a retry would make the same key, and
		// hold up every message behind. Dead-lettered with the reason.
		return sink.Permanent(fmt.Errorf("laying out objects: %w", err))
	}
	errs, existed := w.putAll(ctx, objs)
	if err := ctx.Err(); err != nil {
		return err
	}
	if existed > 0 && w.Log != nil {
		w.Log.Info("objects already stored by an earlier attempt of this batch were kept", "objects", existed, "messages", len(batch))
	}
	var retry error
	permanent := len(failed.Failed) > 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		var auth *sink.AuthError
		if errors.As(err, &auth) {
			return err // concerns every object; the pipeline acts on it whole
		}
		if sink.IsPermanent(err) {
			permanent = true
		} else if retry == nil {
			retry = err
		}
		for _, j := range objs[i].Indexes {
			failed.Fail(j, err)
		}
	}
	if retry != nil && (w.Layout.Mode != PerMessage || len(failed.Failed) == len(batch) && !permanent) {
		return retry
	}
	return failed.Err()
}

// layout builds the objects of the messages of batch at positions pos;
// the objects' Indexes are positions in batch.
func (w *Writer) layout(batch []sink.Message, pos []int, failed *sink.BatchError) ([]Object, error) {
	msgs := batch
	if len(pos) != len(batch) {
		msgs = make([]sink.Message, len(pos))
		for k, i := range pos {
			msgs[k] = batch[i]
		}
	}
	objs, err := w.Layout.Build(msgs)
	if err != nil {
		return nil, err
	}
	out := make([]Object, 0, len(objs))
	for _, o := range objs {
		for k, j := range o.Indexes {
			o.Indexes[k] = pos[j]
		}
		switch {
		case w.MaxObject <= 0 || int64(len(o.Body)) <= w.MaxObject:
			out = append(out, o)
		case len(o.Indexes) == 1:
			failed.Fail(o.Indexes[0], sink.Permanent(fmt.Errorf(
				"its object of %d bytes exceeds %s (%d bytes)", len(o.Body), w.MaxObjectVar, w.MaxObject)))
		default:
			half := len(o.Indexes) / 2
			for _, part := range [][]int{o.Indexes[:half], o.Indexes[half:]} {
				sub, err := w.layout(batch, part, failed)
				if err != nil {
					return nil, err
				}
				out = append(out, sub...)
			}
		}
	}
	return out, nil
}

// putAll writes objs, at most Concurrency at once, and returns each one's
// error and how many were already stored. Waiting for a slot ends with ctx.
func (w *Writer) putAll(ctx context.Context, objs []Object) ([]error, int) {
	errs := make([]error, len(objs))
	var mu sync.Mutex
	existed := 0
	put := func(i int) {
		was, err := w.Put(ctx, &objs[i])
		errs[i] = err
		if was {
			mu.Lock()
			existed++
			mu.Unlock()
		}
	}
	if len(objs) == 1 {
		put(0)
		return errs, existed
	}
	sem := make(chan struct{}, max(w.Concurrency, 1))
	var wg sync.WaitGroup
	for i := range objs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			put(i)
		})
	}
	wg.Wait()
	return errs, existed
}
