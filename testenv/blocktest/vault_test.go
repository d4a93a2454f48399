package blocktest

import (
	"testing"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
	"github.com/cloud-block/cloud-block/services/aws-s3/s3sink"
	"github.com/cloud-block/cloud-block/services/aws-sqs/sqssink"
	"github.com/cloud-block/cloud-block/services/azure-blob/blobsink"
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/services/gcp-pubsub/pubsubsink"
	"github.com/cloud-block/cloud-block/services/gcp-storage/gcssink"
)

// Every variable of every destination can come from Azure Key Vault, given
// a valid configuration of each; a private key as one line with literal
// \n, as the original block kept it.
func TestAllVariablesFromVault(t *testing.T) {
	key := newServiceAccountKey(t).pem
	for _, c := range []struct {
		svc   run.Service
		valid map[string]string
	}{
		{s3sink.Service, map[string]string{
			"AWS_S3_BUCKET": "cloud-block-test", "AWS_S3_REGION": "eu-west-1", "AWS_S3_ENDPOINT": "https://s3.example.net",
			"AWS_S3_ACCESS_KEY": "AKIAVAULTTEST0000000", "AWS_S3_SECRET_KEY": "secret-key-from-the-vault",
		}},
		{sqssink.Service, map[string]string{
			"AWS_SQS_QUEUE_NAME": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders", "AWS_SQS_REGION": "eu-west-1",
			"AWS_SQS_ACCESS_KEY": "AKIAVAULTTEST0000000", "AWS_SQS_SECRET_KEY": "secret-key-from-the-vault",
			"AWS_SQS_SESSION_TOKEN": "session-token-from-the-vault",
		}},
		{blobsink.Service, map[string]string{
			"AZURE_BLOB_STORAGE_ACCOUNT": "cloudblocktest", "AZURE_BLOB_CONTAINER_NAME": "telemetry",
			"AZURE_BLOB_STORAGE_ACCOUNT_KEY": "c2VjcmV0LWtleS1mcm9tLXRoZS12YXVsdA==",
		}},
		{ehsink.Service, map[string]string{
			"AZURE_EH_CONNECTIONSTRING": "Endpoint=sb://cloudblock.servicebus.windows.net/;SharedAccessKeyName=send;" +
				"SharedAccessKey=c2VjcmV0LWtleS1mcm9tLXRoZS12YXVsdA==;EntityPath=events",
			"AZURE_EH_PARTITION_KEY": "device",
		}},
		{pubsubsink.Service, map[string]string{
			"GCP_PUBSUB_TOPIC":        "projects/cloud-block-test/topics/events",
			"GCP_PUBSUB_CLIENT_EMAIL": "sender@cloud-block-test.iam.gserviceaccount.com", "GCP_PUBSUB_PRIVATE_KEY": key,
		}},
		{gcssink.Service, map[string]string{
			"GCP_STORAGE_BUCKET":       "cloud-block-test",
			"GCP_STORAGE_CLIENT_EMAIL": "writer@cloud-block-test.iam.gserviceaccount.com", "GCP_STORAGE_PRIVATE_KEY": key,
		}},
	} {
		t.Run(c.svc.Name, func(t *testing.T) { vaulttest.RunAllFromVault(t, c.svc, c.valid) })
	}
}
