module github.com/cloud-block/cloud-block/services/gcp-pubsub

go 1.26.0

require github.com/cloud-block/cloud-block/common v0.0.0

replace github.com/cloud-block/cloud-block/common => ../../common
