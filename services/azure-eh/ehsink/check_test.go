package ehsink

import (
	"context"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

var _ sink.Checker = (*Sink)(nil)

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		propsErr error
		write    bool
		want     []string // patterns of the findings, "warn: " marking warnings
		fails    bool
	}{
		{name: "ok", want: []string{`event hub fake/hub took a sender link \(events of up to \d+ bytes\)`,
			`event hub fake/hub answered GetEventHubProperties: partitions 0, 1, 2, 3`}},
		{name: "send-only policy", propsErr: &azeventhubs.Error{Code: azeventhubs.ErrorCodeUnauthorizedAccess},
			want: []string{`event hub .*`, `warn: the credential may not read the hub's properties \(GetEventHubProperties needs the Listen claim\), which the block does without: .*`}},
		{name: "write is not done", write: true, want: []string{`event hub .*`, `event hub .*`, `warn: --write sends no test event: it would reach the hub's consumers`}},
		{name: "connection lost", propsErr: errConnLost, fails: true, want: []string{`event hub .*`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &fakeHub{maxBytes: 1 << 20, propsErr: c.propsErr}
			s := newFakeSink(h)
			if err := s.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			// Never an AuthError: the link was taken.
			sinktest.WantCheck(t, s, c.write, c.fails, false, c.want)
		})
	}
}
