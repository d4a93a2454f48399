// Command filedest is cloud-block with the test destination: it delivers to
// a local file. Tests and `make bench` use it to prove the pipeline.
package main

import (
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/testenv/filesink"
)

func main() { run.Main(filesink.Service) }
