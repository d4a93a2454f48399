package objstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

func writeMsgs(topics ...string) []sink.Message {
	out := make([]sink.Message, len(topics))
	for i, tp := range topics {
		out[i] = sink.Message{ID: fmt.Sprintf("ep-%012d", i+1), Topic: tp, Received: time.Unix(1700000000, 0).UTC(), Payload: []byte(`{"v":1}`)}
	}
	return out
}

// The one verdict of the object stores' write path.
func TestWriterVerdict(t *testing.T) {
	transient := errors.New("503 slow down")
	refused := sink.Permanent(errors.New("400 refused"))
	auth := &sink.AuthError{Err: errors.New("403 denied")}
	perTopic := Options{Mode: Batch, Device: "d", Template: "{topic}/{first}"}
	perMsg := Options{Mode: PerMessage, Device: "d"}
	failOn := func(sub string, err error) Put {
		return func(_ context.Context, o *Object) (bool, error) {
			if strings.Contains(o.Key, sub) {
				return false, err
			}
			return false, nil
		}
	}
	for _, tc := range []struct {
		name   string
		w      Writer
		batch  []sink.Message
		whole  func(error) bool // the error is returned whole and passes this
		failed []int            // else: a BatchError naming these
	}{
		{"all stored", Writer{Layout: perTopic, Put: failOn("none", nil)}, writeMsgs("a", "b"), func(err error) bool { return err == nil }, nil},
		{"batch mode, one object fails for now: the batch whole", Writer{Layout: perTopic, Put: failOn("b/", transient)}, writeMsgs("a", "b"),
			func(err error) bool { return errors.Is(err, transient) && !sink.IsPermanent(err) }, nil},
		{"batch mode, one object refused: its messages", Writer{Layout: perTopic, Put: failOn("b/", refused)}, writeMsgs("a", "b", "b"), nil, []int{1, 2}},
		{"refused credentials: whole", Writer{Layout: perMsg, Put: failOn("", auth)}, writeMsgs("a", "b"), sink.IsAuth, nil},
		{"message mode, one fails for now: that message", Writer{Layout: perMsg, Put: failOn("0002", transient)}, writeMsgs("a", "a", "a"), nil, []int{1}},
		{"message mode, all fail for now: whole", Writer{Layout: perMsg, Put: failOn("", transient)}, writeMsgs("a", "a"),
			func(err error) bool { return errors.Is(err, transient) }, nil},
		{"too large: that message, permanently", Writer{Layout: perMsg, MaxMessage: 3, MaxMessageVar: "X_MAX", Put: failOn("none", nil)}, writeMsgs("a"), nil, []int{0}},
		{"a key that cannot be made: permanent", Writer{Layout: Options{Mode: Batch, Device: "d", Template: "{topic}"}, Put: failOn("none", nil)},
			writeMsgs(strings.Repeat("t", 1100)), sink.IsPermanent, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.w.Write(context.Background(), tc.batch)
			if tc.whole != nil {
				var be *sink.BatchError
				if !tc.whole(err) || errors.As(err, &be) {
					t.Fatalf("got %v", err)
				}
				return
			}
			var be *sink.BatchError
			if !errors.As(err, &be) || len(be.Failed) != len(tc.failed) {
				t.Fatalf("got %v, want messages %v failed", err, tc.failed)
			}
			for _, i := range tc.failed {
				if be.Failed[i] == nil {
					t.Errorf("message %d not named: %v", i, err)
				}
			}
		})
	}
}

// Objects too large are split in halves, each keyed by its own messages.
func TestWriterSplitsLargeObjects(t *testing.T) {
	var keys []string
	w := Writer{Layout: Options{Mode: Batch, Device: "d"}, MaxObject: 400, MaxObjectVar: "X_MAX_OBJECT",
		Put: func(_ context.Context, o *Object) (bool, error) {
			if len(o.Body) > 400 {
				t.Errorf("object of %d bytes", len(o.Body))
			}
			keys = append(keys, o.Key)
			return false, nil
		}}
	batch := writeMsgs("a", "a", "a", "a")
	for i := range batch {
		batch[i].Payload = []byte(strings.Repeat("x", 150))
	}
	if err := w.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if len(keys) < 2 {
		t.Fatalf("not split: %v", keys)
	}
}

// Waiting for an upload slot ends with the context.
func TestWriterHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var started atomic.Int32
	w := Writer{Layout: Options{Mode: PerMessage, Device: "d"}, Concurrency: 1,
		Put: func(ctx context.Context, o *Object) (bool, error) {
			started.Add(1)
			cancel()
			<-ctx.Done()
			return false, ctx.Err()
		}}
	topics := make([]string, 50)
	for i := range topics {
		topics[i] = "a"
	}
	err := w.Write(ctx, writeMsgs(topics...))
	if !errors.Is(err, context.Canceled) || started.Load() == 50 {
		t.Fatalf("got %v after %d uploads started", err, started.Load())
	}
}
