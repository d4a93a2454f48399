// Package s3sink is the aws-s3 destination: it writes each batch of
// messages as an object (NDJSON, optionally gzipped) or each message as an
// object of its own to an S3 bucket, laid out by common/objstore.
package s3sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// API is the subset of *s3.Client the sink uses, so tests can fake it.
type API interface {
	HeadBucket(ctx context.Context, in *s3.HeadBucketInput, optFns ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	// DeleteObject is for the check's test object only.
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// putConcurrency bounds the PUTs of one batch in flight: in message mode a
// batch is thousands of small objects, and one at a time would spend the
// batch waiting on round trips.
const putConcurrency = 8

// Sink writes to one bucket.
type Sink struct {
	cfg Config
	log *slog.Logger
	// dial creates the client and returns what releases its connections;
	// tests replace it with a fake.
	dial func(ctx context.Context) (API, func(), error)

	client    API
	closeIdle func()
}

func newSink(c Config, info run.Info) *Sink {
	log := info.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sink{cfg: c, log: log}
	s.dial = s.newClient
	return s
}

// Connect creates the client and checks that the bucket exists and the
// credentials may use it.
func (s *Sink) Connect(ctx context.Context) error {
	c, closeIdle, err := s.dial(ctx)
	if err != nil {
		return err
	}
	if _, err := c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)}); err != nil {
		closeIdle()
		return s.classify(fmt.Errorf("checking bucket %q: %w", s.cfg.Bucket, err))
	}
	s.client, s.closeIdle = c, closeIdle
	creds := "AWS_S3_ACCESS_KEY"
	if s.cfg.AccessKey == "" {
		creds = "default chain"
	}
	s.log.Info("connected to the bucket", "bucket", s.cfg.Bucket, "region", s.cfg.Region,
		"endpoint", s.cfg.Endpoint, "path_style", s.cfg.PathStyle, "credentials", creds,
		"object_mode", string(s.cfg.Objects.Mode), "gzip", s.cfg.Objects.Gzip)
	return nil
}

// envelopeReserve is the room a batch object keeps around a payload of the
// largest size for its NDJSON line's envelope (id, topic, time, device and
// field names), so such a payload fits with a topic of usual length.
const envelopeReserve = 1 << 10

// maxPayload is the largest payload taken: the largest object, less the
// envelope in batch mode. A line still too long (a long topic, a payload
// inflated by base64 or escapes) fails when its object is laid out.
func (s *Sink) maxPayload() int64 {
	if s.cfg.Objects.Mode == objstore.PerMessage {
		return s.cfg.MaxObject
	}
	return s.cfg.MaxObject - envelopeReserve
}

// Limits: a message larger than the biggest object can never be written.
// Batch objects are named after their first and last message, so a batch
// sent again after a crash must hold the same messages to overwrite its
// object; in message mode keys name single messages and batches may differ.
func (s *Sink) Limits() sink.Limits {
	return sink.Limits{
		MaxMessageBytes: toInt(s.maxPayload()),
		MaxBatchBytes:   toInt(s.cfg.MaxObject),
		StableBatches:   s.cfg.Objects.Mode != objstore.PerMessage,
	}
}

// WriteBatch writes the batch's objects through the object stores' one
// write path (objstore.Writer): in batch mode any retryable failure fails
// the whole batch, so the retry lays out exactly the same objects under the
// same keys (objects already written are overwritten with the same bytes);
// only messages that can never fit are reported alone.
func (s *Sink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	if s.client == nil {
		return errors.New("s3: not connected")
	}
	w := objstore.Writer{
		Layout:     s.cfg.Objects,
		MaxMessage: s.maxPayload(), MaxMessageVar: "the largest payload AWS_S3_MAX_OBJECT_BYTES allows",
		MaxObject: s.cfg.MaxObject, MaxObjectVar: "AWS_S3_MAX_OBJECT_BYTES",
		Concurrency: putConcurrency,
		Put: func(ctx context.Context, o *objstore.Object) (bool, error) {
			return false, s.put(ctx, o) // a PUT overwrites: never "already there"
		},
		Log: s.log,
	}
	if err := w.Write(ctx, batch); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("writing to bucket %q: %w", s.cfg.Bucket, err)
		}
		return err
	}
	return nil
}

func (s *Sink) put(ctx context.Context, o *objstore.Object) error {
	in := &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(o.Key),
		// A bytes.Reader is seekable, so the SDK signs the payload and can
		// rewind it for its own retries.
		Body:          bytes.NewReader(o.Body),
		ContentLength: aws.Int64(int64(len(o.Body))),
		ContentType:   aws.String(o.ContentType),
		// Message mode: id, topic, time and device as x-amz-meta-* headers,
		// already plain ASCII (objstore escapes them).
		Metadata: o.Metadata,
	}
	if o.ContentEncoding != "" {
		in.ContentEncoding = aws.String(o.ContentEncoding)
	}
	if _, err := s.client.PutObject(ctx, in); err != nil {
		return s.classify(fmt.Errorf("putting %q into bucket %q: %w", o.Key, s.cfg.Bucket, err))
	}
	return nil
}

// Close releases idle connections. Idempotent; safe after a failed Connect.
func (s *Sink) Close(context.Context) error {
	if s.closeIdle != nil {
		s.closeIdle()
	}
	s.client, s.closeIdle = nil, nil
	return nil
}

// classify marks err with the class the pipeline acts on. S3's error codes
// are part of its API (smithy.APIError), unlike the messages.
func (s *Sink) classify(err error) error {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		// S3 names the bucket's region in a header when it is not ours.
		if r := re.Response.Header.Get("X-Amz-Bucket-Region"); r != "" && r != s.cfg.Region {
			return fmt.Errorf("bucket %q is in region %s, not %s: set AWS_S3_REGION=%s: %w", s.cfg.Bucket, r, s.cfg.Region, r, err)
		}
	}
	var ce *credentialsError
	if errors.As(err, &ce) {
		return &sink.AuthError{Err: err}
	}
	var api smithy.APIError
	if !errors.As(err, &api) {
		return err
	}
	switch api.ErrorCode() {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
		"TokenRefreshRequired", "AccountProblem", "AllAccessDisabled":
		return &sink.AuthError{Err: err}
	case "Forbidden":
		// HeadBucket's 403: a HEAD answer has no body to say more.
		return &sink.AuthError{Err: fmt.Errorf("%w (a wrong access key or secret, or no s3:ListBucket on bucket %q)", err, s.cfg.Bucket)}
	case "NoSuchBucket",
		"NotFound": // HeadBucket's 404
		// Not the messages' fault: retried until someone creates the bucket.
		return fmt.Errorf("bucket %q does not exist: create it or fix AWS_S3_BUCKET (the block never creates buckets): %w", s.cfg.Bucket, err)
	case "EntityTooLarge":
		return sink.Permanent(err)
	}
	return err
}
