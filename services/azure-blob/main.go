// Command azure-blob forwards MQTT messages to Azure Blob Storage.
package main

import (
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/azure-blob/blobsink"
)

func main() { run.Main(blobsink.Service) }
