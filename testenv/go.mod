module github.com/cloud-block/cloud-block/testenv

go 1.26
