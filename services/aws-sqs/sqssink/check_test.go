package sqssink

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/sink"
)

var _ sink.Checker = (*Sink)(nil)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name    string
		attrErr error
		write   bool
		want    []string // findings, "warn: " marking warnings
		auth    bool     // the error is an AuthError
		fails   bool
	}{
		{name: "ok", want: []string{"standard queue https://sqs.eu-west-1.amazonaws.com/123456789012/q answered GetQueueAttributes (MaximumMessageSize 4096 bytes)"}},
		{name: "write is not done", write: true, want: []string{"standard queue", "warn: --write sends no test message"}},
		{name: "attributes denied", attrErr: &smithy.GenericAPIError{Code: "AccessDenied"},
			want: []string{"warn: standard queue https://sqs.eu-west-1.amazonaws.com/123456789012/q: the credentials are valid but may not call sqs:GetQueueAttributes"}},
		{name: "bad key", attrErr: &smithy.GenericAPIError{Code: "InvalidClientTokenId"}, auth: true, fails: true},
		{name: "down", attrErr: errRefused, fails: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := newMem(4096, false)
			s := connected(t, mem, nil)
			mem.attrErr = c.attrErr // after Connect, which tolerates a refused read
			fs, err := s.Check(context.Background(), sink.CheckOptions{Write: c.write})
			if (err != nil) != c.fails || sink.IsAuth(err) != c.auth {
				t.Fatalf("error %v: want failure %v, auth %v", err, c.fails, c.auth)
			}
			if len(fs) != len(c.want) {
				t.Fatalf("findings %+v, want %q", fs, c.want)
			}
			for i, f := range fs {
				text, warn := strings.CutPrefix(c.want[i], "warn: ")
				if f.Warn != warn || !strings.HasPrefix(f.Text, text) {
					t.Errorf("finding %+v, want %q", f, c.want[i])
				}
			}
		})
	}
	s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "q"}, testDevice)
	if _, err := s.Check(context.Background(), sink.CheckOptions{}); err != errNotConnected {
		t.Errorf("Check before Connect: %v", err)
	}
}
