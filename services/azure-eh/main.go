// Command azure-eh forwards the messages published to the local MQTT broker
// to an Azure event hub.
package main

import (
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
)

func main() { run.Main(ehsink.Service) }
