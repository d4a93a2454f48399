package run

import (
	"context"
	"log/slog"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/metrics"
)

// startClock watches the clock until ctx ends: the pipeline waits on the
// returned Guard before it connects or sends, ingest dates messages by it,
// /ready and the metrics report it. Each change of verdict is logged.
func (s *settings) startClock(ctx context.Context) *clock.Guard {
	g := clock.NewGuard(clock.System(), s.clockMaxJump)
	s.clock = g
	go watchClock(ctx, g, s.log)
	return g
}

func watchClock(ctx context.Context, g *clock.Guard, log *slog.Logger) {
	t := time.NewTicker(clock.SampleEvery)
	defer t.Stop()
	wasSane := true
	for {
		g.Sample()
		switch sane, reason := g.State(); {
		case !sane && wasSane:
			log.Warn("not sending: the clock cannot be trusted; messages are spooled meanwhile", "reason", reason,
				"system_time", clock.Now().UTC().Format(time.RFC3339), "build_date", clock.Floor().Format(time.RFC3339))
		case sane && !wasSane:
			log.Info("the clock is plausible: sending", "system_time", clock.Now().UTC().Format(time.RFC3339))
		}
		wasSane, _ = g.State()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// registerClockMetrics adds the clock's metrics; received counts the
// messages given an untrusted receive time (ingest).
func (s *settings) registerClockMetrics(reg *metrics.Registry) {
	g := s.clock
	if g == nil {
		return
	}
	reg.GaugeFunc("cloudblock_clock_synchronised", "1 while the system clock is plausible (not before the build's date, not jumping); 0 while nothing is sent and receive times are marked untrusted.", func() float64 {
		sane, _ := g.State()
		return boolf(sane)
	})
	reg.CounterFunc("cloudblock_clock_unsynchronised_total", "Times the system clock was found not plausible (at start, or after a step).", func() float64 {
		_, n := g.Counts()
		return float64(n)
	})
	reg.CounterFunc("cloudblock_clock_jumps_total", "Steps of the system clock against the monotonic clock larger than CLOCK_MAX_JUMP.", func() float64 {
		n, _ := g.Counts()
		return float64(n)
	})
}

// clockReason is /ready's reason while the clock is not plausible ("").
func (s *settings) clockReason() string {
	if s.clock == nil {
		return ""
	}
	if sane, reason := s.clock.State(); !sane {
		return reason + " (messages are spooled and sent once it is)"
	}
	return ""
}

// checkClock is check's finding about the clock, none when it is
// plausible: with a clock before the build's date every signed request
// fails, and the destination's finding would read as refused credentials.
func checkClock(src clock.Source) []finding {
	if sane, reason := clock.NewGuard(src, 0).State(); !sane {
		return []finding{{statusWarn, "clock", reason + ": the destination refuses signed requests until NTP sets it (the service spools meanwhile and sends once it is)"}}
	}
	return nil
}
