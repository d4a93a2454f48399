package s3sink_test

import (
	"testing"

	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
	"github.com/cloud-block/cloud-block/services/aws-s3/s3sink"
)

// Every variable of the service can come from Azure Key Vault (issue 6).
func TestAllVariablesFromVault(t *testing.T) {
	vaulttest.RunAllFromVault(t, s3sink.Service, map[string]string{
		"AWS_S3_BUCKET":     "cloud-block-test",
		"AWS_S3_REGION":     "eu-west-1",
		"AWS_S3_ACCESS_KEY": "AKIAVAULTTEST0000000",
		"AWS_S3_SECRET_KEY": "secret-key-from-the-vault",
		"AWS_S3_ENDPOINT":   "https://s3.example.net",
	})
}
