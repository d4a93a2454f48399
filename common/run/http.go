package run

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/common/clock"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/deadletter"
	"github.com/cloud-block/cloud-block/common/metrics"
	"github.com/cloud-block/cloud-block/common/mqtt"
	"github.com/cloud-block/cloud-block/common/pipeline"
	"github.com/cloud-block/cloud-block/common/spool"
)

func listen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (s *settings) registerMetrics(reg *metrics.Registry, sp *spool.Spool, dead *deadletter.Store, sub *mqtt.Subscriber, pipe *pipeline.Pipeline) {
	reg.GaugeFunc("cloudblock_mqtt_connected", "1 while connected and subscribed to the broker.", func() float64 { return boolf(sub.Connected()) })
	reg.CounterFunc("cloudblock_mqtt_reconnects_total", "MQTT reconnect attempts.", func() float64 { return float64(sub.Reconnects()) })
	reg.CounterFunc("cloudblock_mqtt_redelivered_total", "Messages the broker sent again (DUP=1), after a reconnect.", func() float64 {
		n, _ := sub.Redeliveries()
		return float64(n)
	})
	reg.CounterFunc("cloudblock_mqtt_redeliveries_recognised_total", "Redelivered messages recognised as messages already held: acknowledged with them, not spooled again.", func() float64 {
		_, n := sub.Redeliveries()
		return float64(n)
	})
	reg.CounterFunc("cloudblock_spooled_total", "Messages durably written to the spool.", func() float64 { return float64(sp.Stats().Committed) })
	reg.CounterFunc("cloudblock_spool_fsyncs_total", "fsync calls for spool data (group commits).", func() float64 { return float64(sp.Stats().Fsyncs) })
	reg.CounterFunc("cloudblock_spool_mark_fsyncs_total", "fsync calls for the spool's cursor (delivered mark, batch in flight, id reservation).", func() float64 { return float64(sp.Stats().MarkFsyncs) })
	reg.CounterFunc("cloudblock_spool_dir_fsyncs_total", "fsync calls for the spool's directory (a new segment file).", func() float64 { return float64(sp.Stats().DirFsyncs) })
	reg.CounterFunc("cloudblock_spool_written_bytes_total", "Bytes written to the spool's files (segments and cursor).", func() float64 { return float64(sp.Stats().WrittenBytes) })
	reg.CounterFunc("cloudblock_acknowledged_by_delivery_total", "Messages acknowledged (PUBACK) because the destination confirmed them within BUFFER_SYNC_INTERVAL: never written to disk.", func() float64 { return float64(sp.Stats().SafeByDelivery) })
	reg.CounterFunc("cloudblock_acknowledged_by_sync_total", "Messages acknowledged (PUBACK) because they were written to the spool and fsynced first.", func() float64 { return float64(sp.Stats().SafeBySync) })
	reg.GaugeFunc("cloudblock_spool_held_bytes", "Message bytes held in memory, neither delivered nor written yet.", func() float64 { return float64(sp.Stats().HeldBytes) })
	reg.CounterFunc("cloudblock_dropped_total", "Undelivered messages deleted by the drop_oldest full policy.", func() float64 { return float64(sp.Stats().Dropped) })
	reg.CounterFunc("cloudblock_spool_full_total", "Times the spool became full.", func() float64 { return float64(sp.Stats().FullEvents) })
	reg.CounterFunc("cloudblock_spool_write_errors_total", "Failed spool writes (retried; messages stay unacknowledged).", func() float64 { return float64(sp.Stats().WriteErrors) })
	reg.GaugeFunc("cloudblock_spool_full", "1 while the spool is full and acknowledgements wait.", func() float64 { return boolf(sp.Stats().Full) })
	reg.GaugeFunc("cloudblock_spool_bytes", "Bytes the spool uses on disk.", func() float64 { return float64(sp.Stats().Bytes) })
	reg.GaugeFunc("cloudblock_spool_max_bytes", "The spool's budget (BUFFER_MAX_BYTES).", func() float64 { return float64(s.spool.MaxBytes) })
	reg.GaugeFunc("cloudblock_spool_messages", "Messages in the spool not yet delivered.", func() float64 { return float64(sp.Backlog()) })
	reg.GaugeFunc("cloudblock_spool_damaged_bytes", "Bytes cut from damaged spool files at start-up.", func() float64 { return float64(sp.Stats().DamagedBytes) })
	reg.GaugeFunc("cloudblock_spool_damaged_messages", "Messages known lost to spool damage found at start-up.", func() float64 { return float64(sp.Stats().DamagedMessages) })
	reg.GaugeFunc("cloudblock_oldest_unsent_age_seconds", "Age of the oldest message not yet delivered (0 when none, or when it was received before the clock was set: its age is unknown).", func() float64 {
		t := pipe.Status().OldestUnsent
		if t.IsZero() || !clock.Trusted(t) {
			return 0
		}
		return time.Since(t).Seconds()
	})
	reg.GaugeFunc("cloudblock_last_success_timestamp_seconds", "Unix time of the last successful send (0 if none yet).", func() float64 {
		t := pipe.Status().LastSuccess
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	})
	reg.GaugeFunc("cloudblock_destination_connected", "1 once the destination's clients are connected.", func() float64 { return boolf(pipe.Status().Connected) })
	reg.GaugeFunc("cloudblock_deadletter_bytes", "Bytes in the dead-letter store.", func() float64 { _, b, _ := dead.Stats(); return float64(b) })
	reg.CounterFunc("cloudblock_deadletter_evicted_total", "Dead-lettered messages removed to keep the store within DEADLETTER_MAX_BYTES.", func() float64 { _, _, l := dead.Stats(); return float64(l) })
	s.registerClockMetrics(reg)
}

