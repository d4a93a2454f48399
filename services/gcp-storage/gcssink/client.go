package gcssink

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	raw "google.golang.org/api/storage/v1"

	"github.com/cloud-block/cloud-block/common/objstore"
)

// inserter writes one object: the part of the JSON API's objects.insert
// call the sink uses (raw.ObjectsService.Insert with its media and
// precondition), so a fake can stand in for the service.
//
// Why the generated JSON API client rather than cloud.google.com/go/storage:
// that package links its gRPC transport, xDS, OpenTelemetry and Cloud
// Monitoring exporters even when only its HTTP client is used (a bare
// program writing one object is 32.4 MiB stripped; with this client 14.6
// MiB), and its HTTP path makes this very call underneath.
type inserter interface {
	Insert(ctx context.Context, bucket string, o *objstore.Object) error
}

// dialer creates the service client.
type dialer func(ctx context.Context, cfg settings) (inserter, error)

type rawInserter struct{ objects *raw.ObjectsService }

// singleRequestMax is the largest object sent in one request. Larger ones
// use a resumable upload, whose chunks are retried on their own. Up to this
// size a resumable upload would be one chunk anyway, after copying the body
// into a buffer of its own.
const singleRequestMax = googleapi.DefaultUploadChunkSize

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Insert writes o only if no object of that name exists (ifGenerationMatch=0):
// a batch sent again after a crash has the same key and bytes, so an
// existing object is that batch, already written, and is left as it is
// (the caller sees 412). It also means the service account needs no right
// to delete or overwrite objects.
func (r rawInserter) Insert(ctx context.Context, bucket string, o *objstore.Object) error {
	sum := crc32.Checksum(o.Body, castagnoli)
	meta := &raw.Object{
		Name:            o.Key,
		ContentType:     o.ContentType,
		ContentEncoding: o.ContentEncoding,
		// Cloud Storage checks the body against it and refuses a corrupted upload.
		Crc32c: base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, sum)),
	}
	opts := []googleapi.MediaOption{googleapi.ContentType(o.ContentType)}
	if len(o.Body) <= singleRequestMax {
		opts = append(opts, googleapi.ChunkSize(0))
	}
	_, err := r.objects.Insert(bucket, meta).Media(bytes.NewReader(o.Body), opts...).
		IfGenerationMatch(0).Context(ctx).Do()
	return err
}

// dialRaw creates the JSON API client. Nothing is sent until the first
// write: checking the bucket would need a right (storage.buckets.get) that
// writing objects does not.
func dialRaw(ctx context.Context, cfg settings) (inserter, error) {
	// Enough to create objects; the library's default asks for full control.
	opts := []option.ClientOption{option.WithScopes(raw.DevstorageReadWriteScope)}
	switch {
	case cfg.emulator != "":
		// What the storage library does for STORAGE_EMULATOR_HOST.
		host := cfg.emulator
		if !strings.Contains(host, "://") {
			host = "http://" + host
		}
		opts = append(opts, option.WithEndpoint(strings.TrimSuffix(host, "/")+"/storage/v1/"), option.WithoutAuthentication())
	case cfg.creds.JSON != nil:
		opts = append(opts, option.WithAuthCredentialsJSON(option.CredentialsType(cfg.creds.Type), cfg.creds.JSON))
	}
	svc, err := raw.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("gcs: creating the client: %w", err)
	}
	return rawInserter{objects: svc.Objects}, nil
}
