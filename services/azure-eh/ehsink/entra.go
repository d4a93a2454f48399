package ehsink

import (
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// newCredential returns the Microsoft Entra credential: a service principal's
// client secret when one is configured, else DefaultAzureCredential.
func newCredential(tenant, client, secret string) (azcore.TokenCredential, error) {
	if secret != "" {
		return azidentity.NewClientSecretCredential(tenant, client, secret, nil)
	}
	return azidentity.NewDefaultAzureCredential(nil)
}

// isCredentialError reports whether Microsoft Entra refused to issue a token.
// (A credential that cannot even try, e.g. no identity on this machine, has
// no exported error type; it stays a plain, retried error.)
func isCredentialError(err error) bool {
	var failed *azidentity.AuthenticationFailedError
	return errors.As(err, &failed)
}
