package blobsink

import (
	"context"
	"testing"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

var _ sink.Checker = (*Sink)(nil)

func TestCheck(t *testing.T) {
	refuse := func(op, code string) func(string, string) error {
		return func(o, _ string) error {
			if o == op {
				return azErr(403, code, "This request is not authorized to perform this operation using this permission.")
			}
			return nil
		}
	}
	sinktest.RunCheckCases(t, []sinktest.CheckCase{
		{Name: "read only", Want: []string{`container ctr at https://fake\.blob\.example/ answered Get Container Properties`}},
		{Name: "write", Write: true, Want: []string{`container ctr .*`,
			`wrote and deleted test blob in/cloud-block-check/test-device-\d{8}T\d{6}\.\d{9}Z\.txt \(Put Blob, Delete Blob\)`}},
		{Name: "write-only SAS", Refuse: refuse("properties", "AuthorizationPermissionMismatch"), Want: []string{
			`warn: the credential may not read container ctr's properties at https://fake\.blob\.example/, which the block does without \(a SAS or role that may only write\); check --write proves writing`}},
		{Name: "write-only SAS writes", Write: true, Refuse: refuse("properties", "AuthorizationPermissionMismatch"), Want: []string{
			`warn: the credential may not read container ctr's properties .*only write\)`, `wrote and deleted .*`}},
		{Name: "bad key", Refuse: refuse("properties", "AuthenticationFailed"), Auth: true},
		{Name: "upload refused", Write: true, Refuse: refuse("upload", "AuthorizationPermissionMismatch"), Auth: true, Want: []string{`container ctr .*`}},
		{Name: "delete refused", Write: true, Refuse: refuse("delete", "AuthorizationPermissionMismatch"), Left: 1, Want: []string{`container ctr .*`,
			`warn: wrote test blob in/cloud-block-check/.*\.txt \(Put Blob\) but could not delete it \(permission d, which the block does not need\): delete it by hand: authentication: deleting blob .*: 403 AuthorizationPermissionMismatch: This request is not authorized .*`}},
	}, []string{"SECRETSIG"}, func(t *testing.T, c sinktest.CheckCase) (sink.Checker, func() int) {
		store := newFakeStore("ctr")
		s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_PREFIX", "in"), nil)
		if err := s.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		store.fail = c.Refuse
		return s, func() int { return len(store.blobs("ctr")) }
	})
}
