package pubsubsink

import (
	"context"
	"regexp"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/emulators"
)

var (
	_ sink.Checker = (*Sink)(nil)
	_ topicReader  = (*sdkPublisher)(nil)
)

func TestCheck(t *testing.T) {
	denied := status.Error(codes.PermissionDenied, "User not authorized to perform this action.")
	for _, c := range []struct {
		name     string
		topicErr error
		granted  []string
		write    bool
		want     []string // patterns of the findings, "warn: " marking warnings
		auth     bool
		fails    bool
	}{
		{name: "readable", want: []string{`topic projects/p1/topics/tp1 answered GetTopic`}},
		// The Publisher role: no topics.get, but publish.
		{name: "publisher role", topicErr: denied, granted: []string{permPublish},
			want: []string{`topic projects/p1/topics/tp1: the credentials may publish \(TestIamPermissions grants pubsub\.topics\.publish\); they may not read the topic \(GetTopic\), which the block does not need`}},
		{name: "no role", topicErr: denied, auth: true, fails: true},
		{name: "bad key", topicErr: status.Error(codes.Unauthenticated, "invalid token"), auth: true, fails: true},
		{name: "missing topic", topicErr: status.Error(codes.NotFound, "Resource not found"), fails: true},
		{name: "down", topicErr: status.Error(codes.Unavailable, "connection refused"), fails: true},
		{name: "write is not done", write: true, want: []string{`topic .*`, `warn: --write publishes no test message: it would reach the topic's subscribers`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakePub()
			f.topicErr, f.granted = c.topicErr, c.granted
			s := fakeSink(t, f, nil)
			if err := s.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			// First, who the block is to Google (the fake's: no credentials).
			want := c.want
			if want != nil {
				want = append([]string{`identity: the platform's default credentials`}, want...)
			}
			sinktest.WantCheck(t, s, c.write, c.fails, c.auth, want)
		})
	}
}

// Against the emulator: the topic is read; a missing one is not found; a
// stopped emulator fails within the call's deadline (no retries).
func TestCheckEmulator(t *testing.T) {
	ps := emulators.StartPubSub(t)
	ps.CreateTopicSubscription(t, "checked", "checked-sub")
	ctx := context.Background()
	s := envSink(t, emulatorEnv(ps, "checked"))
	connectForCheck(t, s)
	fs, err := s.Check(ctx, sink.CheckOptions{})
	if err != nil || len(fs) != 1 || fs[0].Warn {
		t.Fatalf("check: %+v, %v", fs, err)
	}
	missing := envSink(t, emulatorEnv(ps, "missing"))
	connectForCheck(t, missing)
	if _, err := missing.Check(ctx, sink.CheckOptions{}); err == nil || sink.IsAuth(err) || !regexp.MustCompile(`topic projects/.*/topics/missing not found`).MatchString(err.Error()) {
		t.Errorf("missing topic: %v", err)
	}
	ps.Stop()
	if _, err := s.Check(ctx, sink.CheckOptions{}); err == nil || sink.IsAuth(err) {
		t.Errorf("emulator stopped: %v", err)
	}
}

func connectForCheck(t *testing.T, s *Sink) {
	t.Helper()
	if err := s.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
}
