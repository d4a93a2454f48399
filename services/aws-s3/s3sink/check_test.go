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
	sinktest.RunCheckCases(t, []sinktest.CheckCase{
		{Name: "read only", Want: []string{`bucket test-bucket \(region us-east-1\) answered HeadBucket, credentials from the access key in AWS_S3_ACCESS_KEY`}},
		{Name: "write", Write: true, Want: []string{`bucket .* answered HeadBucket, credentials from .*`,
			`wrote and deleted test object in/cloud-block-check/dev-1-\d{8}T\d{6}\.\d{9}Z\.txt \(PutObject, DeleteObject\)`}},
		{Name: "put refused", Write: true, Refuse: refuse("PutObject"), Auth: true, Want: []string{`bucket .*`}},
		{Name: "delete refused", Write: true, Refuse: refuse("DeleteObject"), Left: 1, Want: []string{`bucket .*`,
			`warn: wrote test object in/cloud-block-check/dev-1-.*\.txt \(PutObject\) but could not delete it \(s3:DeleteObject, which the block does not need\): delete it by hand: authentication: deleting .*AccessDenied.*`}},
	}, nil, func(t *testing.T, c sinktest.CheckCase) (sink.Checker, func() int) {
		f := newFakeS3(testBucket)
		s := fakeSink(t, f, map[string]string{"AWS_S3_PREFIX": "in"})
		if err := s.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.fail = c.Refuse
		return s, func() int { _, keys := f.snapshot(); return len(keys) }
	})
}