// readiness lists why the block is not ready (empty = ready).
func (s *settings) readiness(sp *spool.Spool, sub *mqtt.Subscriber, pipe *pipeline.Pipeline) (reasons []string, st pipeline.Status) {
	st = pipe.Status()
	if r := s.clockReason(); r != "" {
		reasons = append(reasons, r)
	}
	if !sub.Connected() {
		r := "not connected to the MQTT broker"
		if e := sub.LastError(); e != "" {
			r += ": " + e
		}
		reasons = append(reasons, r)
	}
	if !st.Connected {
		r := "not connected to the destination"
		if st.LastError != "" {
			r += ": " + st.LastError
		}
		reasons = append(reasons, r)
	}
	// A message received before the clock was set has no known age.
	if !st.OldestUnsent.IsZero() && clock.Trusted(st.OldestUnsent) {
		if age := time.Since(st.OldestUnsent); age > s.readyMaxAge {
			r := fmt.Sprintf("oldest undelivered message is %s old (limit READY_MAX_UNSENT_AGE=%s)", age.Round(time.Second), s.readyMaxAge)
			if st.LastError != "" {
				r += "; last error: " + st.LastError
			}
			reasons = append(reasons, r)
		}
	}
	sst := sp.Stats()
	if sst.Full {
		reasons = append(reasons, "spool is full: new MQTT messages are not acknowledged")
	}
	if sst.Failing != "" {
		reasons = append(reasons, "spool cannot write (retrying; new MQTT messages are not acknowledged): "+sst.Failing)
	}
	return reasons, st
}

// parts are the running service's pieces the HTTP endpoints (and the
// operator's commands) look at.
type parts struct {
	ctx  context.Context // ends when the service begins to shut down
	reg  *metrics.Registry
	sp   *spool.Spool
	sub  *mqtt.Subscriber
	pipe *pipeline.Pipeline
	dead *deadletter.Store
	in   *ingest
	pm   *pipeline.Metrics // delivered and dead-lettered counts (the status page)
}

