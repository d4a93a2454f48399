package sqssink

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/cloud-block/cloud-block/common/sink"
)

// Check reads the queue's attributes (sqs:GetQueueAttributes): the queue
// exists and takes the credentials. Connect has resolved its URL
// (sqs:GetQueueUrl when a name was given). Sending is never tried: a test
// message would reach the queue's consumers.
func (s *Sink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	c := s.conn.Load()
	if c == nil {
		return nil, errNotConnected
	}
	kind := "standard queue"
	if c.fifo {
		kind = "FIFO queue"
	}
	out, err := c.client.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(c.url), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameMaximumMessageSize},
	})
	var fs []sink.Finding
	var api smithy.APIError
	switch {
	case err == nil:
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("%s %s answered GetQueueAttributes (MaximumMessageSize %s bytes), credentials from %s",
			kind, c.url, out.Attributes[string(types.QueueAttributeNameMaximumMessageSize)], s.st.identity())})
	case errors.As(err, &api) && (api.ErrorCode() == "AccessDenied" || api.ErrorCode() == "AccessDeniedException"):
		// Signed and recognised, refused this one action: the block does
		// without it, as Connect does.
		fs = append(fs, sink.Finding{Warn: true, Text: fmt.Sprintf(
			"%s %s: the credentials are valid but may not call sqs:GetQueueAttributes, which the block does without (it then assumes messages of up to %d bytes); whether they may send is not checked; credentials from %s",
			kind, c.url, assumedMaxSize, s.st.identity())})
	default:
		return nil, classify("GetQueueAttributes "+c.url, err)
	}
	if opt.Write {
		fs = append(fs, sink.Finding{Warn: true, Text: "--write sends no test message: it would reach the queue's consumers"})
	}
	return fs, nil
}

// identity says where the credentials come from, for check.
func (st Config) identity() string {
	switch {
	case st.accessKey != "":
		return "the access key in AWS_SQS_ACCESS_KEY"
	case st.iot != nil:
		return st.iot.String()
	}
	return "the AWS SDK's default chain (AWS_SQS_ACCESS_KEY and AWS_SQS_IOT_CREDENTIALS_ENDPOINT are not set)"
}
