package blobsink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// fakeBlob is a stored blob.
type fakeBlob struct {
	body                         []byte
	contentType, contentEncoding string
	metadata                     map[string]string
}

// fakeStore is an in-memory Blob service behind the sink's client
// interfaces, answering with the SDK's error type as Azure does.
type fakeStore struct {
	mu         sync.Mutex
	containers map[string]map[string]fakeBlob
	// maxBody, if set, refuses larger bodies with 413 RequestBodyTooLarge.
	maxBody int
	// fail, if set, may fail a call before it is applied (op is "upload",
	// "create", "properties" or "delete").
	fail func(op, name string) error
	// delay, if set, is how long an upload takes.
	delay time.Duration

	uploads  int
	inFlight sinktest.Concurrency // uploads
}

func newFakeStore(containers ...string) *fakeStore {
	f := &fakeStore{containers: map[string]map[string]fakeBlob{}}
	for _, c := range containers {
		f.containers[c] = map[string]fakeBlob{}
	}
	return f
}

// clients returns the sink's view of the store for one container.
func (f *fakeStore) clients(ctr string) clients {
	return clients{blobs: f, ctr: fakeContainer{f, ctr}, where: "https://fake.blob.example/"}
}

// azErr builds the error the SDK returns for an Azure error answer, from a
// response to a request whose URL carries a SAS, as a real one may.
func azErr(status int, code, msg string) error {
	body := fmt.Sprintf("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>%s</Code><Message>%s\nRequestId:0f1e2d3c\nTime:2024-03-05T07:08:09.1234567Z</Message></Error>", code, msg)
	req, _ := http.NewRequest(http.MethodPut, "https://acct.blob.core.windows.net/ctr/blob?sv=2024-08-04&sig=SECRETSIG", nil)
	return runtime.NewResponseError(&http.Response{
		StatusCode: status,
		Status:     fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:     http.Header{"X-Ms-Error-Code": {code}},
		Body:       io.NopCloser(strings.NewReader(body)),
		Request:    req,
	})
}

func (f *fakeStore) check(ctx context.Context, op, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.fail != nil {
		return f.fail(op, name)
	}
	return nil
}

func (f *fakeStore) UploadBuffer(ctx context.Context, ctr, name string, buf []byte, o *azblob.UploadBufferOptions) (azblob.UploadBufferResponse, error) {
	if err := f.check(ctx, "upload", name); err != nil {
		return azblob.UploadBufferResponse{}, err
	}
	defer f.inFlight.Enter()()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return azblob.UploadBufferResponse{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[ctr]
	if !ok {
		return azblob.UploadBufferResponse{}, azErr(404, "ContainerNotFound", "The specified container does not exist.")
	}
	if f.maxBody > 0 && len(buf) > f.maxBody {
		return azblob.UploadBufferResponse{}, azErr(413, "RequestBodyTooLarge", "The request body is too large and exceeds the maximum permissible limit.")
	}
	if _, exists := c[name]; exists && o != nil && o.AccessConditions != nil && o.AccessConditions.ModifiedAccessConditions != nil &&
		o.AccessConditions.ModifiedAccessConditions.IfNoneMatch != nil && *o.AccessConditions.ModifiedAccessConditions.IfNoneMatch == azcore.ETagAny {
		return azblob.UploadBufferResponse{}, azErr(409, "BlobAlreadyExists", "The specified blob already exists.")
	}
	b := fakeBlob{body: bytes.Clone(buf)}
	if o != nil && o.Metadata != nil {
		b.metadata = map[string]string{}
		for k, v := range o.Metadata {
			b.metadata[k] = *v
		}
	}
	if o != nil && o.HTTPHeaders != nil {
		if p := o.HTTPHeaders.BlobContentType; p != nil {
			b.contentType = *p
		}
		if p := o.HTTPHeaders.BlobContentEncoding; p != nil {
			b.contentEncoding = *p
		}
	}
	c[name] = b
	f.uploads++
	return azblob.UploadBufferResponse{}, nil
}

func (f *fakeStore) CreateContainer(ctx context.Context, name string, _ *azblob.CreateContainerOptions) (azblob.CreateContainerResponse, error) {
	if err := f.check(ctx, "create", name); err != nil {
		return azblob.CreateContainerResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[name]; ok {
		return azblob.CreateContainerResponse{}, azErr(409, "ContainerAlreadyExists", "The specified container already exists.")
	}
	f.containers[name] = map[string]fakeBlob{}
	return azblob.CreateContainerResponse{}, nil
}

func (f *fakeStore) DeleteBlob(ctx context.Context, ctr, name string, _ *azblob.DeleteBlobOptions) (azblob.DeleteBlobResponse, error) {
	if err := f.check(ctx, "delete", name); err != nil {
		return azblob.DeleteBlobResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[ctr][name]; !ok {
		return azblob.DeleteBlobResponse{}, azErr(404, "BlobNotFound", "The specified blob does not exist.")
	}
	delete(f.containers[ctr], name)
	return azblob.DeleteBlobResponse{}, nil
}

// blobs returns a copy of a container's blobs.
func (f *fakeStore) blobs(ctr string) map[string]fakeBlob {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]fakeBlob{}
	for k, v := range f.containers[ctr] {
		out[k] = v
	}
	return out
}

type fakeContainer struct {
	f    *fakeStore
	name string
}

func (c fakeContainer) GetProperties(ctx context.Context, _ *container.GetPropertiesOptions) (container.GetPropertiesResponse, error) {
	if err := c.f.check(ctx, "properties", c.name); err != nil {
		return container.GetPropertiesResponse{}, err
	}
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if _, ok := c.f.containers[c.name]; !ok {
		return container.GetPropertiesResponse{}, azErr(404, "ContainerNotFound", "The specified container does not exist.")
	}
	return container.GetPropertiesResponse{}, nil
}
