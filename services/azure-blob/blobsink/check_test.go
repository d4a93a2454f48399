package blobsink

import (
	"context"
	"strings"
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
	for _, c := range []struct {
		name  string
		write bool
		fail  func(op, name string) error
		want  []string // patterns of the findings, "warn: " marking warnings
		auth  bool     // fails with an AuthError
		left  int      // blobs left in the container
	}{
		{name: "read only", want: []string{`container ctr at https://fake\.blob\.example/ answered Get Container Properties`}},
		{name: "write", write: true, want: []string{`container ctr .*`,
			`wrote and deleted test blob in/cloud-block-check/test-device-\d{8}T\d{6}\.\d{9}Z\.txt \(Put Blob, Delete Blob\)`}},
		{name: "write-only SAS", fail: refuse("properties", "AuthorizationPermissionMismatch"), want: []string{
			`warn: the credential may not read container ctr's properties at https://fake\.blob\.example/, which the block does without \(a SAS or role that may only write\); check --write proves writing`}},
		{name: "write-only SAS writes", write: true, fail: refuse("properties", "AuthorizationPermissionMismatch"), want: []string{
			`warn: the credential may not read container ctr's properties .*only write\)`, `wrote and deleted .*`}},
		{name: "bad key", fail: refuse("properties", "AuthenticationFailed"), auth: true},
		{name: "upload refused", write: true, fail: refuse("upload", "AuthorizationPermissionMismatch"), auth: true, want: []string{`container ctr .*`}},
		{name: "delete refused", write: true, fail: refuse("delete", "AuthorizationPermissionMismatch"), left: 1, want: []string{`container ctr .*`,
			`warn: wrote test blob in/cloud-block-check/.*\.txt \(Put Blob\) but could not delete it \(permission d, which the block does not need\): delete it by hand: authentication: deleting blob .*: 403 AuthorizationPermissionMismatch: This request is not authorized .*`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			store := newFakeStore("ctr")
			s := fakeSink(t, store, with(fakeEnv, "AZURE_BLOB_PREFIX", "in"), nil)
			if err := s.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			store.fail = c.fail
			err := sinktest.WantCheck(t, s, c.write, c.auth, c.auth, c.want)
			if err != nil && strings.Contains(err.Error(), "SECRETSIG") {
				t.Errorf("the SAS in the error: %v", err)
			}
			if n := len(store.blobs("ctr")); n != c.left {
				t.Errorf("%d blobs left, want %d", n, c.left)
			}
		})
	}
}
