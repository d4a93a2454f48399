package vault

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"sort"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// fetchers bounds the secrets read at once: enough to read a service's
// few dozen variables quickly, few enough not to be throttled by the vault.
const fetchers = 8

// getter is the part of *azsecrets.Client the source uses.
type getter interface {
	GetSecret(ctx context.Context, name, version string, options *azsecrets.GetSecretOptions) (azsecrets.GetSecretResponse, error)
}

// Source holds the values of one vault's secrets in memory.
type Source struct {
	url    string
	cred   string // the credential's description, for errors
	client getter
	vars   []string // variables looked for, each in the secret SecretName(v)

	mu     sync.RWMutex
	values map[string]string // variable -> value of the secrets found
	gen    uint64
}

// Open connects to the vault and reads the secret of each variable in vars
// (see Wanted). A missing secret is not an error; anything else is an
// *Error naming the vault and the cause.
func Open(ctx context.Context, c *Config, vars []string) (*Source, error) {
	s := &Source{url: c.URL, cred: c.credentialName(), vars: vars}
	client, err := c.newClient()
	if err != nil {
		return nil, &Error{Vault: c.URL, Kind: Failed, Cause: "setting up the " + s.cred + ": " + oneLine(err.Error()), Err: err}
	}
	s.client = client
	values, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	s.values = values
	return s, nil
}

// newClient builds the credential and the secrets client.
func (c *Config) newClient() (*azsecrets.Client, error) {
	opts := azcore.ClientOptions{
		Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: c.authority},
		Retry: c.retry,
	}
	if c.roots != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: c.roots, MinVersion: tls.VersionTLS12}
		opts.Transport = &http.Client{Transport: t}
	}
	var cred azcore.TokenCredential
	var err error
	// Instance discovery asks the public cloud whether the authority is
	// known: an extra round trip at start, and a long hang for any other
	// authority. The authority here is the operator's own setting.
	switch c.kind {
	case credSecret:
		cred, err = azidentity.NewClientSecretCredential(c.tenant, c.client, c.secret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	case credCert:
		cred, err = azidentity.NewClientCertificateCredential(c.tenant, c.client, c.certs, c.key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	default:
		cred, err = platformCredential(c, opts)
	}
	if err != nil {
		return nil, err
	}
	return azsecrets.NewClient(c.URL, cred, &azsecrets.ClientOptions{
		ClientOptions:                        opts,
		DisableChallengeResourceVerification: !c.verifyChallenge,
	})
}

// platformCredential is the workload identity where the platform provides
// one (AKS sets AZURE_FEDERATED_TOKEN_FILE), else the managed identity.
func platformCredential(c *Config, opts azcore.ClientOptions) (azcore.TokenCredential, error) {
	wi, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: opts, TenantID: c.tenant, ClientID: c.client, DisableInstanceDiscovery: true,
	})
	if err == nil {
		return wi, nil
	}
	mo := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
	if c.client != "" {
		mo.ID = azidentity.ClientID(c.client)
	}
	return azidentity.NewManagedIdentityCredential(mo)
}

// fetch reads every wanted secret, a few at a time. The first failure
// stops the rest and is returned.
func (s *Source) fetch(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		values   = map[string]string{}
		firstErr error
		wg       sync.WaitGroup
		slots    = make(chan struct{}, fetchers)
	)
	for _, v := range s.vars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-slots }()
			value, found, err := s.get(ctx, v)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil && firstErr == nil && ctx.Err() == nil:
				firstErr = err
				cancel()
			case found:
				values[v] = value
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		// The caller's context ended; the canceled workers report nothing.
		return nil, s.classify("", err)
	}
	return values, nil
}

// get reads the secret of one variable. Not found (or empty, which the
// environment treats as unset too) is no error.
func (s *Source) get(ctx context.Context, variable string) (string, bool, error) {
	name := SecretName(variable)
	resp, err := s.client.GetSecret(ctx, name, "", nil)
	var respErr *azcore.ResponseError
	switch {
	case errors.As(err, &respErr) && respErr.StatusCode == http.StatusNotFound:
		return "", false, nil
	case err != nil:
		return "", false, s.classify(name, err)
	case resp.Value == nil || *resp.Value == "":
		return "", false, nil
	}
	return *resp.Value, true, nil
}

// URL is the vault's URL.
func (s *Source) URL() string { return s.url }

// Lookup returns the value of variable's secret, if found (a config.Lookup).
func (s *Source) Lookup(variable string) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.values[variable]
	return v, ok
}

// Found lists the variables whose secret was found, sorted (names only).
func (s *Source) Found() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.values))
	for v := range s.values {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// Generation counts the changes Refresh found; a holder of values read
// before can compare it to know whether they are stale.
func (s *Source) Generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

// Refresh reads every secret again and returns the variables whose value
// changed, appeared or disappeared (sorted). On an error the values read
// before are kept, whole.
func (s *Source) Refresh(ctx context.Context) ([]string, error) {
	values, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var changed []string
	for v, val := range values {
		if old, ok := s.values[v]; !ok || old != val {
			changed = append(changed, v)
		}
	}
	for v := range s.values {
		if _, ok := values[v]; !ok {
			changed = append(changed, v)
		}
	}
	if len(changed) > 0 {
		s.values = values
		s.gen++
	}
	sort.Strings(changed)
	return changed, nil
}

// compile-time check: the SDK client is a getter.
var _ getter = (*azsecrets.Client)(nil)
