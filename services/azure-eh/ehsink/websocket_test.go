package ehsink_test

// AMQP over WebSockets against the fake Event Hubs (which serves both on
// one port), and auto's fallback with AMQP blocked by ehfake's firewall.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/services/azure-eh/internal/ehtest"
	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// newLoggedSink is newSink that also returns the sink's log.
func newLoggedSink(t *testing.T, h *ehtest.Hub, env map[string]string) (sink.Sink, *sinktest.LogBuffer) {
	t.Helper()
	logs := &sinktest.LogBuffer{}
	env = sinktest.With(map[string]string{"AZURE_EH_CONNECTIONSTRING": h.ConnectionString}, env)
	s := sinktest.MustLoadSink(t, ehsink.Service, run.Info{Device: "ws", Log: logs.Logger()}, env)
	t.Cleanup(func() {
		s.Close(context.Background())
		h.CheckNoKey(t, "the sink's log", logs.String())
	})
	return s, logs
}

var wsOnly = map[string]string{"AZURE_EH_TRANSPORT": "websockets"}

func TestConformanceWebSockets(t *testing.T) {
	t.Parallel()
	h := ehtest.Start(t, ehfake.Options{})
	h.NeedFake(t, "Microsoft's emulator serves no WebSockets")
	r := ehtest.NewReader(t, h)
	closed := fmt.Sprintf("Endpoint=sb://%s;SharedAccessKeyName=k;SharedAccessKey=%s;EntityPath=hub;UseDevelopmentEmulator=true",
		procs.Addr(procs.FreePort(t)), h.Key)
	sinktest.Run(t, sinktest.Harness{
		New: func(t *testing.T) sink.Sink { s, _ := newLoggedSink(t, h, wsOnly); return s },
		NewBroken: func(t *testing.T) sink.Sink {
			s, _ := newLoggedSink(t, &ehtest.Hub{ConnectionString: closed, Key: h.Key}, wsOnly)
			return s
		},
		ReadBack: func(_ *testing.T, ids []string) map[string][]byte {
			out := map[string][]byte{}
			for id, ev := range r.ByID(ids, 30*time.Second) {
				out[id] = ev.Body
			}
			return out
		},
	})
}

// behind puts the hub behind a firewall that blocks AMQP.
func behind(t *testing.T, h *ehtest.Hub, drop bool) (*ehtest.Hub, *ehfake.Firewall) {
	fw := ehfake.NewFirewall(t, h.Fake.Addr(), drop)
	return &ehtest.Hub{ConnectionString: strings.Replace(h.ConnectionString, h.Fake.Addr(), fw.Addr(), 1), Key: h.Key, Fake: h.Fake}, fw
}

func TestWebSocketsWithAMQPBlocked(t *testing.T) {
	t.Parallel()
	h := ehtest.Start(t, ehfake.Options{Partitions: 2})
	h.NeedFake(t, "blocks AMQP in front of the fake")
	for _, tc := range []struct {
		name string
		drop bool
	}{{"refused", false}, {"dropped", true}} {
		t.Run(tc.name, func(t *testing.T) {
			fh, fw := behind(t, h, tc.drop)
			s, logs := newLoggedSink(t, fh, nil) // auto, the default
			ehsink.SetFallbackAfter(s, 2*time.Second)
			start := time.Now()
			sinktest.Connected(t, s)
			took := time.Since(start)
			if fw.Blocked() == 0 || fw.Passed() == 0 {
				t.Fatalf("firewall: %d AMQP connections blocked, %d passed; want both", fw.Blocked(), fw.Passed())
			}
			if !strings.Contains(logs.String(), `"transport":"websockets"`) || !strings.Contains(logs.String(), "using AMQP over WebSockets") {
				t.Fatalf("the log does not say it fell back:\n%s", logs.String())
			}
			ms := sinktest.Messages(20, func(i int) []byte { return fmt.Appendf(nil, "%s %d", tc.name, i) })
			write(t, s, ms)
			readAll(t, ehtest.NewReader(t, h), ms)
			t.Logf("AMQP %s: connected over WebSockets after %s (%d AMQP connections blocked)", tc.name, took.Round(time.Millisecond), fw.Blocked())
		})
	}
	t.Run("amqp-only", func(t *testing.T) {
		fh, fw := behind(t, h, false)
		s, _ := newLoggedSink(t, fh, map[string]string{"AZURE_EH_TRANSPORT": "amqp"})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := s.Connect(ctx); err == nil {
			t.Fatal("AZURE_EH_TRANSPORT=amqp connected with AMQP blocked")
		}
		if fw.Passed() != 0 {
			t.Fatalf("%d connections passed the firewall: amqp must not try WebSockets", fw.Passed())
		}
	})
}

// The fake refuses an upgrade without the AMQP subprotocol or on another
// path, so the tests above prove the SDK's path and the dialer's subprotocol.
func TestWebSocketsOutageAndRecovery(t *testing.T) {
	t.Parallel()
	h := ehtest.Start(t, ehfake.Options{Partitions: 2})
	h.NeedFake(t, "stops and restarts the hub")
	s, _ := newLoggedSink(t, h, wsOnly)
	sinktest.Connected(t, s)
	before := sinktest.Messages(5, func(i int) []byte { return fmt.Appendf(nil, "before %d", i) })
	write(t, s, before)
	h.Fake.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.WriteBatch(ctx, sinktest.Messages(3, func(int) []byte { return []byte("during") })); err == nil || sink.IsPermanent(err) {
		t.Fatalf("write while the hub is down: %v", err)
	}
	h.Fake.Restart()
	after := sinktest.Messages(5, func(i int) []byte { return fmt.Appendf(nil, "after %d", i) })
	err := procs.WaitFor(t.Context(), 30*time.Second, func() error { return s.WriteBatch(t.Context(), after) })
	if err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
	readAll(t, ehtest.NewReader(t, h), append(before, after...))
}
