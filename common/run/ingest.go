package run

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/spool"
)

// ingest takes each MQTT message into the spool and acknowledges it once
// the spool says it is safe; a message the spool can never hold goes to
// the dead-letter store instead, the same way as one the destination
// refuses (pipeline.DeadLetter).
type ingest struct {
	ctx        context.Context // ends at shutdown: messages not taken stay unacknowledged
	sp         *spool.Spool
	deadLetter func(ctx context.Context, msgs []sink.Message, reason string) bool
	// receiveTime, if set, dates each message instead of the MQTT client's
	// time: clock.Guard's ReceiveTime, an untrusted time while the clock is
	// not plausible.
	receiveTime func() time.Time

	received, acked, tooLarge, unsynced *metrics.Counter
}

func newIngest(ctx context.Context, sp *spool.Spool, deadLetter func(context.Context, []sink.Message, string) bool, reg *metrics.Registry) *ingest {
	return &ingest{ctx: ctx, sp: sp, deadLetter: deadLetter,
		received: reg.Counter("cloudblock_received_total", "MQTT messages received."),
		acked:    reg.Counter("cloudblock_acknowledged_total", "MQTT messages acknowledged (PUBACK) once delivered or durably spooled."),
		tooLarge: reg.Counter("cloudblock_too_large_total", "MQTT messages larger than the spool's record limit, dead-lettered on arrival (also counted in cloudblock_dead_lettered_total)."),
		unsynced: reg.Counter("cloudblock_received_unsynchronised_total", "MQTT messages received while the clock was not plausible: their receive time is marked untrusted."),
	}
}

// handle runs on the MQTT client's delivery goroutine, in arrival order.
func (in *ingest) handle(m mqtt.Message) {
	in.received.Inc()
	if in.receiveTime != nil {
		m.Received = in.receiveTime()
	}
	if !clock.Trusted(m.Received) {
		in.unsynced.Inc()
	}
	err := in.sp.Append(in.ctx, spool.Entry{Topic: m.Topic, Received: m.Received, Payload: m.Payload}, func(uint64) {
		m.Ack()
		in.acked.Inc()
	})
	if errors.Is(err, spool.ErrTooLarge) {
		in.deadLetterTooLarge(m)
	}
	// Any other error means shutting down: not acknowledged, so the broker
	// sends the message again.
}

// deadLetterTooLarge keeps a message that can never be spooled where an
// operator can find it, under an id that sorts with the spool's, and
// acknowledges it once it is there. It waits (in arrival order, holding up
// the messages behind it) while the dead-letter store fails.
func (in *ingest) deadLetterTooLarge(m mqtt.Message) {
	msg := sink.Message{ID: in.sp.RefusedID(m.Received), Topic: m.Topic, Received: m.Received, Payload: m.Payload}
	reason := fmt.Sprintf("payload of %d bytes exceeds the spool's record limit of %d bytes (BUFFER_MAX_BYTES/4)", len(m.Payload), in.sp.MaxRecordPayload())
	if !in.deadLetter(in.ctx, []sink.Message{msg}, reason) {
		return // shutting down: not acknowledged, so the broker sends it again
	}
	in.tooLarge.Inc()
	m.Ack()
}
