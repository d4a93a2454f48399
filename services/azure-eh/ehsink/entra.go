package ehsink

import (
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/entra"
)

// newCredential returns the Microsoft Entra credential: the service
// principal of the AZURE_EH_* variables (a client secret, a client
// certificate or a federated token file: common/entra) when one is
// configured, else DefaultAzureCredential.
func newCredential(id *entra.Identity) (azcore.TokenCredential, error) {
	if id != nil {
		return id.Credential(azcore.ClientOptions{})
	}
	return azidentity.NewDefaultAzureCredential(nil)
}

// isCredentialError reports whether Microsoft Entra refused to issue a token.
// A token endpoint that does not answer is an outage, retried as any; so is
// a credential that cannot even try (no identity on this machine), which
// has no exported error type.
func isCredentialError(err error) bool {
	var te *entra.TokenError
	if errors.As(err, &te) {
		return te.Refused()
	}
	var failed *azidentity.AuthenticationFailedError
	return errors.As(err, &failed)
}
