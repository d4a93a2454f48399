package s3sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Check reports what Connect's HeadBucket proved: the bucket exists and
// the key may use it (s3:ListBucket). With Write it puts a test object
// (s3:PutObject, what the block needs) under the key prefix and deletes it
// (s3:DeleteObject, which the block does not need: if refused, the object
// stays and a warning names it).
func (s *Sink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	if s.client == nil {
		return nil, errors.New("s3: not connected")
	}
	where := fmt.Sprintf("bucket %s (region %s", s.cfg.Bucket, s.cfg.Region)
	if s.cfg.Endpoint != "" {
		where += ", endpoint " + s.cfg.Endpoint
	}
	where += ")"
	fs := []sink.Finding{{Text: where + " answered HeadBucket, credentials from " + s.cfg.identity()}}
	if !opt.Write {
		return fs, nil
	}
	key, body := sink.CheckObject(s.cfg.Objects.Prefix, s.cfg.Objects.Device, time.Now())
	if err := s.put(ctx, &objstore.Object{Key: key, Body: body, ContentType: "text/plain; charset=utf-8"}); err != nil {
		return fs, err
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)}); err != nil {
		return append(fs, sink.Finding{Warn: true, Text: fmt.Sprintf(
			"wrote test object %s (PutObject) but could not delete it (s3:DeleteObject, which the block does not need): delete it by hand: %v",
			key, s.classify(fmt.Errorf("deleting %q from bucket %q: %w", key, s.cfg.Bucket, err)))}), nil
	}
	return append(fs, sink.Finding{Text: fmt.Sprintf("wrote and deleted test object %s (PutObject, DeleteObject)", key)}), nil
}

// identity says where the credentials come from, for check.
func (c Config) identity() string {
	switch {
	case c.AccessKey != "":
		return "the access key in AWS_S3_ACCESS_KEY"
	case c.IoT != nil:
		return c.IoT.String()
	}
	return "the AWS SDK's default chain (AWS_S3_ACCESS_KEY and AWS_S3_IOT_CREDENTIALS_ENDPOINT are not set)"
}
