module github.com/cloud-block/cloud-block/common

go 1.26
