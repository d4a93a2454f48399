// Package blobsink delivers batches to Azure Blob Storage as block blobs laid
// out by common/objstore: one NDJSON blob per batch (optionally gzipped), or
// one blob per message, under deterministic names so a batch sent again after
// a crash never duplicates what was already stored.
package blobsink

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/entra"
	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// prefix of the service's variables, also the objstore layout's.
const prefix = "AZURE_BLOB"

// Variable names, used in error messages too.
const (
	varAccount     = prefix + "_STORAGE_ACCOUNT"
	varKey         = prefix + "_STORAGE_ACCOUNT_KEY"
	varContainer   = prefix + "_CONTAINER_NAME"
	varConnString  = prefix + "_CONNECTIONSTRING"
	varEndpoint    = prefix + "_ENDPOINT"
	varTenant      = prefix + "_TENANT_ID"
	varClient      = prefix + "_CLIENT_ID"
	varSecret      = prefix + "_CLIENT_SECRET"
	varUseEntra    = prefix + "_USE_ENTRA"
	varCert        = prefix + "_" + entra.SufCert
	varCertPath    = prefix + "_" + entra.SufCertPath
	varTokenFile   = prefix + "_" + entra.SufTokenFile
	varCreate      = prefix + "_CREATE_CONTAINER"
	varConcurrency = prefix + "_UPLOAD_CONCURRENCY"
)

// Vars are the service's own variables. The batching defaults are raised:
// an object store is billed and listed per object, so fewer, larger blobs
// are better than the common defaults' near-real-time small batches.
func Vars() []config.Var {
	own := []config.Var{
		{Name: "BATCH_MAX_MESSAGES", Default: "10000", Doc: "Most messages in one batch (one blob in batch mode)."},
		{Name: "BATCH_MAX_BYTES", Default: "4MiB", Doc: "Most payload bytes in one batch (one blob in batch mode)."},
		{Name: "BATCH_MAX_WAIT", Default: "60s",
			Doc: "Longest a batch waits to fill before it is written. A backlog is written in full batches at once."},
		{Name: varAccount,
			Doc: "Storage account name. Required with " + varKey + ", and with Microsoft Entra auth unless " + varEndpoint + " is set."},
		{Name: varKey, Secret: true,
			Doc: "Storage account access key (base64, as the portal shows it). One of the four ways to authenticate."},
		{Name: varContainer, Required: true, Doc: "Container the blobs are written to."},
		{Name: varConnString, Secret: true,
			Doc: "Connection string instead of account and key: `AccountName=...;AccountKey=...`, or `BlobEndpoint=...;SharedAccessSignature=...` for a SAS (permissions `cw` at least; `r` lets the start-up check see the container), or Azurite's."},
		{Name: varEndpoint,
			Doc: "Blob service URL, for Azurite (`http://127.0.0.1:10000/devstoreaccount1`), sovereign clouds or private endpoints. Default `https://<account>.blob.core.windows.net/`. Not with a connection string, which names its own."},
		{Name: varTenant, Doc: "Microsoft Entra tenant of a service principal; with " + varClient + " and one credential: " + varSecret + ", a client certificate or a federated token file (below)."},
		{Name: varClient, Doc: "Application (client) id of the service principal (needs the Storage Blob Data Contributor role)."},
		{Name: varSecret, Secret: true, Doc: "Client secret of the service principal (a long-lived secret: the certificate or the federated token file below leave none on the device)."},
		{Name: varUseEntra, Default: "false",
			Doc: "Authenticate with Microsoft Entra's DefaultAzureCredential (its own `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`, workload or managed identity, Azure CLI...)."},
		{Name: varCreate, Default: "false",
			Doc: "Create the container at start-up if it does not exist (needs a credential allowed to). Otherwise it must exist."},
		{Name: varConcurrency, Default: "8",
			Doc: "Uploads at once within a batch (message mode, or batch mode with {topic} in the key template)."},
	}
	ids := entra.Vars(prefix)
	i := slices.IndexFunc(own, func(v config.Var) bool { return v.Name == varSecret }) + 1
	own = slices.Insert(own, i, ids...)
	return append(own, objstore.Vars(prefix)...)
}

// Service is the Azure Blob Storage destination.
var Service = run.Service{Name: "azure-blob", Vars: Vars(), New: New}

// auth is how the sink authenticates; exactly one is configured.
type auth int

const (
	authSharedKey auth = iota + 1
	authConnString
	authEntra        // a service principal: client secret, certificate or federated token file
	authEntraDefault // DefaultAzureCredential
)

// Config is the validated configuration.
type Config struct {
	Auth        auth
	Account     string
	Key         string          // secret
	ConnString  string          // secret
	Endpoint    string          // blob service URL ("" with a connection string)
	Identity    *entra.Identity // with authEntra
	Container   string
	Create      bool
	Concurrency int
	Layout      objstore.Options
}

var (
	accountName = regexp.MustCompile(`^[a-z0-9]{3,24}$`)
	// Container names: 3-63 lower-case letters, digits and single hyphens,
	// starting and ending with a letter or digit; plus the two reserved ones.
	containerName = regexp.MustCompile(`^[a-z0-9]([a-z0-9]|-[a-z0-9]){2,62}$`)
)

