// Command gcp-pubsub forwards the local MQTT messages to a Google Cloud
// Pub/Sub topic.
package main

import (
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/gcp-pubsub/pubsubsink"
)

func main() { run.Main(pubsubsink.Service) }