func (s *settings) handler(p parts) http.Handler {
	reg, sp, sub, pipe := p.reg, p.sp, p.sub, p.pipe
	mux := http.NewServeMux()
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		reasons := s.liveness(sp.Stats(), pipe.Status(), time.Now())
		if len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not live: "+strings.Join(reasons, "; ")+"\n")
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		reasons, st := s.readiness(sp, sub, pipe)
		body := map[string]any{
			"ready":             len(reasons) == 0,
			"reasons":           reasons,
			"mqtt_connected":    sub.Connected(),
			"destination_ready": st.Connected,
			"spool_messages":    sp.Backlog(),
			"spool_bytes":       sp.Stats().Bytes,
			"batches_in_flight": st.InFlight,
		}
		if !st.OldestUnsent.IsZero() {
			body["oldest_unsent_age_seconds"] = time.Since(st.OldestUnsent).Seconds()
		}
		if st.LastError != "" {
			body["last_error"] = st.LastError
			body["last_error_at"] = st.LastErrorAt.UTC().Format(time.RFC3339)
		}
		if !st.LastSuccess.IsZero() {
			body["last_success_at"] = st.LastSuccess.UTC().Format(time.RFC3339)
		}
		w.Header().Set("Content-Type", "application/json")
		if len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(body)
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		reg.Write(w)
	})
	status := s.newStatusPage(p)
	go status.h.run(p.ctx, historyEvery, p.counts)
	mux.HandleFunc("GET /{$}", status.serveHTML)
	mux.HandleFunc("GET /status.json", status.serveJSON)
	return mux
}

// Liveness limits: how long the process may be stuck before /live (and the
// image's HEALTHCHECK) says so, so that a supervisor restarts it.
const (
	// liveWriteStall: a spool write or fsync that has not returned (a dead
	// SD card, a hung filesystem).
	liveWriteStall = time.Minute
	// liveWriteFailing: spool writes failing all along (a full or read-only
	// disk): nothing new can be acknowledged.
	liveWriteFailing = 5 * time.Minute
	// liveCallOverrun: a destination call running this much past
	// SEND_TIMEOUT ignores its deadline; the batches behind it wait forever.
	liveCallOverrun = time.Minute
)

// liveness is why the process is stuck (none: it is live). Unlike
// readiness, an unreachable destination or broker is not a reason: the
// block is doing its job then, keeping messages until they can go, and a
// restart would not help.
func (s *settings) liveness(sst spool.Stats, st pipeline.Status, now time.Time) []string {
	var reasons []string
	if !sst.CommitStarted.IsZero() && now.Sub(sst.CommitStarted) > liveWriteStall {
		reasons = append(reasons, fmt.Sprintf("a spool write has not returned for %s", now.Sub(sst.CommitStarted).Round(time.Second)))
	}
	if !sst.FailingSince.IsZero() && now.Sub(sst.FailingSince) > liveWriteFailing {
		reasons = append(reasons, fmt.Sprintf("spool writes have failed for %s: %s", now.Sub(sst.FailingSince).Round(time.Second), sst.Failing))
	}
	send := s.pipe.SendTimeout
	if send == 0 {
		send = pipeline.DefaultSendTimeout
	}
	if !st.OldestCall.IsZero() && now.Sub(st.OldestCall) > send+liveCallOverrun {
		reasons = append(reasons, fmt.Sprintf("a call to the destination has run %s, past SEND_TIMEOUT (%s)", now.Sub(st.OldestCall).Round(time.Second), send))
	}
	return reasons
}

// healthcheck asks the running service's /live (for the image's
// HEALTHCHECK: scratch images have no curl). Exit 0 when live: a cloud or
// broker outage keeps it live (the reasons are on /ready).
func healthcheck(svc Service, lookup config.Lookup, out io.Writer) int {
	l := config.NewLoader(lookup, svc.AllVars())
	addr := l.String("HTTP_LISTEN")
	if addr == "off" {
		fmt.Fprintln(out, "HTTP_LISTEN=off: no endpoint to check")
		return ExitFatal
	}
	host, port, err := splitHostPort(addr)
	if err != nil {
		fmt.Fprintf(out, "HTTP_LISTEN=%q is not host:port\n", addr)
		return ExitConfig
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/live")
	if err != nil {
		fmt.Fprintf(out, "not live: %v\n", err)
		return ExitFatal
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintln(out, strings.TrimSpace(string(b)))
	if resp.StatusCode != http.StatusOK {
		return ExitFatal
	}
	return ExitOK
}
