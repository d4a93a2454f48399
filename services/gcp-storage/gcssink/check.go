package gcssink

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
)

// permCreate is the permission the block needs on the bucket (in the
// Storage Object Creator role), which has no storage.buckets.get.
const permCreate = "storage.objects.create"

// bucketReader is what the check asks of the client besides inserting.
type bucketReader interface {
	// bucketAttrs reads the bucket's metadata (storage.buckets.get).
	bucketAttrs(ctx context.Context, bucket string) error
	// testPermissions returns which of perms the credentials hold on the
	// bucket (buckets.testIamPermissions, which needs no permission).
	testPermissions(ctx context.Context, bucket string, perms []string) ([]string, error)
	// deleteObject removes the check's test object.
	deleteObject(ctx context.Context, bucket, key string) error
}

func (r storageInserter) bucketAttrs(ctx context.Context, bucket string) error {
	_, err := r.c.Bucket(bucket).Attrs(ctx)
	return err
}

func (r storageInserter) testPermissions(ctx context.Context, bucket string, perms []string) ([]string, error) {
	return r.c.Bucket(bucket).IAM().TestPermissions(ctx, perms)
}

func (r storageInserter) deleteObject(ctx context.Context, bucket, key string) error {
	return r.c.Bucket(bucket).Object(key).Delete(ctx)
}

// Check reads the bucket's metadata (Get Bucket): the bucket exists and
// takes the credentials. The Storage Object Creator role the block needs
// may not read it; then it asks which permissions the credentials hold on
// the bucket (testIamPermissions): creating objects allowed is a pass, not
// allowed a denial. With Write it writes a test object under the key
// prefix, create-only as the block writes, and deletes it (which that role
// may not: the object then stays and a warning names it).
func (s *Sink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	s.mu.Lock()
	ins := s.ins
	s.mu.Unlock()
	if ins == nil {
		return nil, errors.New("gcs: not connected")
	}
	br, ok := ins.(bucketReader)
	if !ok {
		return nil, errors.New("gcs: this client cannot read buckets")
	}
	bucket := s.cfg.bucket
	var fs []sink.Finding
	if s.cfg.emulator == "" && s.cfg.creds.Identity != "" {
		fs = append(fs, sink.Finding{Text: "identity: " + s.cfg.creds.Identity})
	}
	var ge *googleapi.Error
	switch err := br.bucketAttrs(ctx, bucket); {
	case err == nil:
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("bucket %s answered Get Bucket", bucket)})
	case errors.As(err, &ge) && ge.Code == http.StatusForbidden:
		granted, terr := br.testPermissions(ctx, bucket, []string{permCreate})
		if terr != nil {
			return nil, s.checkError("testIamPermissions on bucket "+bucket, terr)
		}
		if !slices.Contains(granted, permCreate) {
			return nil, &sink.AuthError{Err: fmt.Errorf("gcs: the credentials may not create objects in bucket %s (testIamPermissions grants no %s; the service account needs the Storage Object Creator role on it), nor read it: %w", bucket, permCreate, err)}
		}
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("bucket %s: the credentials may create objects (testIamPermissions grants %s); they may not read the bucket (Get Bucket), which the block does not need", bucket, permCreate)})
	default:
		return nil, s.checkError("reading bucket "+bucket, err)
	}
	if !opt.Write {
		return fs, nil
	}
	key, body := sink.CheckObject(s.cfg.objects.Prefix, s.cfg.objects.Device, time.Now())
	if _, err := s.put(ctx, ins, &objstore.Object{Key: key, Body: body, ContentType: "text/plain; charset=utf-8"}); err != nil {
		return fs, err
	}
	if err := br.deleteObject(ctx, bucket, key); err != nil {
		return append(fs, sink.Finding{Warn: true, Text: fmt.Sprintf(
			"wrote test object %s but could not delete it (storage.objects.delete, which the block and the Storage Object Creator role do not have): delete it by hand: %v",
			key, s.checkError("deleting "+key, err))}), nil
	}
	return append(fs, sink.Finding{Text: fmt.Sprintf("wrote and deleted test object %s", key)}), nil
}

// checkError classifies an error of a check's call as put does a write's.
func (s *Sink) checkError(what string, err error) error {
	var ge *googleapi.Error
	var ae *auth.Error
	switch {
	case errors.As(err, &ge) && (ge.Code == http.StatusUnauthorized || ge.Code == http.StatusForbidden),
		errors.As(err, &ae) && ae.Response != nil && (ae.Response.StatusCode == http.StatusBadRequest ||
			ae.Response.StatusCode == http.StatusUnauthorized || ae.Response.StatusCode == http.StatusForbidden):
		return &sink.AuthError{Err: fmt.Errorf("gcs: %s was refused: %w", what, err)}
	case errors.Is(err, storage.ErrBucketNotExist), errors.As(err, &ge) && ge.Code == http.StatusNotFound:
		return fmt.Errorf("gcs: bucket %s not found (create it, or check %s_BUCKET): %w", s.cfg.bucket, prefix, err)
	}
	return fmt.Errorf("gcs: %s: %w", what, err)
}
