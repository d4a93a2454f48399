// Command azure-blob is the memory floor of the azure-blob destination (package bare).
package main

import (
	"github.com/cloud-block/cloud-block/services/azure-blob/blobsink"
	"github.com/cloud-block/cloud-block/testenv/bare"
)

func main() { bare.Main(blobsink.Service) }
