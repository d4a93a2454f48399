// Command aws-s3 forwards the messages published to the local MQTT broker
// to an Amazon S3 bucket (or an S3-compatible store).
package main

import (
	"github.com/cloud-block/cloud-block/common/run"

	"github.com/cloud-block/cloud-block/services/aws-s3/s3sink"
)

func main() { run.Main(s3sink.Service) }
