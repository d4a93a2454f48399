package blobsink

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Check reads the container's properties (Get Container Properties): it
// exists and takes the credential. A credential that may only write (a
// SAS with cw, a role without read) cannot read them, which the block does
// without: a warning, and --write proves the writing. With Write it puts a
// test blob under the key prefix, create-only as the block writes, and
// deletes it (SAS permission d, which the block does not need: if refused,
// the blob stays and a warning names it).
func (s *Sink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	name := s.cfg.Container
	var fs []sink.Finding
	_, err := s.cl.ctr.GetProperties(ctx, nil)
	switch {
	case err == nil:
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("container %s at %s answered Get Container Properties", name, s.cl.where)})
	case bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch):
		text := fmt.Sprintf("the credential may not read container %s's properties at %s, which the block does without (a SAS or role that may only write)", name, s.cl.where)
		if !opt.Write {
			text += "; check --write proves writing"
		}
		fs = append(fs, sink.Finding{Warn: true, Text: text})
	default:
		return nil, s.classify(err, "checking container "+name)
	}
	if !opt.Write {
		return fs, nil
	}
	key, body := sink.CheckObject(s.cfg.Layout.Prefix, s.cfg.Layout.Device, time.Now())
	if _, err := s.put(ctx, &objstore.Object{Key: key, Body: body, ContentType: "text/plain; charset=utf-8"}); err != nil {
		return fs, err
	}
	if _, err := s.cl.blobs.DeleteBlob(ctx, name, key, nil); err != nil {
		return append(fs, sink.Finding{Warn: true, Text: fmt.Sprintf(
			"wrote test blob %s (Put Blob) but could not delete it (permission d, which the block does not need): delete it by hand: %v",
			key, s.classify(err, "deleting blob "+key))}), nil
	}
	return append(fs, sink.Finding{Text: fmt.Sprintf("wrote and deleted test blob %s (Put Blob, Delete Blob)", key)}), nil
}
