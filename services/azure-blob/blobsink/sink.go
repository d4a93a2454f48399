package blobsink

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Sink writes batches as block blobs.
type Sink struct {
	cfg Config
	cl  clients
	log *slog.Logger
}

func newSink(c Config, cl clients, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sink{cfg: c, cl: cl, log: log}
}

// Connect checks the container exists, or creates it when asked to. The
// clients were made by New: they hold no connection until the first call.
func (s *Sink) Connect(ctx context.Context) error {
	name := s.cfg.Container
	if s.cfg.Create {
		_, err := s.cl.blobs.CreateContainer(ctx, name, nil)
		switch {
		case err == nil:
			s.log.Info("container created", "container", name, "endpoint", s.cl.where)
			return nil
		case bloberror.HasCode(err, bloberror.ContainerAlreadyExists):
			s.log.Info("container exists", "container", name, "endpoint", s.cl.where)
			return nil
		}
		return s.classify(err, "creating container "+name)
	}
	_, err := s.cl.ctr.GetProperties(ctx, nil)
	switch {
	case err == nil:
		s.log.Info("container exists", "container", name, "endpoint", s.cl.where)
		return nil
	case bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch):
		// A SAS or role that may only create blobs cannot read the
		// container's properties; uploads will tell whether it exists.
		s.log.Warn("the credential may not read the container's properties: its existence is not checked", "container", name, "endpoint", s.cl.where)
		return nil
	}
	return s.classify(err, "checking container "+name)
}

// Limits: Azure Blob Storage takes any payload the spool holds (block blobs
// reach terabytes). Blobs are named after their batch, so a resent batch
// must be the same batch.
func (s *Sink) Limits() sink.Limits { return sink.Limits{StableBatches: true} }

// createOnly makes a PUT fail with BlobAlreadyExists instead of replacing a
// blob. A resent batch finds its blobs already stored (the names are
// deterministic and the content the same): nothing is rewritten, no second
// BlobCreated event reaches Event Grid subscribers, no version is added
// where versioning is on, and immutable containers accept resends.
var createOnly = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: new(azcore.ETagAny)}}

// WriteBatch writes the batch's blobs through the object stores' one write
// path (objstore.Writer), at most AZURE_BLOB_UPLOAD_CONCURRENCY at once.
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	w := objstore.Writer{Layout: s.cfg.Layout, Concurrency: s.cfg.Concurrency, Put: s.put, Log: s.log}
	return w.Write(ctx, batch)
}

// put uploads one object in a single PUT (UploadBuffer does so up to
// 256 MiB), reporting whether it was already there.
func (s *Sink) put(ctx context.Context, o *objstore.Object) (existed bool, err error) {
	h := &blob.HTTPHeaders{BlobContentType: &o.ContentType}
	if o.ContentEncoding != "" {
		h.BlobContentEncoding = &o.ContentEncoding
	}
	_, err = s.cl.blobs.UploadBuffer(ctx, s.cfg.Container, o.Key, o.Body, &azblob.UploadBufferOptions{
		HTTPHeaders:      h,
		Metadata:         metadata(o.Metadata),
		AccessConditions: createOnly,
	})
	if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		s.log.Debug("blob already stored", "blob", o.Key)
		return true, nil
	}
	if err != nil {
		return false, s.classify(err, "uploading blob "+o.Key)
	}
	return false, nil
}

// metadata is o's metadata (message mode: id, topic, time and device) as
// the SDK takes it, x-ms-meta-* headers; objstore has made the values plain
// ASCII and the names C# identifiers, as Blob Storage requires.
func metadata(md map[string]string) map[string]*string {
	if md == nil {
		return nil
	}
	out := make(map[string]*string, len(md))
	for k, v := range md {
		out[k] = &v
	}
	return out
}

// Close drops idle connections. Idempotent; the SDK client holds nothing else.
func (s *Sink) Close(context.Context) error {
	if s.cl.closeIdle != nil {
		s.cl.closeIdle()
	}
	return nil
}

// classify wraps err from an SDK call with what was being done and its class:
// AuthError for refused credentials, Permanent for a body the service will
// never take, plain (retried) for the rest. It keeps SAS tokens out of the
// message.
func (s *Sink) classify(err error, what string) error {
	redactQuery(err)
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		if msg, ok := credentialMessage(err); ok {
			return &sink.AuthError{Err: &describedError{msg: what + ": " + msg, err: err}}
		} else if msg != "" {
			return &describedError{msg: what + ": " + msg, err: err}
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	err = &responseError{what: what, re: re}
	switch code := bloberror.Code(re.ErrorCode); {
	case code == bloberror.ContainerNotFound:
		return fmt.Errorf("%w (container %q at %s: create it, or set %s=true)", err, s.cfg.Container, s.cl.where, varCreate)
	case code == bloberror.RequestBodyTooLarge || re.StatusCode == http.StatusRequestEntityTooLarge:
		return sink.Permanent(err)
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden,
		bloberror.HasCode(re, bloberror.AuthenticationFailed, bloberror.AuthorizationFailure,
			bloberror.AuthorizationPermissionMismatch, bloberror.InvalidAuthenticationInfo,
			bloberror.NoAuthenticationInformation, bloberror.InsufficientAccountPermissions):
		return &sink.AuthError{Err: err}
	}
	return err
}

// redactQuery removes the query (a SAS) from the URL of a transport error:
// net/http's *url.Error prints the whole request URL. The error belongs to
// this failed call only, so editing it in place is safe, and keeps the chain
// (timeouts, context cancellation) intact for errors.Is and errors.As.
func redactQuery(err error) {
	var ue *url.Error
	if errors.As(err, &ue) && strings.ContainsRune(ue.URL, '?') {
		ue.URL = redactURL(ue.URL)
	}
}

// responseError is an Azure error answer in one line: what was done, the
// status, the error code and the service's message (without the request
// id and time lines, and without the SDK's multi-line dump).
type responseError struct {
	what string
	re   *azcore.ResponseError
}

func (e *responseError) Error() string {
	msg := ""
	if e.re.RawResponse != nil {
		if body, err := runtime.Payload(e.re.RawResponse); err == nil {
			var x struct {
				Message string `xml:"Message"`
			}
			if xml.Unmarshal(body, &x) == nil {
				msg, _, _ = strings.Cut(strings.TrimSpace(x.Message), "\n")
			}
		}
	}
	s := fmt.Sprintf("%s: %d %s", e.what, e.re.StatusCode, e.re.ErrorCode)
	if msg != "" {
		s += ": " + msg
	}
	return s
}

func (e *responseError) Unwrap() error { return e.re }

// describedError replaces the text of an SDK error that spans many lines.
type describedError struct {
	msg string
	err error
}

func (e *describedError) Error() string { return e.msg }
func (e *describedError) Unwrap() error { return e.err }
