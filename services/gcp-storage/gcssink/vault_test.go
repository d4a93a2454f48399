package gcssink_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/vault/vaulttest"
	"github.com/cloud-block/cloud-block/services/gcp-storage/gcssink"
)

// Every variable of the service can come from Azure Key Vault (issue 6),
// the private key as one line with literal \n, as the original block kept it.
func TestAllVariablesFromVault(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	vaulttest.RunAllFromVault(t, gcssink.Service, map[string]string{
		"GCP_STORAGE_BUCKET":       "cloud-block-test",
		"GCP_STORAGE_CLIENT_EMAIL": "writer@cloud-block-test.iam.gserviceaccount.com",
		"GCP_STORAGE_PRIVATE_KEY":  strings.ReplaceAll(pemKey, "\n", `\n`),
	})
}
