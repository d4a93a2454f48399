package blocktest

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
// and FIFO for its exactly-once resends), with variants of the object
// stores: S3 on versitygw, and each store in message mode.
var targets = []*target{
	{
		name: "file", pkg: "testenv/cmd/filedest", open: openFile, batch: 200,
		limitEnv: map[string]string{"FILE_SINK_MAX_MESSAGE_BYTES": "65536", "FILE_SINK_REJECT_PREFIX": "REFUSE"},
		limit:    fixedLimit(65536), refused: []byte("REFUSE this payload"),
		badVars: map[string]badValue{
			"FILE_SINK_MAX_MESSAGE_BYTES":  bad("-1"),
			"FILE_SINK_MAX_BATCH_MESSAGES": bad("many"),
			"FILE_SINK_FSYNC":              bad("sometimes"),
			"FILE_SINK_STABLE_BATCHES":     bad("maybe"),
		},
		anyValue: map[string]string{
			"FILE_SINK_PATH":          "any path, relative ones too: the test destination's output",
			"FILE_SINK_FAIL_FILE":     "any path: the outage switch of the test destination",
			"FILE_SINK_REJECT_PREFIX": "any prefix: the refusal switch of the test destination",
		},
	},
	{
		name: "aws-sqs", pkg: "services/aws-sqs", open: openSQS(false), batch: 10, limit: sqsLimit,
		badVars: map[string]badValue{
			"AWS_SQS_QUEUE_NAME": bad("no spaces allowed in a queue name"),
			"AWS_SQS_REGION":     bad("Not A Region!"),
			// Keys come in pairs: one alone is the mistake.
			"AWS_SQS_ACCESS_KEY":       bad("AKIAFAULTSALONE").without("AWS_SQS_SECRET_KEY"),
			"AWS_SQS_SECRET_KEY":       bad("sqsBadSecret-without-its-key-id").without("AWS_SQS_ACCESS_KEY"),
			"AWS_SQS_SESSION_TOKEN":    bad("sqsBadToken-without-keys-0123456789").without("AWS_SQS_ACCESS_KEY", "AWS_SQS_SECRET_KEY"),
			"AWS_SQS_ENDPOINT":         bad("ftp://sqs.example.com"),
			"AWS_SQS_MESSAGE_GROUP_ID": bad(strings.Repeat("g", 129)),
		},
	},
	{
		name: "aws-sqs-fifo", pkg: "services/aws-sqs", open: openSQS(true), batch: 10, dupFree: true,
		limit: sqsLimit, only: []string{"crash", "bytes"},
	},
	{
		name: "aws-s3", pkg: "services/aws-s3", open: openS3, batch: 200, dupFree: true,
		env: map[string]string{"BATCH_MAX_WAIT": "200ms"},
		// A batch object keeps 1 KiB (s3sink's envelopeReserve) for the
		// NDJSON envelope around the largest payload.
		limitEnv: map[string]string{"AWS_S3_MAX_OBJECT_BYTES": "64KiB"}, limit: fixedLimit(64<<10 - 1<<10),
		badVars: map[string]badValue{
			"AWS_S3_BUCKET":           bad("not a bucket"),
			"AWS_S3_REGION":           bad("Not A Region!"),
			"AWS_S3_ACCESS_KEY":       bad("AKIAFAULTSALONE").without("AWS_S3_SECRET_KEY"),
			"AWS_S3_SECRET_KEY":       bad("s3BadSecret-without-its-key-id").without("AWS_S3_ACCESS_KEY"),
			"AWS_S3_SESSION_TOKEN":    bad("s3BadToken-without-keys-0123456789").without("AWS_S3_ACCESS_KEY", "AWS_S3_SECRET_KEY"),
			"AWS_S3_ENDPOINT":         bad("ftp://s3.example.com"),
			"AWS_S3_FORCE_PATH_STYLE": bad("sometimes"),
			"AWS_S3_MAX_OBJECT_BYTES": bad("6GiB"),
			"AWS_S3_OBJECT_MODE":      bad("folder"),
			"AWS_S3_GZIP":             bad("maybe"),
			"AWS_S3_PREFIX":           bad(strings.Repeat("p", 1025)),
			"AWS_S3_KEY_TEMPLATE":     bad("{device}/{nosuch}"),
		},
	},
	{
		// Message mode: each payload an object of its own, its id, topic and
		// device in the object's metadata. The largest payload is the largest
		// object: no NDJSON envelope to keep room for.
		name: "aws-s3-message", pkg: "services/aws-s3", open: openS3, batch: 200, dupFree: true,
		env:      map[string]string{"BATCH_MAX_WAIT": "200ms", "AWS_S3_OBJECT_MODE": "message"},
		limitEnv: map[string]string{"AWS_S3_MAX_OBJECT_BYTES": "64KiB"}, limit: fixedLimit(64 << 10),
		only: []string{"bytes", "crash", "toolbox"},
	},
	{
		// versitygw checks signatures and stores on disk; objects gzipped.
		name: "aws-s3-versitygw", pkg: "services/aws-s3", open: openVersity, batch: 200, dupFree: true,
		env:      map[string]string{"BATCH_MAX_WAIT": "200ms", "AWS_S3_GZIP": "true"},
		limitEnv: map[string]string{"AWS_S3_MAX_OBJECT_BYTES": "64KiB"}, limit: fixedLimit(64<<10 - 1<<10),
		only: []string{"bytes", "crash"},
	},
	{
		name: "azure-eh", pkg: "services/azure-eh", open: openEH, batch: 200, limit: ehLimit,
		badVars: map[string]badValue{
			"AZURE_EH_CONNECTIONSTRING": bad("Endpoint=nothing;SharedAccessKey=ehBadKey-0123456789"),
			"AZURE_EH_NAME":             bad("not/a hub"),
			"AZURE_EH_NAMESPACE":        bad("not a namespace!"),
			"AZURE_EH_TENANT_ID":        bad("not a tenant!"),
			"AZURE_EH_CLIENT_ID":        bad("not a client!"),
			"AZURE_EH_CLIENT_SECRET":    bad("ehBadClientSecret-0123456789"),
			"AZURE_EH_PARTITION_KEY":    bad("random"),
			"AZURE_EH_PARTITION_ID":     bad("-1"),
			"AZURE_EH_TRANSPORT":        bad("tcp"),
		},
		anyValue: map[string]string{
			"AZURE_EH_CONSUMER_GROUP":      anyValueIgnored,
			"AZURE_EH_STORAGE_ACCOUNT":     anyValueIgnored,
			"AZURE_EH_STORAGE_ACCOUNT_KEY": anyValueIgnored,
			"AZURE_EH_CONTAINER_NAME":      anyValueIgnored,
		},
	},
	{
		name: "azure-blob", pkg: "services/azure-blob", open: openBlob, shares: shareAzurite, batch: 200, dupFree: true,
		env: map[string]string{"BATCH_MAX_WAIT": "200ms"},
		badVars: map[string]badValue{
			"AZURE_BLOB_STORAGE_ACCOUNT":     bad("Not An Account!"),
			"AZURE_BLOB_STORAGE_ACCOUNT_KEY": bad("blobBadKey-not-base64-!!!"),
			"AZURE_BLOB_CONTAINER_NAME":      bad("Bad_Container"),
			"AZURE_BLOB_CONNECTIONSTRING":    bad("AccountName=x;blobBadConn-0123456789"),
			"AZURE_BLOB_ENDPOINT":            bad("ftp://blob.example.com"),
			"AZURE_BLOB_TENANT_ID":           bad("not a tenant!"),
			"AZURE_BLOB_CLIENT_ID":           bad("not a client!"),
			"AZURE_BLOB_CLIENT_SECRET":       bad("blobBadClientSecret-0123456789"),
			"AZURE_BLOB_USE_ENTRA":           bad("maybe"),
			"AZURE_BLOB_CREATE_CONTAINER":    bad("maybe"),
			"AZURE_BLOB_UPLOAD_CONCURRENCY":  bad("0"),
			"AZURE_BLOB_OBJECT_MODE":         bad("folder"),
			"AZURE_BLOB_GZIP":                bad("maybe"),
			"AZURE_BLOB_PREFIX":              bad(strings.Repeat("p", 1025)),
			"AZURE_BLOB_KEY_TEMPLATE":        bad("{device}/{nosuch}"),
		},
	},
	{
		// Message mode: Azure Blob has no payload limit in either mode.
		name: "azure-blob-message", pkg: "services/azure-blob", open: openBlob, shares: shareAzurite, batch: 200, dupFree: true,
		env:  map[string]string{"BATCH_MAX_WAIT": "200ms", "AZURE_BLOB_OBJECT_MODE": "message"},
		only: []string{"bytes", "crash", "toolbox"},
	},
	{
		name: "gcp-pubsub", pkg: "services/gcp-pubsub", open: openPubSub, shares: sharePubSub, batch: 200,
		limitEnv: map[string]string{"GCP_PUBSUB_MAX_MESSAGE_BYTES": "65536"}, limit: fixedLimit(65536),
		badVars: map[string]badValue{
			"GCP_PUBSUB_TOPIC":             bad("projects//topics/"),
			"GCP_PUBSUB_ORDERING_KEY":      bad("random"),
			"GCP_PUBSUB_MAX_MESSAGE_BYTES": bad("20MB"),
			"PUBSUB_EMULATOR_HOST":         bad("not a host:port"),
			"GCP_PUBSUB_PROJECT_ID":        bad("Not A Project!"),
			// The type is read with the key fields.
			"GCP_PUBSUB_TYPE":             bad("authorized_user").with("GCP_PUBSUB_CLIENT_EMAIL", "faults@test-project.iam.gserviceaccount.com"),
			"GCP_PUBSUB_CLIENT_EMAIL":     bad("not an email"),
			"GCP_PUBSUB_PRIVATE_KEY":      bad("psBadKey-not-a-pem-0123456789"),
			"GCP_PUBSUB_CREDENTIALS_JSON": bad("{psBadJSON-0123456789"),
			// The key fields win over the file; without them it is read.
			"GOOGLE_APPLICATION_CREDENTIALS": bad("/no/such/credentials.json").without("GCP_PUBSUB_CLIENT_EMAIL", "GCP_PUBSUB_PRIVATE_KEY"),
		},
		anyValue: map[string]string{"GCP_PUBSUB_SUBSCRIPTION": anyValueIgnored},
	},
	{
		name: "gcp-storage", pkg: "services/gcp-storage", open: openGCS, shares: shareGCS, batch: 200, dupFree: true,
		env:      map[string]string{"BATCH_MAX_WAIT": "200ms"},
		limitEnv: map[string]string{"GCP_STORAGE_MAX_MESSAGE_BYTES": "65536"}, limit: fixedLimit(65536),
		badVars: map[string]badValue{
			"GCP_STORAGE_BUCKET":             bad("Bad Bucket!"),
			"GCP_STORAGE_MAX_MESSAGE_BYTES":  bad("-5"),
			"STORAGE_EMULATOR_HOST":          bad("not a host:port"),
			"GCP_STORAGE_OBJECT_MODE":        bad("folder"),
			"GCP_STORAGE_GZIP":               bad("maybe"),
			"GCP_STORAGE_PREFIX":             bad(strings.Repeat("p", 1025)),
			"GCP_STORAGE_KEY_TEMPLATE":       bad("{device}/{nosuch}"),
			"GCP_STORAGE_TYPE":               bad("authorized_user").with("GCP_STORAGE_CLIENT_EMAIL", "faults@test-project.iam.gserviceaccount.com"),
			"GCP_STORAGE_CLIENT_EMAIL":       bad("not an email"),
			"GCP_STORAGE_PRIVATE_KEY":        bad("gsBadKey-not-a-pem-0123456789"),
			"GCP_STORAGE_CREDENTIALS_JSON":   bad("{gsBadJSON-0123456789"),
			"GOOGLE_APPLICATION_CREDENTIALS": bad("/no/such/credentials.json").without("GCP_STORAGE_CLIENT_EMAIL", "GCP_STORAGE_PRIVATE_KEY"),
		},
		anyValue: map[string]string{"GCP_STORAGE_PROJECT_ID": anyValueIgnored},
	},
	{
		// Message mode: GCP_STORAGE_MAX_MESSAGE_BYTES bounds the payload in
		// either mode.
		name: "gcp-storage-message", pkg: "services/gcp-storage", open: openGCS, shares: shareGCS, batch: 200, dupFree: true,
		env:      map[string]string{"BATCH_MAX_WAIT": "200ms", "GCP_STORAGE_OBJECT_MODE": "message"},
		limitEnv: map[string]string{"GCP_STORAGE_MAX_MESSAGE_BYTES": "65536"}, limit: fixedLimit(65536),
		only: []string{"bytes", "crash", "toolbox"},
	},
}

