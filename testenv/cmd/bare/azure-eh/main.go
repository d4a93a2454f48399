// Command azure-eh is the memory floor of the azure-eh destination (package bare).
package main

import (
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/testenv/bare"
)

func main() { bare.Main(ehsink.Service) }
