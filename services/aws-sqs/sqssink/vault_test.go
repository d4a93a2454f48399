package sqssink_test

import (
	"testing"

	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
	"github.com/cloud-block/cloud-block/services/aws-sqs/sqssink"
)

// Every variable of the service can come from Azure Key Vault (issue 6).
func TestAllVariablesFromVault(t *testing.T) {
	vaulttest.RunAllFromVault(t, sqssink.Service, map[string]string{
		"AWS_SQS_QUEUE_NAME":    "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
		"AWS_SQS_REGION":        "eu-west-1",
		"AWS_SQS_ACCESS_KEY":    "AKIAVAULTTEST0000000",
		"AWS_SQS_SECRET_KEY":    "secret-key-from-the-vault",
		"AWS_SQS_SESSION_TOKEN": "session-token-from-the-vault",
	})
}
