package ehsink_test

// Tests against the fake Event Hubs (testenv/ehfake) driven by the real SDK,
// or against Microsoft's emulator when EH_TEST_CONNECTION_STRING is set.

import (
	"bytes"
	"context"
	"errors"
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

// newSink builds the sink the way the binary does, from variables; when the
// test ends it is closed and its log checked for the key.
func newSink(t *testing.T, h *ehtest.Hub, device string, env map[string]string) sink.Sink {
	t.Helper()
	logs := &sinktest.LogBuffer{}
	env = sinktest.With(map[string]string{"AZURE_EH_CONNECTIONSTRING": h.ConnectionString}, env)
	s := sinktest.MustLoadSink(t, ehsink.Service, run.Info{Device: device, Log: logs.Logger()}, env)
	t.Cleanup(func() {
		s.Close(context.Background())
		h.CheckNoKey(t, "the sink's log", logs.String())
	})
	return s
}

func write(t *testing.T, s sink.Sink, ms []sink.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := s.WriteBatch(ctx, ms); err != nil {
		t.Fatalf("WriteBatch: %v", err)
	}
}

func ids(ms []sink.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// readAll reads ms back and checks the bodies, returning the events by id.
func readAll(t *testing.T, r *ehtest.Reader, ms []sink.Message) map[string]ehtest.Event {
	t.Helper()
	got := r.ByID(ids(ms), 30*time.Second)
	for _, m := range ms {
		ev, ok := got[m.ID]
		if !ok {
			t.Fatalf("message %s not read back", m.ID)
		}
		if !bytes.Equal(ev.Body, m.Payload) {
			t.Fatalf("message %s: body of %d bytes, want %d", m.ID, len(ev.Body), len(m.Payload))
		}
	}
	return got
}

func TestConformanceEmulator(t *testing.T) {
	t.Parallel()
	h := ehtest.Start(t, ehfake.Options{})
	r := ehtest.NewReader(t, h)
	closed := fmt.Sprintf("Endpoint=sb://%s;SharedAccessKeyName=k;SharedAccessKey=%s;EntityPath=hub;UseDevelopmentEmulator=true",
		procs.Addr(procs.FreePort(t)), h.Key)
	sinktest.Run(t, sinktest.Harness{
		New: func(t *testing.T) sink.Sink { return newSink(t, h, "conformance", nil) },
		NewBroken: func(t *testing.T) sink.Sink {
			return newSink(t, &ehtest.Hub{ConnectionString: closed, Key: h.Key}, "conformance", nil)
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

func TestEmulatorEventProperties(t *testing.T) {
	t.Parallel()
	h := ehtest.Start(t, ehfake.Options{Partitions: 2})
	s := newSink(t, h, "device-42", nil)
	sinktest.Connected(t, s)
	ms := sinktest.Messages(2, func(i int) []byte { return []byte{byte(i), 0, 0xff, '\n'} })
	ms[1].Topic = "cloud-input/ünï/+x"
	write(t, s, ms)
	got := readAll(t, ehtest.NewReader(t, h), ms)
	for _, m := range ms {
		ev := got[m.ID]
		recv, _ := ev.Properties[ehsink.PropReceived].(time.Time)
		if ev.Properties[ehsink.PropTopic] != m.Topic || ev.Properties[ehsink.PropDevice] != "device-42" ||
			!recv.Equal(m.Received.Truncate(time.Millisecond)) || *ev.MessageID != m.ID || len(ev.Properties) != 4 {
			t.Errorf("event %s: properties %v, message id %v", m.ID, ev.Properties, *ev.MessageID)
		}
		if ev.PartitionKey != nil {
			t.Errorf("event %s: partition key %q without one configured", m.ID, *ev.PartitionKey)
		}
	}
}

func TestEmulatorPartitionKeyByTopic(t *testing.T) {
	h := ehtest.Start(t, ehfake.Options{Partitions: 4})
	s := newSink(t, h, "dev", map[string]string{"AZURE_EH_PARTITION_KEY": "topic"})
	sinktest.Connected(t, s)
	topics := []string{"site/a", "site/b", "site/c", "site/d", "site/e"}
	ms := sinktest.Messages(50, func(i int) []byte { return fmt.Appendf(nil, "m%d", i) })
	for i := range ms {
		ms[i].Topic = topics[i%len(topics)]
	}
	write(t, s, ms)
	got := readAll(t, ehtest.NewReader(t, h), ms)
	partOf := map[string]string{}
	for _, m := range ms {
		ev := got[m.ID]
		if ev.PartitionKey == nil || *ev.PartitionKey != m.Topic {
			t.Fatalf("event of %s: partition key %v", m.Topic, ev.PartitionKey)
		}
		if p, ok := partOf[m.Topic]; ok && p != ev.Partition {
			t.Fatalf("topic %s spread over partitions %s and %s", m.Topic, p, ev.Partition)
		}
		partOf[m.Topic] = ev.Partition
	}
}

func TestEmulatorPartitionID(t *testing.T) {
	h := ehtest.Start(t, ehfake.Options{Partitions: 4})
	s := newSink(t, h, "dev", map[string]string{"AZURE_EH_PARTITION_ID": "2"})
	sinktest.Connected(t, s)
	if lim := s.Limits(); lim.MaxInFlight != 1 {
		t.Errorf("MaxInFlight %d with a fixed partition", lim.MaxInFlight)
	}
	ms := sinktest.Messages(20, func(i int) []byte { return fmt.Appendf(nil, "m%d", i) })
	write(t, s, ms)
	for id, ev := range readAll(t, ehtest.NewReader(t, h), ms) {
		if ev.Partition != "2" {
			t.Fatalf("%s in partition %s", id, ev.Partition)
		}
	}
}

func TestEmulatorLimitsAndSplitting(t *testing.T) {
	h := ehtest.Start(t, ehfake.Options{MaxMessageSize: 64 << 10, Partitions: 1})
	h.NeedFake(t, "sets the hub's size limit")
	s := newSink(t, h, "dev", nil)
	sinktest.Connected(t, s)
	lim := s.Limits()
	t.Logf("64 KiB hub: %+v", lim)
	if lim.MaxMessageBytes < 64<<10-1024 || lim.MaxMessageBytes >= 64<<10 {
		t.Fatalf("MaxMessageBytes %d for a 64 KiB hub", lim.MaxMessageBytes)
	}
	// A max-size payload with the longest topic the limit allows for, and a
	// batch that needs several sends.
	big := sinktest.Messages(1, func(int) []byte { return bytes.Repeat([]byte{0xa5}, lim.MaxMessageBytes) })
	big[0].Topic = strings.Repeat("t", 256)
	ms := append(big, sinktest.Messages(6, func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 30_000) })...)
	write(t, s, ms)
	readAll(t, ehtest.NewReader(t, h), ms)
}

func TestEmulatorOutageAndRecovery(t *testing.T) {
	t.Parallel()
	h := ehtest.Start(t, ehfake.Options{Partitions: 2})
	h.NeedFake(t, "stops and restarts the hub")
	s := newSink(t, h, "dev", nil)
	sinktest.Connected(t, s)
	before := sinktest.Messages(5, func(i int) []byte { return fmt.Appendf(nil, "before %d", i) })
	write(t, s, before)

	h.Fake.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := s.WriteBatch(ctx, sinktest.Messages(3, func(int) []byte { return []byte("during") }))
	if err == nil || sink.IsPermanent(err) || sink.IsAuth(err) || ctx.Err() != nil {
		t.Fatalf("write while the hub is down: %v", err)
	}
	var be *sink.BatchError
	if errors.As(err, &be) {
		t.Fatalf("nothing was sent, yet a partial failure: %v", err)
	}
	t.Logf("write while down failed in %s: %v", time.Since(start).Round(time.Millisecond), err)
	h.CheckNoKey(t, "the error", err.Error())

	h.Fake.Restart()
	after := sinktest.Messages(5, func(i int) []byte { return fmt.Appendf(nil, "after %d", i) })
	var werr error
	for range 20 { // the SDK reconnects on its own; give it a few tries
		if werr = s.WriteBatch(t.Context(), after); werr == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if werr != nil {
		t.Fatalf("write after the restart: %v", werr)
	}
	readAll(t, ehtest.NewReader(t, h), append(before, after...))
}

func TestEmulatorErrorsHideTheKey(t *testing.T) {
	h := ehtest.Start(t, ehfake.Options{})
	h.NeedFake(t, "points the connection string at a hub that does not exist")
	// A hub that does not exist: the service refuses the link.
	wrong := &ehtest.Hub{ConnectionString: strings.Replace(h.ConnectionString, "EntityPath=hub", "EntityPath=nohub", 1), Key: h.Key}
	s := newSink(t, wrong, "dev", nil)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := s.Connect(ctx)
	if err == nil || sink.IsPermanent(err) {
		t.Fatalf("connect to a missing hub: %v", err)
	}
	t.Logf("missing hub: %v", err)
	h.CheckNoKey(t, "the error", err.Error())
}
