package s3sink

import (
	"context"
	"testing"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

var _ sink.Checker = (*Sink)(nil)

func TestCheck(t *testing.T) {
	refuse := func(op string) func(string, string) error {
		return func(o, key string) error {
			if o == op {
				return apiErr("AccessDenied")
			}
			return nil
		}
	}
	for _, c := range []struct {
		name  string
		write bool
		fail  func(op, key string) error
		want  []string // patterns of the findings, "warn: " marking warnings
		auth  bool     // fails with an AuthError
		left  int      // objects left in the bucket
	}{
		{name: "read only", want: []string{`bucket test-bucket \(region us-east-1\) answered HeadBucket, credentials from the access key in AWS_S3_ACCESS_KEY`}},
		{name: "write", write: true, want: []string{`bucket .* answered HeadBucket, credentials from .*`,
			`wrote and deleted test object in/cloud-block-check/dev-1-\d{8}T\d{6}\.\d{9}Z\.txt \(PutObject, DeleteObject\)`}},
		{name: "put refused", write: true, fail: refuse("PutObject"), auth: true, want: []string{`bucket .*`}},
		{name: "delete refused", write: true, fail: refuse("DeleteObject"), left: 1, want: []string{`bucket .*`,
			`warn: wrote test object in/cloud-block-check/dev-1-.*\.txt \(PutObject\) but could not delete it \(s3:DeleteObject, which the block does not need\): delete it by hand: authentication: deleting .*AccessDenied.*`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeS3(testBucket)
			s := fakeSink(t, f, map[string]string{"AWS_S3_PREFIX": "in"})
			if err := s.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			f.fail = c.fail
			sinktest.WantCheck(t, s, c.write, c.auth, c.auth, c.want)
			if _, keys := f.snapshot(); len(keys) != c.left {
				t.Errorf("objects left: %q, want %d", keys, c.left)
			}
		})
	}
}
