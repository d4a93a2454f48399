// Command gcp-pubsub is the memory floor of the gcp-pubsub destination (package bare).
package main

import (
	"github.com/cloud-block/cloud-block/services/gcp-pubsub/pubsubsink"
	"github.com/cloud-block/cloud-block/testenv/bare"
)

func main() { bare.Main(pubsubsink.Service) }
