package blobsink

import (
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// entraCredential returns the Microsoft Entra credential c asks for. Both
// honour AZURE_AUTHORITY_HOST (sovereign clouds).
func entraCredential(c Config, o azcore.ClientOptions) (azcore.TokenCredential, error) {
	if c.Auth == authEntraSecret {
		return azidentity.NewClientSecretCredential(c.Tenant, c.ClientID, c.Secret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: o})
	}
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: o})
}

// isCredentialError reports whether err is Entra refusing to issue a token
// (a wrong secret, an unknown tenant or client). "No identity available"
// from DefaultAzureCredential is an unexported type: it stays a plain,
// retried error whose message lists what was tried.
func isCredentialError(err error) bool {
	var af *azidentity.AuthenticationFailedError
	var ar *azidentity.AuthenticationRequiredError
	return errors.As(err, &af) || errors.As(err, &ar)
}