// load reads and validates the variables; problems are recorded in l.
func load(l *config.Loader, device string) Config {
	c := Config{
		Account:     strings.TrimSpace(l.String(varAccount)),
		Key:         strings.TrimSpace(l.String(varKey)),
		ConnString:  strings.TrimSpace(l.String(varConnString)),
		Container:   strings.TrimSpace(l.String(varContainer)),
		Create:      l.Bool(varCreate),
		Concurrency: l.Int(varConcurrency, 1, 64),
		Layout:      objstore.Load(l, prefix, device),
	}
	useEntra := l.Bool(varUseEntra)
	endpoint := l.URL(varEndpoint, "https", "http")

	if c.Container != "" && !containerName.MatchString(c.Container) && c.Container != "$root" && c.Container != "$web" {
		l.Fail(varContainer, c.Container, "3 to 63 lower-case letters, digits and hyphens, starting and ending with a letter or digit, no two hyphens in a row")
	}
	if c.Account != "" && !accountName.MatchString(c.Account) {
		l.Fail(varAccount, c.Account, "the storage account's name: 3 to 24 lower-case letters and digits (not its URL)")
	}

	// Exactly one way to authenticate.
	var methods []string
	if c.Key != "" {
		c.Auth = authSharedKey
		methods = append(methods, varKey)
	}
	if c.ConnString != "" {
		c.Auth = authConnString
		methods = append(methods, varConnString)
	}
	if entra.Set(l, prefix) {
		c.Auth = authEntra
		methods = append(methods, varTenant+"/"+varClient+"/"+varSecret+"/"+varCert+"/"+varCertPath+"/"+varTokenFile)
	} else if useEntra {
		c.Auth = authEntraDefault
		methods = append(methods, varUseEntra+"=true")
	}
	const ways = "exactly one way to authenticate: " + varAccount + " with " + varKey +
		"; or " + varConnString + "; or " + varTenant + " and " + varClient + " with " + varSecret + ", " + varCert +
		" (or " + varCertPath + ") or " + varTokenFile + "; or " + varUseEntra + "=true"
	switch {
	case len(methods) == 0:
		l.Require(varKey, ways)
	case len(methods) > 1:
		// Name a variable of the second method that is set.
		name := strings.TrimSuffix(methods[1], "=true")
		for _, n := range strings.Split(name, "/") {
			if l.IsSet(n) {
				name = n
				break
			}
		}
		l.Fail(name, l.Optional(name), "unset, since "+methods[0]+" is set too: "+ways)
		return c
	}

	switch c.Auth {
	case authSharedKey:
		if c.Account == "" {
			l.Require(varAccount, "required with "+varKey)
		}
		if _, err := base64.StdEncoding.DecodeString(c.Key); err != nil {
			l.Fail(varKey, c.Key, "the account's access key as the portal shows it (base64)")
		}
	case authConnString:
		for _, n := range []string{varAccount, varEndpoint} {
			if l.IsSet(n) {
				l.Fail(n, l.Optional(n), "unset when "+varConnString+" is set: the connection string names the account and endpoint (AccountName=, BlobEndpoint=)")
			}
		}
	case authEntra:
		c.Identity = entra.Load(l, prefix)
	}
	if c.Auth != authEntra {
		entra.Unused(l, prefix)
	}
	if c.Auth == authSharedKey || c.Auth == authEntra || c.Auth == authEntraDefault {
		switch {
		case endpoint != nil && endpoint.RawQuery != "":
			// A SAS in a plain variable would be printed in errors and logs,
			// starting with this one.
			l.Fail(varEndpoint, redactURL(endpoint.String())+"?(query not shown)", "a URL without a query: give a SAS as "+varConnString+"=BlobEndpoint=...;SharedAccessSignature=...")
		case endpoint != nil && endpoint.Scheme != "https" && c.Auth != authSharedKey:
			// The SDK refuses to send a token in clear, on every call.
			l.Fail(varEndpoint, endpoint.String(), "an https URL with Microsoft Entra auth, which never sends its token over plain http")
		case endpoint != nil:
			c.Endpoint = endpoint.String()
		case c.Account != "":
			c.Endpoint = "https://" + c.Account + ".blob.core.windows.net/"
		case c.Auth != authSharedKey:
			l.Require(varAccount, "required with Microsoft Entra auth unless "+varEndpoint+" is set")
		}
	}
	return c
}

// New reads the service's variables and returns its sink, not yet connected.
func New(l *config.Loader, info run.Info) (sink.Sink, error) {
	c := load(l, info.Device)
	if l.Err() != nil {
		return nil, l.Err()
	}
	cl, err := newClients(c)
	if err != nil {
		// Offline checks the SDK makes of the credential (a malformed
		// connection string, a bad tenant id); never echoes secrets.
		name := map[auth]string{authSharedKey: varKey, authConnString: varConnString, authEntra: varTenant, authEntraDefault: varUseEntra}[c.Auth]
		l.Fail(name, l.Optional(name), "a value the Azure SDK accepts ("+err.Error()+")")
		return nil, l.Err()
	}
	return newSink(c, cl, info.Log), nil
}

// redactURL drops a URL's query and user info, where SAS tokens and
// passwords live.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery, u.ForceQuery, u.User = "", false, nil
	return u.String()
}
