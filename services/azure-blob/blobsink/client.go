package blobsink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// blobClient is the subset of *azblob.Client the sink uses.
type blobClient interface {
	UploadBuffer(ctx context.Context, containerName, blobName string, buffer []byte, o *azblob.UploadBufferOptions) (azblob.UploadBufferResponse, error)
	CreateContainer(ctx context.Context, containerName string, o *azblob.CreateContainerOptions) (azblob.CreateContainerResponse, error)
	// DeleteBlob is for the check's test blob only.
	DeleteBlob(ctx context.Context, containerName, blobName string, o *azblob.DeleteBlobOptions) (azblob.DeleteBlobResponse, error)
}

// containerClient is the subset of *container.Client the sink uses.
type containerClient interface {
	GetProperties(ctx context.Context, o *container.GetPropertiesOptions) (container.GetPropertiesResponse, error)
}

// clients are the SDK clients of one configuration.
type clients struct {
	blobs blobClient
	ctr   containerClient
	where string // the service URL without its query (a SAS), for messages
	// closeIdle drops idle connections on Close.
	closeIdle func()
}

const (
	// responseHeaderTimeout bounds the wait for an answer once a request is
	// sent. It does not limit the upload itself, which on a slow link may
	// take minutes; Azure answers a complete PUT within seconds.
	responseHeaderTimeout = time.Minute
	// tryTimeout bounds one HTTP attempt, upload included, so a connection
	// that stalls mid-body cannot hang the pipeline: a 4 MiB batch needs a
	// link of about 60 kbit/s to make it.
	tryTimeout = 10 * time.Minute
	// sdkRetries are the SDK's own quick retries of a 5xx, 408, 429 or a
	// connection error. The pipeline retries for ever with its own backoff
	// and reports the error on /ready meanwhile, so a few suffice.
	sdkRetries = 2
)

// newTransport is azcore's default transport plus responseHeaderTimeout,
// and enough idle connections per host for the upload concurrency.
func newTransport(roots *x509.CertPool) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = responseHeaderTimeout
	t.MaxIdleConnsPerHost = 64
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	return t
}

// newClients builds the SDK clients for c. Nothing is sent: errors are
// configuration problems (a malformed connection string or key).
func newClients(c Config) (clients, error) {
	var roots *x509.CertPool // nil: the system's
	if c.Identity != nil {
		roots = c.Identity.Roots
	}
	tr := newTransport(roots)
	copts := azcore.ClientOptions{
		Transport: &http.Client{Transport: tr},
		Retry:     policy.RetryOptions{MaxRetries: sdkRetries, TryTimeout: tryTimeout},
		Telemetry: policy.TelemetryOptions{ApplicationID: "cloud-block"},
	}
	opts := &azblob.ClientOptions{ClientOptions: copts}
	var (
		cl  *azblob.Client
		err error
	)
	switch c.Auth {
	case authSharedKey:
		var cred *azblob.SharedKeyCredential
		if cred, err = azblob.NewSharedKeyCredential(c.Account, c.Key); err == nil {
			cl, err = azblob.NewClientWithSharedKeyCredential(c.Endpoint, cred, opts)
		}
	case authConnString:
		cl, err = azblob.NewClientFromConnectionString(c.ConnString, opts)
	default:
		var cred azcore.TokenCredential
		if cred, err = entraCredential(c, copts); err == nil {
			cl, err = azblob.NewClient(c.Endpoint, cred, opts)
		}
	}
	if err != nil {
		return clients{}, err
	}
	return clients{
		blobs:     cl,
		ctr:       cl.ServiceClient().NewContainerClient(c.Container),
		where:     redactURL(cl.URL()),
		closeIdle: tr.CloseIdleConnections,
	}, nil
}
