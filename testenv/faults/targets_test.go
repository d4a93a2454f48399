package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/testenv/filesink"
)

// anyValueIgnored is why a receive-side variable of the original block
// takes any value.
const anyValueIgnored = "accepted for compatibility with the original block and ignored"

// targets: the file destination and one per service (SQS twice: standard,
// and FIFO for its exactly-once resends).
var targets = []*target{
	{
		name: "file", pkg: "testenv/cmd/filedest", open: openFile, batch: 200,
		badVars: map[string]string{
			"FILE_SINK_PATH":               "relative/out.ndjson",
			"FILE_SINK_MAX_MESSAGE_BYTES":  "-1",
			"FILE_SINK_MAX_BATCH_MESSAGES": "many",
			"FILE_SINK_FSYNC":              "sometimes",
			"FILE_SINK_STABLE_BATCHES":     "maybe",
		},
		anyValue: map[string]string{
			"FILE_SINK_FAIL_FILE":     "any path: the outage switch of the test destination",
			"FILE_SINK_REJECT_PREFIX": "any prefix: the refusal switch of the test destination",
		},
	},
	{
		name: "aws-sqs", pkg: "services/aws-sqs", open: openSQS(false), batch: 10,
		badVars: map[string]string{
			"AWS_SQS_QUEUE_NAME":       "no spaces allowed in a queue name",
			"AWS_SQS_REGION":           "Not A Region!",
			"AWS_SQS_ACCESS_KEY":       "AKIA-without-its-secret",
			"AWS_SQS_SECRET_KEY":       "sqsBadSecret-without-its-key-id",
			"AWS_SQS_SESSION_TOKEN":    "sqsBadToken-without-keys-0123456789",
			"AWS_SQS_ENDPOINT":         "ftp://sqs.example.com",
			"AWS_SQS_MESSAGE_GROUP_ID": strings.Repeat("g", 129),
		},
	},
	{
		name: "aws-sqs-fifo", pkg: "services/aws-sqs", open: openSQS(true), batch: 10, dupFree: true,
		only: []string{"crash"},
	},
	{
		name: "aws-s3", pkg: "services/aws-s3", open: openS3, batch: 200, dupFree: true,
		env: map[string]string{"BATCH_MAX_WAIT": "200ms"},
		badVars: map[string]string{
			"AWS_S3_BUCKET":           "No_Such..Bucket",
			"AWS_S3_REGION":           "Not A Region!",
			"AWS_S3_ACCESS_KEY":       "AKIA-without-its-secret",
			"AWS_S3_SECRET_KEY":       "s3BadSecret-without-its-key-id",
			"AWS_S3_SESSION_TOKEN":    "s3BadToken-without-keys-0123456789",
			"AWS_S3_ENDPOINT":         "ftp://s3.example.com",
			"AWS_S3_FORCE_PATH_STYLE": "sometimes",
			"AWS_S3_MAX_OBJECT_BYTES": "6GiB",
			"AWS_S3_OBJECT_MODE":      "folder",
			"AWS_S3_GZIP":             "maybe",
			"AWS_S3_PREFIX":           "bad\x01prefix",
			"AWS_S3_KEY_TEMPLATE":     "{device}/{nosuch}",
		},
	},
	{
		name: "azure-eh", pkg: "services/azure-eh", open: openEH, batch: 200,
		badVars: map[string]string{
			"AZURE_EH_CONNECTIONSTRING": "Endpoint=nothing;SharedAccessKey=ehBadKey-0123456789",
			"AZURE_EH_NAME":             "not/a hub",
			"AZURE_EH_NAMESPACE":        "not a namespace!",
			"AZURE_EH_TENANT_ID":        "not a tenant!",
			"AZURE_EH_CLIENT_ID":        "not a client!",
			"AZURE_EH_CLIENT_SECRET":    "ehBadClientSecret-0123456789",
			"AZURE_EH_PARTITION_KEY":    "random",
			"AZURE_EH_PARTITION_ID":     "-1",
		},
		anyValue: map[string]string{
			"AZURE_EH_CONSUMER_GROUP":      anyValueIgnored,
			"AZURE_EH_STORAGE_ACCOUNT":     anyValueIgnored,
			"AZURE_EH_STORAGE_ACCOUNT_KEY": anyValueIgnored,
			"AZURE_EH_CONTAINER_NAME":      anyValueIgnored,
		},
	},
	{
		name: "azure-blob", pkg: "services/azure-blob", open: openBlob, batch: 200, dupFree: true,
		env: map[string]string{"BATCH_MAX_WAIT": "200ms"},
		badVars: map[string]string{
			"AZURE_BLOB_STORAGE_ACCOUNT":     "Not An Account!",
			"AZURE_BLOB_STORAGE_ACCOUNT_KEY": "blobBadKey-not-base64-!!!",
			"AZURE_BLOB_CONTAINER_NAME":      "Bad_Container",
			"AZURE_BLOB_CONNECTIONSTRING":    "AccountName=x;blobBadConn-0123456789",
			"AZURE_BLOB_ENDPOINT":            "ftp://blob.example.com",
			"AZURE_BLOB_TENANT_ID":           "not a tenant!",
			"AZURE_BLOB_CLIENT_ID":           "not a client!",
			"AZURE_BLOB_CLIENT_SECRET":       "blobBadClientSecret-0123456789",
			"AZURE_BLOB_USE_ENTRA":           "maybe",
			"AZURE_BLOB_CREATE_CONTAINER":    "maybe",
			"AZURE_BLOB_UPLOAD_CONCURRENCY":  "0",
			"AZURE_BLOB_OBJECT_MODE":         "folder",
			"AZURE_BLOB_GZIP":                "maybe",
			"AZURE_BLOB_PREFIX":              "bad\x01prefix",
			"AZURE_BLOB_KEY_TEMPLATE":        "{device}/{nosuch}",
		},
	},
	{
		name: "gcp-pubsub", pkg: "services/gcp-pubsub", open: openPubSub, batch: 200,
		badVars: map[string]string{
			"GCP_PUBSUB_TOPIC":               "projects//topics/",
			"GCP_PUBSUB_ORDERING_KEY":        "random",
			"GCP_PUBSUB_MAX_MESSAGE_BYTES":   "20MB",
			"PUBSUB_EMULATOR_HOST":           "not a host:port",
			"GCP_PUBSUB_PROJECT_ID":          "Not A Project!",
			"GCP_PUBSUB_TYPE":                "authorized_user",
			"GCP_PUBSUB_CLIENT_EMAIL":        "not an email",
			"GCP_PUBSUB_PRIVATE_KEY":         "psBadKey-not-a-pem-0123456789",
			"GCP_PUBSUB_CREDENTIALS_JSON":    "{psBadJSON-0123456789",
			"GOOGLE_APPLICATION_CREDENTIALS": "/no/such/credentials.json",
		},
		anyValue: map[string]string{"GCP_PUBSUB_SUBSCRIPTION": anyValueIgnored},
	},
	{
		name: "gcp-storage", pkg: "services/gcp-storage", open: openGCS, batch: 200, dupFree: true,
		env: map[string]string{"BATCH_MAX_WAIT": "200ms"},
	},
}

