package ehsink

import (
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
)

// SetFallbackAfter shortens auto's AMQP attempt for a test.
func SetFallbackAfter(s sink.Sink, d time.Duration) { s.(*Sink).fallbackAfter = d }
