package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloud-block/cloud-block/common/deadletter"
	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// ingest takes each MQTT message into the spool and acknowledges it once
// the spool says it is safe; a message the spool can never hold goes to
// the dead-letter store instead.
type ingest struct {
	ctx  context.Context // ends at shutdown: messages not taken stay unacknowledged
	sp   *spool.Spool
	dead *deadletter.Store
	log  *slog.Logger

	received, acked, tooLarge *metrics.Counter
}

func newIngest(ctx context.Context, sp *spool.Spool, dead *deadletter.Store, reg *metrics.Registry, log *slog.Logger) *ingest {
	return &ingest{ctx: ctx, sp: sp, dead: dead, log: log,
		received: reg.Counter("cloudblock_received_total", "MQTT messages received."),
		acked:    reg.Counter("cloudblock_acknowledged_total", "MQTT messages acknowledged (PUBACK) once delivered or durably spooled."),
		tooLarge: reg.Counter("cloudblock_too_large_total", "MQTT messages larger than the spool's record limit, dead-lettered on arrival."),
	}
}

// handle runs on the MQTT client's delivery goroutine, in arrival order.
func (in *ingest) handle(m mqtt.Message) {
	in.received.Inc()
	err := in.sp.Append(in.ctx, spool.Entry{Topic: m.Topic, Received: m.Received, Payload: m.Payload}, func(uint64) {
		m.Ack()
		in.acked.Inc()
	})
	switch {
	case errors.Is(err, spool.ErrTooLarge):
		in.deadLetterTooLarge(m)
	case err != nil:
		// Shutting down: not acknowledged, so the broker sends it again.
	}
}

// deadLetterTooLarge keeps a message that can never be spooled where an
// operator can find it, and acknowledges it once it is there.
func (in *ingest) deadLetterTooLarge(m mqtt.Message) {
	msg := sink.Message{ID: "too-large-" + m.Received.Format("20060102T150405.000000000Z"), Topic: m.Topic, Received: m.Received, Payload: m.Payload}
	reason := fmt.Sprintf("payload of %d bytes exceeds the spool's record limit of %d bytes (BUFFER_MAX_BYTES/4)", len(m.Payload), in.sp.MaxRecordPayload())
	if err := in.dead.Put([]sink.Message{msg}, reason); err != nil {
		in.log.Error("dead-lettering an oversized message failed; not acknowledging it", "err", err, "topic", m.Topic)
		return
	}
	in.tooLarge.Inc()
	in.log.Error("message too large for the spool: dead-lettered", "topic", m.Topic, "bytes", len(m.Payload))
	m.Ack()
}
