package blocktest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azeventhubs/v2"

	"github.com/cloud-block/cloud-block/testenv/entrafake"
)

// azure-eh with a keyless identity: the project's fake Event Hubs over TLS
// (the fake Entra's certificate) checks each token the SDK puts on $cbs
// (the fake Entra's signature, the Event Hubs audience, unexpired) and, as
// the service does, detaches a link whose connection's token has expired,
// so a client that did not put a fresh token could not send.

// ehAudience is the resource of the scope the Event Hubs SDK asks tokens
// for ("https://eventhubs.azure.net//.default").
const ehAudience = "https://eventhubs.azure.net/"

type ehIdentity struct {
	*azureDevice
	eh *ehBackend
}

func openEHIdentity(kind string) func(t *testing.T) backend {
	return func(t *testing.T) backend {
		d := newAzureDevice(t, kind, "AZURE_EH_", "azure-eh", t.TempDir())
		eh := newEHBackend(t, "--tls-cert", d.f.CertFile, "--tls-key", d.f.KeyFile,
			"--token-key", d.f.PublicKeyFile, "--token-audience", ehAudience)
		return &ehIdentity{azureDevice: d, eh: eh}
	}
}

func (e *ehIdentity) env(addr string) map[string]string {
	env := map[string]string{"AZURE_EH_NAMESPACE": addr, "AZURE_EH_NAME": "hub"}
	for k, v := range e.env0 {
		env[k] = v
	}
	return env
}

func (e *ehIdentity) upstream() string        { return e.eh.upstream() }
func (e *ehIdentity) read(t testing.TB) []msg { return e.eh.read(t) }
func (e *ehIdentity) stop(t testing.TB)       { e.azureDevice.stop(t) }
func (e *ehIdentity) start(t testing.TB)      { e.azureDevice.start(t) }
func (e *ehIdentity) secrets() []string       { return e.azureDevice.secrets() }

// fingerprint is how the fake logs a token it accepted.
func fingerprint(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:8])
}

var (
	ehAccepted = regexp.MustCompile(`put-token accepted, valid [-0-9.]+s, token sha256:([0-9a-f]+)`)
	ehRefused  = regexp.MustCompile(`put-token refused: (.*)`)
	ehDetached = regexp.MustCompile(`link detached: (.*)`)
)

// checked reads the fake's log: each put-token it accepted (by the token's
// fingerprint) or refused. A link detached because its claim expired is a
// request the service turned away too, and the client's cue to put a new
// token; it is counted in the note, not as a token refused.
func (e *ehIdentity) checked() (ok, refused int, tokens []string, reasons []string) {
	log := e.eh.log()
	seen := map[string]bool{}
	for _, m := range ehAccepted.FindAllStringSubmatch(log, -1) {
		ok++
		seen[m[1]] = true
	}
	for _, m := range ehRefused.FindAllStringSubmatch(log, -1) {
		refused++
		reasons = append(reasons, m[1])
	}
	for _, tok := range tokensOf(e.f.Issued(), ehAudience) {
		if fp := fingerprint(tok); seen[fp] {
			tokens = append(tokens, tok)
			delete(seen, fp)
		}
	}
	for fp := range seen {
		// Accepted, so signed by the fake Entra: but not one it issued.
		refused++
		reasons = append(reasons, "a token the fake Entra did not issue was accepted: sha256:"+fp)
	}
	return ok, refused, tokens, reasons
}

// detached is how many links the fake detached for an expired claim.
func (e *ehIdentity) detached() int { return len(ehDetached.FindAllString(e.eh.log(), -1)) }

// expiredRefused puts an expired token for the hub, as the SDK would, and
// expects the fake to refuse it.
func (e *ehIdentity) expiredRefused(t testing.TB, token string) string {
	before := len(ehRefused.FindAllString(e.eh.log(), -1))
	p, err := azeventhubs.NewProducerClient(e.upstream(), "hub", staticToken(token), &azeventhubs.ProducerClientOptions{
		TLSConfig: tlsFor(t, e.f.CAFile, "127.0.0.1"), RetryOptions: azeventhubs.RetryOptions{MaxRetries: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = p.GetEventHubProperties(ctx, nil)
	refusals := ehRefused.FindAllStringSubmatch(e.eh.log(), -1)
	switch {
	case err == nil:
		t.Errorf("the fake Event Hubs took an expired token")
		return "taken"
	case len(refusals) <= before:
		t.Errorf("the fake Event Hubs did not refuse the expired token (the SDK said %v)", err)
		return "not refused"
	}
	return "the event hub's $cbs answered put-token: " + refusals[len(refusals)-1][1]
}

// tlsFor trusts caFile's certificates for serverName.
func tlsFor(t testing.TB, caFile, serverName string) *tls.Config {
	c := trusting(t, caFile).Transport.(*http.Transport).TLSClientConfig.Clone()
	c.ServerName = serverName
	return c
}

// staticToken is a credential that always gives one token, valid (it says)
// for an hour.
type staticToken string

func (s staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: string(s), ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// tokensOf are the tokens issued for audience.
func tokensOf(issued []entrafake.Issue, audience string) []string {
	var out []string
	for _, is := range issued {
		if strings.TrimSuffix(is.Audience, "/") == strings.TrimSuffix(audience, "/") {
			out = append(out, is.Token)
		}
	}
	return out
}
