package blobsink

import (
	"errors"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/entra"
)

// entraCredential returns the Microsoft Entra credential c asks for: the
// service principal of the AZURE_BLOB_* variables (common/entra), or
// DefaultAzureCredential. Both honour AZURE_AUTHORITY_HOST (sovereign
// clouds); the service principal also AZURE_BLOB_AUTHORITY_HOST.
func entraCredential(c Config, o azcore.ClientOptions) (azcore.TokenCredential, error) {
	if c.Auth == authEntra {
		return c.Identity.Credential(o)
	}
	return azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: o})
}

// credentialMessage describes in one line Entra refusing to issue a token
// (a wrong secret, an unknown tenant or client), reporting whether err is
// that. A service principal's failure that is no refusal (its endpoint
// away) is described too, with false: it is retried as any outage. "No
// identity available" from DefaultAzureCredential is an unexported type:
// it stays a plain, retried error listing what was tried.
func credentialMessage(err error) (string, bool) {
	// The service principal's errors say which identity and endpoint; an
	// endpoint that does not answer is not a refusal: a plain, retried error.
	var te *entra.TokenError
	if errors.As(err, &te) {
		return te.Error(), te.Refused()
	}
	var af *azidentity.AuthenticationFailedError
	if !errors.As(err, &af) {
		var ar *azidentity.AuthenticationRequiredError
		if errors.As(err, &ar) {
			return entra.OneLine(ar.Error()), true
		}
		return "", false
	}
	if af.RawResponse == nil {
		return entra.OneLine(af.Error()), true
	}
	msg, _ := entra.Refusal(err)
	return "Microsoft Entra issued no token: " + msg, true
}
