// Command aws-sqs is the memory floor of the aws-sqs destination (package bare).
package main

import (
	"github.com/cloud-block/cloud-block/services/aws-sqs/sqssink"
	"github.com/cloud-block/cloud-block/testenv/bare"
)

func main() { bare.Main(sqssink.Service) }
