// Package ehtest gives the destination's tests an event hub: the project's
// fake (testenv/ehfake), or Microsoft's emulator (or a real hub) when
// EH_TEST_CONNECTION_STRING names one, and a reader that reads everything
// back with the SDK's consumer.
package ehtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/testenv/ehfake"
)

// EnvConnectionString names the variable that points the tests at an
// external hub: a hub-level connection string (with EntityPath), e.g. for
// Microsoft's emulator
// Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;EntityPath=eh1
const EnvConnectionString = "EH_TEST_CONNECTION_STRING"

// Hub is an event hub for a test.
type Hub struct {
	// ConnectionString is hub-level (with EntityPath).
	ConnectionString string
	// Key is its SharedAccessKey, which must never show in a log or error.
	Key string
	// Fake is the fake Event Hubs, nil when the hub is external.
	Fake *ehfake.Server
}

// Start returns the external hub if EH_TEST_CONNECTION_STRING is set, else a
// fresh fake with opts, whose connection string gets a key distinctive
// enough to search the logs for (the fake takes any).
func Start(t testing.TB, opts ehfake.Options) *Hub {
	t.Helper()
	if cs := os.Getenv(EnvConnectionString); cs != "" {
		props, err := azeventhubs.ParseConnectionString(cs)
		if err != nil || props.EntityPath == nil || props.SharedAccessKey == nil {
			t.Fatalf("%s: want a hub-level connection string with EntityPath and SharedAccessKey", EnvConnectionString)
		}
		return &Hub{ConnectionString: cs, Key: *props.SharedAccessKey}
	}
	s := ehfake.Start(t, opts)
	key := fmt.Sprintf("ehtestKEY%xZ9=", time.Now().UnixNano())
	cs := fmt.Sprintf("Endpoint=sb://%s;SharedAccessKeyName=send;SharedAccessKey=%s;EntityPath=%s;UseDevelopmentEmulator=true", s.Addr(), key, s.Hub)
	return &Hub{ConnectionString: cs, Key: key, Fake: s}
}

// CheckNoKey fails the test if text holds the hub's key.
func (h *Hub) CheckNoKey(t testing.TB, what, text string) {
	t.Helper()
	if len(h.Key) >= 8 && strings.Contains(text, h.Key) {
		t.Errorf("%s contains the connection string's key", what)
	}
}

// NeedFake skips a test that must stop the hub or set its size limit, which
// only the fake allows.
func (h *Hub) NeedFake(t testing.TB, why string) {
	t.Helper()
	if h.Fake == nil {
		t.Skipf("%s is set: this test %s, which only the fake Event Hubs can do", EnvConnectionString, why)
	}
}

// Reader reads every partition of a hub from the start, keeping what it read.
type Reader struct {
	t     testing.TB
	ids   []string
	parts []*azeventhubs.PartitionClient

	mu     sync.Mutex
	events []Event
}

// Event is an event read and its partition.
type Event struct {
	*azeventhubs.ReceivedEventData
	Partition string
}

// NewReader opens a partition client on each of the hub's partitions.
func NewReader(t testing.TB, h *Hub) *Reader {
	t.Helper()
	c, err := azeventhubs.NewConsumerClientFromConnectionString(h.ConnectionString, "", azeventhubs.DefaultConsumerGroup, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	props, err := c.GetEventHubProperties(ctx, nil)
	if err != nil {
		t.Fatalf("reading the hub's partitions: %v", err)
	}
	r := &Reader{t: t}
	earliest := true
	for _, id := range props.PartitionIDs {
		pc, err := c.NewPartitionClient(id, &azeventhubs.PartitionClientOptions{StartPosition: azeventhubs.StartPosition{Earliest: &earliest}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close(context.Background()) })
		r.parts = append(r.parts, pc)
		r.ids = append(r.ids, id)
	}
	return r
}

// Poll reads each partition until nothing more arrives within quiet.
func (r *Reader) Poll(quiet time.Duration) {
	r.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(r.parts))
	for i, pc := range r.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), quiet)
				evs, err := pc.ReceiveEvents(ctx, 5000, nil)
				cancel()
				r.mu.Lock()
				for _, ev := range evs {
					r.events = append(r.events, Event{ev, r.ids[i]})
				}
				r.mu.Unlock()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						errs[i] = err
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		r.t.Fatalf("reading the hub: %v", err)
	}
}

// Events returns everything read so far.
func (r *Reader) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// ByID maps the cloudblock_id property to the event, for the ids asked
// (all when ids is nil), polling until all are there or timeout passes.
func (r *Reader) ByID(ids []string, timeout time.Duration) map[string]Event {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.Poll(300 * time.Millisecond)
		out := map[string]Event{}
		for _, ev := range r.Events() {
			if id, ok := ev.Properties[ehsink.PropID].(string); ok {
				out[id] = ev
			}
		}
		missing := 0
		for _, id := range ids {
			if _, ok := out[id]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return out
		}
	}
}

// Bodies returns the bodies of the events whose device property is device,
// in the order read (per partition).
func (r *Reader) Bodies(device string) [][]byte {
	var out [][]byte
	for _, ev := range r.Events() {
		if ev.Properties[ehsink.PropDevice] == device {
			out = append(out, ev.Body)
		}
	}
	return out
}
