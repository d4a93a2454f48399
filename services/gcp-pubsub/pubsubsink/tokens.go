package pubsubsink

import (
	"context"
	"fmt"
	"sync"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"

	"github.com/cloud-block/cloud-block/common/gcpcreds"
)

// Scopes of the access tokens the client asks for: Pub/Sub's own.
var scopes = []string{"https://www.googleapis.com/auth/pubsub"}

// tokens remembers whether the last attempt to get an access token failed,
// and why, so that a refused publish is reported as what it is (the token
// endpoint down or refusing the device) instead of a missing role.
type tokens struct {
	mu  sync.Mutex
	err error
}

func (t *tokens) set(err error) {
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
}

// failure is the last token error, nil once a token was had since.
func (t *tokens) failure() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// federated builds the credentials of an external_account (workload
// identity federation) with Google's auth library, as
// option.WithAuthCredentialsJSON would, and annotates its token errors
// with the token endpoint. The library caches the token and refreshes it
// before it expires (in the background from 3m45s before); the errors it
// returns name no token.
func federated(c gcpcreds.Credentials, t *tokens) (*auth.Credentials, error) {
	creds, err := credentials.NewCredentialsFromJSON(credentials.ExternalAccount, c.JSON, &credentials.DetectOptions{Scopes: scopes})
	if err != nil {
		return nil, fmt.Errorf("pubsub: workload identity federation: %w", err)
	}
	creds.TokenProvider = &annotated{tp: creds.TokenProvider, c: c, t: t}
	return creds, nil
}

type annotated struct {
	tp auth.TokenProvider
	c  gcpcreds.Credentials
	t  *tokens
}

func (a *annotated) Token(ctx context.Context) (*auth.Token, error) {
	tok, err := a.tp.Token(ctx)
	if err != nil {
		err = fmt.Errorf("no access token from the token endpoint %s (%s, from %s): %w", a.c.TokenURL, a.c.Identity, a.c.Source, err)
	}
	a.t.set(err)
	return tok, err
}
