// Command aws-sqs forwards MQTT messages to an Amazon SQS queue.
package main

import (
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/aws-sqs/sqssink"
)

func main() { run.Main(sqssink.Service) }
