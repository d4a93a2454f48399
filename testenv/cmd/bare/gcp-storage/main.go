// Command gcp-storage is the memory floor of the gcp-storage destination (package bare).
package main

import (
	"github.com/cloud-block/cloud-block/services/gcp-storage/gcssink"
	"github.com/cloud-block/cloud-block/testenv/bare"
)

func main() { bare.Main(gcssink.Service) }