// fixedLimit is a limit the target's limitEnv sets.
func fixedLimit(n int) func(*rig) int { return func(*rig) int { return n } }

// badValue is an invalid setting: a value, with some other variables unset
// or set so that the value alone is the mistake.
type badValue struct {
	v     string
	unset []string
	set   map[string]string
}

func bad(v string) badValue { return badValue{v: v} }

func (b badValue) without(names ...string) badValue { b.unset = names; return b }

func (b badValue) with(name, value string) badValue {
	b.set = map[string]string{name: value}
	return b
}

// --- the file destination ---------------------------------------------------

type fileBackend struct {
	path, fail string

	mu sync.Mutex
	tail
	got []msg
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
	b.tail.lines(t, b.path, func(line []byte) {
		var l filesink.Line
		// A line a crash cut short is ended by the sink's next Connect and
		// does not parse: it was not delivered.
		if json.Unmarshal(line, &l) == nil {
			b.got = append(b.got, msg{ID: l.ID, Topic: l.Topic, Payload: l.Bytes()})
		}
	})
	return append([]msg(nil), b.got...)
}

// tail reads the whole lines appended to a file since its last call.
type tail struct {
	off  int64
	part []byte // the start of a line not yet ended
}

// lines calls fn with each complete line (its newline included) appended
// to path since the last call; a missing file has none.
func (tl *tail) lines(t testing.TB, path string, fn func(line []byte)) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(tl.off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		tl.off += int64(len(line))
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = append(tl.part, line...)
			tl.part = nil
			fn(line)
		} else {
			tl.part = append(tl.part, line...)
		}
		if err != nil {
			return
		}
	}
}

// --- object stores: the shared read-back -------------------------------------

// objCache keeps every object read, by key, so that each read fetches only
// what is new, and an object written again under its key (a resend) counts
// once.
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

// add decodes an object: a batch object's NDJSON lines, or a message
// object (message mode), whose body is the payload and whose metadata the
// id, topic, time and device. Anything else fails the test.
func (c *objCache) add(t testing.TB, key, tag string, body []byte, encoding string, metadata map[string]string) {
	var ms []msg
	if strings.HasSuffix(key, ".ndjson") || strings.HasSuffix(key, ".ndjson.gz") {
		lines, err := objstore.Decode(body, encoding)
		if err != nil {
			t.Fatalf("object %q: %v", key, err)
		}
		ms = make([]msg, len(lines))
		for i, l := range lines {
			ms[i] = msg{ID: l.ID, Topic: l.Topic, Device: l.Device, Payload: l.Payload}
		}
	} else {
		l, err := objstore.DecodeMetadata(metadata)
		if err != nil {
			t.Fatalf("object %q is not a batch object, nor a message object with its metadata: %v", key, err)
		}
		ms = []msg{{ID: l.ID, Topic: l.Topic, Device: l.Device, Payload: body}}
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
