package blobsink_test

import (
	"testing"

	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
	"github.com/cloud-block/cloud-block/services/azure-blob/blobsink"
)

// Every variable of the service can come from Azure Key Vault (issue 6).
func TestAllVariablesFromVault(t *testing.T) {
	vaulttest.RunAllFromVault(t, blobsink.Service, map[string]string{
		"AZURE_BLOB_STORAGE_ACCOUNT":     "cloudblocktest",
		"AZURE_BLOB_STORAGE_ACCOUNT_KEY": "c2VjcmV0LWtleS1mcm9tLXRoZS12YXVsdA==",
		"AZURE_BLOB_CONTAINER_NAME":      "telemetry",
	})
}
