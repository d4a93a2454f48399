// Command aws-s3 is the memory floor of the aws-s3 destination (package bare).
package main

import (
	"github.com/cloud-block/cloud-block/services/aws-s3/s3sink"
	"github.com/cloud-block/cloud-block/testenv/bare"
)

func main() { bare.Main(s3sink.Service) }
