package run

import (
	"os"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
)

// The root README's table of shared settings is generated from CommonVars.
func TestCommonEnvTable(t *testing.T) {
	if err := config.SyncTable("../../README.md", CommonVars("<service>"), os.Getenv("UPDATE_DOCS") != ""); err != nil {
		t.Fatal(err)
	}
}
