module github.com/cloud-block/cloud-block/services/azure-eh

go 1.26.0

require github.com/cloud-block/cloud-block/common v0.0.0

replace github.com/cloud-block/cloud-block/common => ../../common
