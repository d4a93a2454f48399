// Package sinktest is the conformance suite every destination runs, against
// a fake of its SDK client and against its emulator: open/close, a batch,
// binary and empty payloads, the size limit and one past it, a full batch, a
// cancelled context, and close after a failed connect. It also holds the
// helpers the destinations' own tests share (helpers.go).
package sinktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Harness tells the suite how to reach one destination.
type Harness struct {
	// New returns a fresh, unconnected sink writing to the backend under test.
	New func(t *testing.T) sink.Sink
	// NewBroken returns a sink whose Connect (or first write) cannot succeed,
	// e.g. pointed at a closed port. Nil skips that case.
	NewBroken func(t *testing.T) sink.Sink
	// ReadBack returns the payloads the backend holds for the given message
	// ids (missing ids absent). It may wait for eventual consistency.
	ReadBack func(t *testing.T, ids []string) map[string][]byte
	// MaxMessageBytes, if set, overrides Limits().MaxMessageBytes for the
	// size-limit cases (e.g. a sink whose limit counts attributes too).
	MaxMessageBytes int
}

var seq atomic.Uint32

// Messages makes n messages with the given payload maker. Their ids are
// unique across calls and ascend within one call, as the spool's do.
func Messages(n int, payload func(i int) []byte) []sink.Message {
	now := time.Now()
	prefix := fmt.Sprintf("conf%04x%06d", seq.Add(1), now.UnixNano()%1e6)
	base := now.UTC().Truncate(time.Millisecond)
	out := make([]sink.Message, n)
	for i := range out {
		out[i] = sink.Message{
			ID:       spoolID(prefix, i+1),
			Topic:    "cloud-input/conformance",
			Received: base.Add(time.Duration(i) * time.Microsecond),
			Payload:  payload(i),
		}
	}
	return out
}

func ids(ms []sink.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func connect(t *testing.T, h Harness) sink.Sink {
	t.Helper()
	return Connected(t, h.New(t))
}

func write(t *testing.T, s sink.Sink, ms []sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.WriteBatch(ctx, ms); err != nil {
		t.Fatalf("WriteBatch of %d: %v", len(ms), err)
	}
}

func expect(t *testing.T, h Harness, ms []sink.Message) {
	t.Helper()
	got := h.ReadBack(t, ids(ms))
	for _, m := range ms {
		p, ok := got[m.ID]
		if !ok {
			t.Errorf("message %s not found in the backend", m.ID)
			continue
		}
		if !bytes.Equal(p, m.Payload) {
			t.Errorf("message %s: payload differs (got %d bytes, want %d)", m.ID, len(p), len(m.Payload))
		}
	}
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	t.Run("ConnectClose", func(t *testing.T) {
		s := h.New(t)
		ctx := context.Background()
		if err := s.Connect(ctx); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		lim := s.Limits()
		if lim.MaxBatchMessages < 0 || lim.MaxBatchBytes < 0 || lim.MaxMessageBytes < 0 {
			t.Errorf("negative limits %+v", lim)
		}
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := s.Close(ctx); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	t.Run("CloseAfterFailedConnect", func(t *testing.T) {
		if h.NewBroken == nil {
			t.Skip("no broken backend for this destination")
		}
		s := h.NewBroken(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := s.Connect(ctx)
		if err == nil {
			err = s.WriteBatch(ctx, Messages(1, func(int) []byte { return []byte("x") }))
		}
		if err == nil {
			t.Fatal("a broken backend accepted a connect and a write")
		}
		if sink.IsPermanent(err) {
			t.Errorf("an unreachable backend is not a permanent message error: %v", err)
		}
		s.Close(ctx)
		s.Close(ctx)
	})
	t.Run("Batch", func(t *testing.T) {
		s := connect(t, h)
		ms := Messages(10, func(i int) []byte { return fmt.Appendf(nil, `{"sensor":"t","i":%d,"v":21.5}`, i) })
		write(t, s, ms)
		expect(t, h, ms)
	})
	t.Run("BinaryAndText", func(t *testing.T) {
		s := connect(t, h)
		all := make([]byte, 256)
		for i := range all {
			all[i] = byte(i)
		}
		payloads := [][]byte{all, {0xff, 0xfe, 0x00}, []byte("plain text ünïcödé"), []byte("line1\nline2\r\n"), []byte(`"a json string"`), {0}}
		ms := Messages(len(payloads), func(i int) []byte { return payloads[i] })
		write(t, s, ms)
		expect(t, h, ms)
	})
	t.Run("EmptyPayload", func(t *testing.T) {
		s := connect(t, h)
		ms := Messages(1, func(int) []byte { return []byte{} })
		write(t, s, ms)
		expect(t, h, ms)
	})
	t.Run("FullBatch", func(t *testing.T) {
		s := connect(t, h)
		lim := s.Limits()
		n := lim.MaxBatchMessages
		if n <= 0 || n > 1000 {
			n = 1000
		}
		size := 100
		if lim.MaxBatchBytes > 0 && n*(size+lim.MessageOverhead) > lim.MaxBatchBytes {
			n = lim.MaxBatchBytes / (size + lim.MessageOverhead)
		}
		ms := Messages(n, func(i int) []byte { return bytes.Repeat([]byte{'a' + byte(i%26)}, size) })
		write(t, s, ms)
		expect(t, h, ms)
	})
	t.Run("SizeLimit", func(t *testing.T) {
		s := connect(t, h)
		max := h.MaxMessageBytes
		if max == 0 {
			max = s.Limits().MaxMessageBytes
		}
		if max == 0 {
			t.Skip("destination declares no message size limit")
		}
		at := Messages(1, func(int) []byte { return bytes.Repeat([]byte{'m'}, max) })
		write(t, s, at)
		expect(t, h, at)
		over := Messages(1, func(int) []byte { return bytes.Repeat([]byte{'m'}, max+1) })
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		err := s.WriteBatch(ctx, over)
		var be *sink.BatchError
		switch {
		case err == nil:
			t.Fatal("a payload one byte over the limit was accepted")
		case errors.As(err, &be):
			if e, ok := be.Failed[0]; !ok || !sink.IsPermanent(e) {
				t.Errorf("over-limit message not failed permanently: %v", err)
			}
		case !sink.IsPermanent(err):
			t.Errorf("over-limit message error is not permanent: %v", err)
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		s := connect(t, h)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		err := s.WriteBatch(ctx, Messages(3, func(int) []byte { return []byte("never") }))
		if err == nil {
			t.Fatal("WriteBatch with a cancelled context succeeded")
		}
		if sink.IsPermanent(err) {
			t.Errorf("cancellation marked permanent: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("WriteBatch took %s to notice the cancelled context", d)
		}
	})
}
