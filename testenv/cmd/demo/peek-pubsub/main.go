// Command peek-pubsub is the demo's reader for Pub/Sub: it creates the topic
// and a subscription on it in the emulator, then pulls, acknowledges and
// prints what arrives (as show.Arrival JSON lines) until SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/api/option/internaloption"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
)

func main() {
	host := flag.String("host", "", "emulator host:port")
	project := flag.String("project", "", "project id")
	topic := flag.String("topic", "", "topic id to create")
	sub := flag.String("sub", "", "subscription id to create and read")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, *host, *project, *topic, *sub); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "peek-pubsub:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, host, project, topic, sub string) error {
	// What the client does for PUBSUB_EMULATOR_HOST, without reading it from
	// the environment: plain gRPC, no credentials.
	c, err := pubsub.NewClient(ctx, project,
		option.WithEndpoint(host),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithoutAuthentication(),
		option.WithTelemetryDisabled(),
		internaloption.SkipDialSettingsValidation())
	if err != nil {
		return err
	}
	defer c.Close()
	topicName := "projects/" + project + "/topics/" + topic
	subName := "projects/" + project + "/subscriptions/" + sub
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.TopicAdminClient.CreateTopic(cctx, &pubsubpb.Topic{Name: topicName}); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	if _, err := c.SubscriptionAdminClient.CreateSubscription(cctx, &pubsubpb.Subscription{Name: subName, Topic: topicName}); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	fmt.Println(show.Ready)
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.SubscriptionAdminClient.Pull(pctx, &pubsubpb.PullRequest{Subscription: subName, MaxMessages: 1000})
		cancel()
		if err != nil || len(resp.GetReceivedMessages()) == 0 {
			// Nothing yet (a pull that waited out its time) or a hiccup: ask again.
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		var ids []string
		var bodies [][]byte
		for _, m := range resp.GetReceivedMessages() {
			ids = append(ids, m.GetAckId())
			bodies = append(bodies, m.GetMessage().GetData())
		}
		if err := c.SubscriptionAdminClient.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: subName, AckIds: ids}); err != nil {
			return fmt.Errorf("acknowledge: %w", err)
		}
		if err := show.Emit(os.Stdout, show.Messages("pulled from "+sub+" (and acknowledged)", bodies)); err != nil {
			return err
		}
	}
	return nil
}
