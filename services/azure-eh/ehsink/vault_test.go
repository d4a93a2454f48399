package ehsink_test

import (
	"testing"

	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
)

// Every variable of the service can come from Azure Key Vault (issue 6),
// the connection string as in the original block.
func TestAllVariablesFromVault(t *testing.T) {
	vaulttest.RunAllFromVault(t, ehsink.Service, map[string]string{
		"AZURE_EH_CONNECTIONSTRING": "Endpoint=sb://cloudblock.servicebus.windows.net/;SharedAccessKeyName=send;" +
			"SharedAccessKey=c2VjcmV0LWtleS1mcm9tLXRoZS12YXVsdA==;EntityPath=events",
		"AZURE_EH_PARTITION_KEY": "device",
	})
}
