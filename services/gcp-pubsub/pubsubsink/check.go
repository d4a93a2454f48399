package pubsubsink

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloud-block/cloud-block/common/sink"
)

// permPublish is the permission the block needs on the topic (in the
// Pub/Sub Publisher role); that role has no pubsub.topics.get.
const permPublish = "pubsub.topics.publish"

// topicReader is what the check asks of the client besides publishing.
type topicReader interface {
	// getTopic reads the topic's metadata (pubsub.topics.get).
	getTopic(ctx context.Context, topic string) error
	// testPermissions returns which of perms the credentials hold on the
	// topic (topics.testIamPermissions, which needs no permission).
	testPermissions(ctx context.Context, topic string, perms []string) ([]string, error)
}

func (p *sdkPublisher) getTopic(ctx context.Context, topic string) error {
	_, err := p.client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: topic}, noRetry)
	return err
}

func (p *sdkPublisher) testPermissions(ctx context.Context, topic string, perms []string) ([]string, error) {
	r, err := p.client.TopicAdminClient.TestIamPermissions(ctx, &iampb.TestIamPermissionsRequest{Resource: topic, Permissions: perms}, noRetry)
	return r.GetPermissions(), err
}

// Check reads the topic's metadata (GetTopic): the topic exists and takes
// the credentials. The Publisher role the block needs may not read it;
// then it asks which permissions the credentials hold on the topic
// (TestIamPermissions): publishing allowed is a pass, not allowed a
// denial. No test message is published: it would reach the subscribers.
func (s *Sink) Check(ctx context.Context, opt sink.CheckOptions) ([]sink.Finding, error) {
	s.mu.Lock()
	pub := s.pub
	s.mu.Unlock()
	if pub == nil {
		return nil, errors.New("pubsub: not connected")
	}
	tr, ok := pub.(topicReader)
	if !ok {
		return nil, errors.New("pubsub: this client cannot read topics")
	}
	var fs []sink.Finding
	if s.cfg.emulator == "" && s.cfg.creds.Identity != "" {
		fs = append(fs, sink.Finding{Text: "identity: " + s.cfg.creds.Identity})
	}
	topic := s.cfg.topic
	err := tr.getTopic(ctx, topic)
	switch status.Code(err) {
	case codes.OK:
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("topic %s answered GetTopic", topic)})
	case codes.PermissionDenied:
		granted, terr := tr.testPermissions(ctx, topic, []string{permPublish})
		if terr != nil {
			return nil, s.checkError("TestIamPermissions", terr)
		}
		if !slices.Contains(granted, permPublish) {
			return nil, &sink.AuthError{Err: fmt.Errorf("pubsub: the credentials may not publish to %s (TestIamPermissions grants no %s; the service account needs the Pub/Sub Publisher role on the topic), nor read it: %w", topic, permPublish, err)}
		}
		fs = append(fs, sink.Finding{Text: fmt.Sprintf("topic %s: the credentials may publish (TestIamPermissions grants %s); they may not read the topic (GetTopic), which the block does not need", topic, permPublish)})
	default:
		return nil, s.checkError("GetTopic", err)
	}
	if opt.Write {
		fs = append(fs, sink.Finding{Warn: true, Text: "--write publishes no test message: it would reach the topic's subscribers"})
	}
	return fs, nil
}

// checkError classifies an error of a check's call like classify does a
// publish's.
func (s *Sink) checkError(call string, err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		return &sink.AuthError{Err: fmt.Errorf("pubsub: %s %s was refused: %w", call, s.cfg.topic, err)}
	case codes.NotFound:
		return fmt.Errorf("pubsub: topic %s not found (create it, or check %s_TOPIC and %s_PROJECT_ID): %w", s.cfg.topic, prefix, prefix, err)
	}
	return fmt.Errorf("pubsub: %s %s: %w", call, s.cfg.topic, err)
}