// --- the file destination ---------------------------------------------------

type fileBackend struct {
	path, fail string

	mu   sync.Mutex
	off  int64
	part []byte
	got  []msg
}

func openFile(t *testing.T) backend {
	dir := t.TempDir()
	return &fileBackend{path: filepath.Join(dir, "delivered.ndjson"), fail: filepath.Join(dir, "down")}
}

func (b *fileBackend) env(string) map[string]string {
	return map[string]string{"FILE_SINK_PATH": b.path, "FILE_SINK_FAIL_FILE": b.fail}
}
func (b *fileBackend) upstream() string  { return "" }
func (b *fileBackend) secrets() []string { return nil }

func (b *fileBackend) stop(t testing.TB) {
	if err := os.WriteFile(b.fail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (b *fileBackend) start(t testing.TB) {
	if err := os.Remove(b.fail); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// read parses what was appended since the last read.
func (b *fileBackend) read(t testing.TB) []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, err := os.Open(b.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(b.off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		b.off += int64(len(line))
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = append(b.part, line...)
			b.part = nil
			var l filesink.Line
			// A line a crash cut short is ended by the sink's next Connect and
			// does not parse: it was not delivered.
			if json.Unmarshal(line, &l) == nil {
				b.got = append(b.got, msg{ID: l.ID, Topic: l.Topic, Payload: l.Bytes()})
			}
		} else {
			b.part = append(b.part, line...)
		}
		if err != nil {
			break
		}
	}
	return append([]msg(nil), b.got...)
}

// --- object stores: the shared read-back -------------------------------------

// objCache keeps every batch object read, by key, so that what an
// in-memory emulator forgets on restart stays counted, and an object
// written again under its key (a resend) counts once.
type objCache struct {
	mu   sync.Mutex
	objs map[string]cachedObj
}

type cachedObj struct {
	tag  string
	msgs []msg
}

func (c *objCache) has(key, tag string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, ok := c.objs[key]
	return ok && o.tag == tag
}

func (c *objCache) add(t testing.TB, key, tag string, body []byte, encoding string) {
	if !strings.HasSuffix(key, ".ndjson") && !strings.HasSuffix(key, ".ndjson.gz") {
		t.Fatalf("object %q is not a batch object", key)
	}
	lines, err := objstore.Decode(body, encoding)
	if err != nil {
		t.Fatalf("object %q: %v", key, err)
	}
	ms := make([]msg, len(lines))
	for i, l := range lines {
		ms[i] = msg{ID: l.ID, Topic: l.Topic, Device: l.Device, Payload: l.Payload}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.objs == nil {
		c.objs = map[string]cachedObj{}
	}
	c.objs[key] = cachedObj{tag: tag, msgs: ms}
}

func (c *objCache) all() []msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []msg
	for _, o := range c.objs {
		out = append(out, o.msgs...)
	}
	return out
}

// readAllBody reads and closes r.
func readAllBody(r io.ReadCloser) ([]byte, error) {
	defer r.Close()
	var b bytes.Buffer
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}
