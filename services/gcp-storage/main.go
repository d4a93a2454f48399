// Command gcp-storage forwards the local MQTT messages to objects in a
// Google Cloud Storage bucket.
package main

import (
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/gcp-storage/gcssink"
)

func main() { run.Main(gcssink.Service) }
