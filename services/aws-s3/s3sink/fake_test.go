package s3sink

import (
	"bytes"
	"context"
	"io"
	"maps"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

// storedObject is what a PUT left in fakeS3.
type storedObject struct {
	Body            []byte
	ContentType     string
	ContentEncoding string
	Metadata        map[string]string
}

// fakeS3 is an in-memory bucket behind the API interface. fail, when set,
// decides the error of each call before it takes effect.
type fakeS3 struct {
	mu       sync.Mutex
	bucket   string
	objects  map[string]storedObject
	puts     int
	inFlight sinktest.Concurrency // PUTs
	fail     func(op, key string) error
	// hold, when set, blocks each PUT until it is closed (to observe concurrency).
	hold chan struct{}
}

func newFakeS3(bucket string) *fakeS3 {
	return &fakeS3{bucket: bucket, objects: map[string]storedObject{}}
}

func (f *fakeS3) HeadBucket(ctx context.Context, in *s3.HeadBucketInput, _ ...func(*s3.Options)) (*s3.HeadBucketOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail("HeadBucket", ""); err != nil {
			return nil, err
		}
	}
	if *in.Bucket != f.bucket {
		return nil, apiErr("NotFound")
	}
	return &s3.HeadBucketOutput{}, nil
}

func (f *fakeS3) PutObject(ctx context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	defer f.inFlight.Enter()()
	f.mu.Lock()
	hold, fail := f.hold, f.fail
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fail != nil {
		if err := fail("PutObject", *in.Key); err != nil {
			return nil, err
		}
	}
	if *in.Bucket != f.bucket {
		return nil, apiErr("NoSuchBucket")
	}
	body, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	if in.ContentLength == nil || *in.ContentLength != int64(len(body)) {
		return nil, apiErr("IncompleteBody")
	}
	o := storedObject{Body: body, Metadata: maps.Clone(in.Metadata)}
	if in.ContentType != nil {
		o.ContentType = *in.ContentType
	}
	if in.ContentEncoding != nil {
		o.ContentEncoding = *in.ContentEncoding
	}
	f.mu.Lock()
	f.objects[*in.Key] = o
	f.puts++
	f.mu.Unlock()
	return &s3.PutObjectOutput{}, nil
}

func (f *fakeS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail("DeleteObject", *in.Key); err != nil {
			return nil, err
		}
	}
	if *in.Bucket != f.bucket {
		return nil, apiErr("NoSuchBucket")
	}
	delete(f.objects, *in.Key)
	return &s3.DeleteObjectOutput{}, nil
}

// snapshot returns the stored objects by key, and the keys sorted.
func (f *fakeS3) snapshot() (map[string]storedObject, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]storedObject, len(f.objects))
	keys := make([]string, 0, len(f.objects))
	for k, v := range f.objects {
		out[k] = storedObject{Body: bytes.Clone(v.Body), ContentType: v.ContentType, ContentEncoding: v.ContentEncoding, Metadata: maps.Clone(v.Metadata)}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return out, keys
}
