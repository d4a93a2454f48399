package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// flakyDead is a dead-letter store whose first fail calls fail.
type flakyDead struct {
	mu      sync.Mutex
	fail    int
	msgs    []sink.Message
	reasons []string
}

func (d *flakyDead) Put(msgs []sink.Message, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail > 0 {
		d.fail--
		return errors.New("disk full")
	}
	d.msgs = append(d.msgs, msgs...)
	d.reasons = append(d.reasons, reason)
	return nil
}

type ingestRig struct {
	sp   *spool.Spool
	dead *flakyDead
	pm   *pipeline.Metrics
	in   *ingest
	logs *bytes.Buffer
}

func newIngestRig(t *testing.T, ctx context.Context, dead *flakyDead) *ingestRig {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), MaxBytes: spool.MaxBytesMin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	reg := metrics.NewRegistry()
	r := &ingestRig{sp: sp, dead: dead, pm: pipeline.NewMetrics(reg), logs: &bytes.Buffer{}}
	log := slog.New(slog.NewJSONHandler(r.logs, nil)) // written by the test's goroutine only
	pipe, err := pipeline.New(pipeline.Config{RetryInitial: pipeline.RetryMin}, sp, nil, dead, r.pm, log)
	if err != nil {
		t.Fatal(err)
	}
	r.in = newIngest(ctx, sp, pipe.DeadLetter, reg)
	return r
}

// message returns an MQTT message and a channel closed on its PUBACK.
func message(payload []byte) (mqtt.Message, chan struct{}) {
	acked := make(chan struct{})
	return mqtt.Message{Topic: "t", Payload: payload, Received: time.Now().UTC(), Ack: func() { close(acked) }}, acked
}

func waitClosed(t *testing.T, c chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not acknowledged", what)
	}
}

// A message over the spool's record limit goes the way of every message
// that can never be delivered (pipeline.DeadLetter: stored, counted in
// cloudblock_dead_lettered_total, logged), under an id in the spool's
// scheme that sorts between the messages received before and after it,
// and is acknowledged once stored, also after the store failed for a while.
func TestIngestDeadLettersTooLarge(t *testing.T) {
	r := newIngestRig(t, t.Context(), &flakyDead{fail: 2})
	big := make([]byte, r.sp.MaxRecordPayload()+1)

	var acks []chan struct{}
	for _, p := range [][]byte{[]byte("before"), big, big, []byte("after")} {
		m, acked := message(p)
		r.in.handle(m)
		acks = append(acks, acked)
	}
	for i, acked := range acks {
		waitClosed(t, acked, fmt.Sprint("message ", i))
	}

	var ids []string
	for range 2 {
		rec, err := r.sp.Next(t.Context(), time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ID)
	}
	before, after := ids[0], ids[1]
	if len(r.dead.msgs) != 2 {
		t.Fatalf("dead-lettered %d messages, want the 2 too large", len(r.dead.msgs))
	}
	first, second := r.dead.msgs[0].ID, r.dead.msgs[1].ID
	if !(before < first && first < second && second < after) || !strings.HasPrefix(first, before+"-") {
		t.Errorf("ids out of order: before %s, too large %s and %s, after %s", before, first, second, after)
	}
	if !strings.Contains(r.dead.reasons[0], "exceeds the spool's record limit") {
		t.Errorf("reason %q", r.dead.reasons[0])
	}
	if v := r.in.tooLarge.Value(); v != 2 {
		t.Errorf("cloudblock_too_large_total %d, want 2", v)
	}
	if v := r.pm.DeadLettered.Value(); v != 2 {
		t.Errorf("cloudblock_dead_lettered_total %d, want 2", v)
	}
	if logs := r.logs.String(); strings.Count(logs, `"msg":"message dead-lettered: it can never be delivered"`) != 2 || !strings.Contains(logs, first) {
		t.Errorf("dead-letter log lines missing:\n%s", logs)
	}
}

// Shutting down while the dead-letter store fails: the message is neither
// acknowledged (the broker sends it again) nor counted.
func TestIngestTooLargeAtShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := newIngestRig(t, ctx, &flakyDead{fail: 1 << 30})
	m, acked := message(make([]byte, r.sp.MaxRecordPayload()+1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.in.handle(m)
	}()
	cancel()
	<-done
	select {
	case <-acked:
		t.Error("acknowledged without being stored")
	default:
	}
	if r.in.tooLarge.Value() != 0 || r.pm.DeadLettered.Value() != 0 {
		t.Errorf("counted: too large %d, dead-lettered %d", r.in.tooLarge.Value(), r.pm.DeadLettered.Value())
	}
}
