package ehsink

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/cloud-block/cloud-block/common/sink"
)

// transportSink is a sink whose AMQP producer is amqpHub and whose
// WebSocket producer is wsHub, counting the dials of each.
func transportSink(transport string, amqpHub, wsHub *fakeHub, logs *bytes.Buffer) (*Sink, *[2]int) {
	var dials [2]int
	s := &Sink{log: slog.New(slog.NewJSONHandler(logs, nil)), device: "dev-1", keyBy: keyNone, where: "fake/hub", transport: transport,
		dial: func(ws bool) (producer, error) {
			if ws {
				dials[1]++
				return wsHub, nil
			}
			dials[0]++
			return amqpHub, nil
		}}
	return s, &dials
}

func TestAutoFallsBackToWebSockets(t *testing.T) {
	ws := &fakeHub{maxBytes: 1 << 20}
	var logs bytes.Buffer
	s, dials := transportSink(transportAuto, brokenHub(), ws, &logs)
	if err := s.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if *dials != [2]int{1, 1} {
		t.Fatalf("dials (amqp, websockets) = %v, want one each", *dials)
	}
	for _, want := range []string{"AMQP (port 5671) could not connect; using AMQP over WebSockets (port 443) until the block restarts", `"transport":"websockets"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	// A reconnect keeps to WebSockets.
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if *dials != [2]int{1, 2} {
		t.Fatalf("after a reconnect, dials = %v, want AMQP tried once only", *dials)
	}
}

func TestAutoPrefersAMQP(t *testing.T) {
	var logs bytes.Buffer
	s, dials := transportSink(transportAuto, &fakeHub{maxBytes: 1 << 20}, &fakeHub{maxBytes: 1 << 20}, &logs)
	if err := s.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if *dials != [2]int{1, 0} || !strings.Contains(logs.String(), `"transport":"amqp"`) {
		t.Fatalf("dials = %v, log %s", *dials, logs.String())
	}
}

func TestAutoDoesNotFallBackOnRefusedCredentials(t *testing.T) {
	var logs bytes.Buffer
	denied := &fakeHub{maxBytes: 1 << 20, newErr: &azeventhubs.Error{Code: azeventhubs.ErrorCodeUnauthorizedAccess}}
	s, dials := transportSink(transportAuto, denied, &fakeHub{maxBytes: 1 << 20}, &logs)
	err := s.Connect(t.Context())
	if !sink.IsAuth(err) || *dials != [2]int{1, 0} {
		t.Fatalf("err %v, dials %v: want an auth error and no WebSocket attempt", err, *dials)
	}
}

func TestAutoBothFail(t *testing.T) {
	var logs bytes.Buffer
	s, dials := transportSink(transportAuto, brokenHub(), brokenHub(), &logs)
	err := s.Connect(t.Context())
	if err == nil || *dials != [2]int{1, 1} {
		t.Fatalf("err %v, dials %v", err, *dials)
	}
	for _, want := range []string{"connecting to fake/hub over WebSockets", "and AMQP before it: event hubs: connecting to fake/hub:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if s.fellBack {
		t.Error("fell back although WebSockets failed too")
	}
}

// A dropped AMQP connection hangs; auto gives up on it after fallbackAfter.
func TestAutoFallsBackWhenAMQPHangs(t *testing.T) {
	var logs bytes.Buffer
	hang := &hangingHub{fakeHub{maxBytes: 1 << 20}}
	var dials [2]int
	s := &Sink{log: slog.New(slog.NewJSONHandler(&logs, nil)), keyBy: keyNone, where: "fake/hub", transport: transportAuto,
		fallbackAfter: 200 * time.Millisecond,
		dial: func(ws bool) (producer, error) {
			if ws {
				dials[1]++
				return &fakeHub{maxBytes: 1 << 20}, nil
			}
			dials[0]++
			return hang, nil
		}}
	start := time.Now()
	if err := s.Connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || dials != [2]int{1, 1} {
		t.Fatalf("connected after %s with dials %v", d, dials)
	}
}

func TestFixedTransports(t *testing.T) {
	for _, tc := range []struct {
		transport string
		want      [2]int
	}{{transportAMQP, [2]int{1, 0}}, {transportWS, [2]int{0, 1}}} {
		var logs bytes.Buffer
		s, dials := transportSink(tc.transport, brokenHub(), brokenHub(), &logs)
		if err := s.Connect(t.Context()); err == nil || *dials != tc.want {
			t.Errorf("%s: err %v, dials %v, want %v", tc.transport, err, *dials, tc.want)
		}
	}
}

type hangingHub struct{ fakeHub }

func (h *hangingHub) NewEventDataBatch(ctx context.Context, o *azeventhubs.EventDataBatchOptions) (eventBatch, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestWebSocketURL(t *testing.T) {
	p := azeventhubs.WebSocketConnParams{Host: "wss://myns.servicebus.windows.net/$servicebus/websocket"}
	if got := (wsDialer{}).url(p); got != p.Host {
		t.Errorf("url = %s", got)
	}
	p = azeventhubs.WebSocketConnParams{Host: "wss://127.0.0.1:5672/$servicebus/websocket"}
	if got := (wsDialer{plain: true}).url(p); got != "ws://127.0.0.1:5672/$servicebus/websocket" {
		t.Errorf("emulator url = %s", got)
	}
}
