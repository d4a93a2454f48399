package gcssink

import (
	"context"
	"fmt"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/storage"

	"github.com/cloud-block/cloud-block/common/gcpcreds"
)

// federated builds the credentials of an external_account (workload
// identity federation) with Google's auth library, as
// option.WithAuthCredentialsJSON would, and annotates its token errors
// with the token endpoint. The library caches the token and refreshes it
// before it expires (in the background from 3m45s before); the errors it
// returns name no token.
func federated(c gcpcreds.Credentials) (*auth.Credentials, error) {
	creds, err := credentials.NewCredentialsFromJSON(credentials.ExternalAccount, c.JSON,
		&credentials.DetectOptions{Scopes: []string{storage.ScopeReadWrite}})
	if err != nil {
		return nil, fmt.Errorf("gcs: workload identity federation: %w", err)
	}
	creds.TokenProvider = &annotated{tp: creds.TokenProvider, c: c}
	return creds, nil
}

type annotated struct {
	tp auth.TokenProvider
	c  gcpcreds.Credentials
}

func (a *annotated) Token(ctx context.Context) (*auth.Token, error) {
	tok, err := a.tp.Token(ctx)
	if err != nil {
		return nil, &tokenError{c: a.c, err: err}
	}
	return tok, nil
}

// tokenError is a failure to get an access token from the token endpoint:
// down, or refusing the device.
type tokenError struct {
	c   gcpcreds.Credentials
	err error
}

func (e *tokenError) Error() string {
	return fmt.Sprintf("no access token from the token endpoint %s (%s, from %s): %v", e.c.TokenURL, e.c.Identity, e.c.Source, e.err)
}

func (e *tokenError) Unwrap() error { return e.err }
