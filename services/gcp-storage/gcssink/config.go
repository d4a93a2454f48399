// Package gcssink is the Google Cloud Storage destination: batches of
// messages become objects in a bucket, laid out by common/objstore (the same
// NDJSON objects and keys as the S3 and Azure Blob destinations).
package gcssink

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/gcpcreds"
	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Prefix of the service's variables.
const prefix = "GCP_STORAGE"

// Vars are the service's variables. An object a minute (or per 4 MiB)
// instead of common's 200 ms batches: each object is a request and a stored
// file, billed and listed one by one.
var Vars = config.Merge(
	[]config.Var{
		{Name: "BATCH_MAX_MESSAGES", Default: "10000", Doc: "Most messages in one batch (one object in batch mode)."},
		{Name: "BATCH_MAX_BYTES", Default: "4MiB", Doc: "Most payload bytes in one batch (one object in batch mode, before the NDJSON envelope and gzip)."},
		{Name: "BATCH_MAX_WAIT", Default: "60s",
			Doc: "Longest a batch waits to fill before its object is written. A backlog is written in full objects at once. In message mode a shorter wait (e.g. `1s`) lowers latency."},
		{Name: prefix + "_BUCKET", Required: true,
			Doc: "Bucket the objects are written to. It must exist; the service account needs the Storage Object Creator role on it (`roles/storage.objectCreator`)."},
		{Name: prefix + "_MAX_MESSAGE_BYTES", Default: "0",
			Doc: "Largest payload written; larger ones are dead-lettered. 0: no limit of the destination's own (GCS takes objects up to 5 TiB; the spool's, BUFFER_MAX_BYTES/4, applies)."},
		{Name: "STORAGE_EMULATOR_HOST",
			Doc: "host:port (or URL) of a Cloud Storage emulator such as fake-gcs-server, as the Google client libraries read it: plain HTTP unless a scheme says otherwise, no credentials."},
		{Name: prefix + "_ENDPOINT",
			Doc: "`https://host[:port]` of the Cloud Storage JSON API instead of `https://storage.googleapis.com`, reached with the credentials: a regional endpoint or a Private Service Connect one (the API's path `/storage/v1/` is added). Not with STORAGE_EMULATOR_HOST."},
	},
	objstore.Vars(prefix),
	gcpcreds.Vars(prefix),
	[]config.Var{{Name: prefix + "_PROJECT_ID",
		Doc: "Accepted for compatibility with the original block; writing objects needs no project (bucket names are global)."}},
)

// Service is the gcp-storage destination.
var Service = run.Service{Name: "gcp-storage", Vars: Vars, New: New}

// bucketName is Cloud Storage's rule for a bucket name (the length of a name
// without dots is checked apart).
var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$`)

// Config is the validated configuration.
type Config struct {
	bucket     string
	objects    objstore.Options
	maxMessage int
	emulator   string
	endpoint   string // the API's base URL, ending in /storage/v1/
	creds      gcpcreds.Credentials
}

// New reads the variables and returns the unconnected sink.
func New(l *config.Loader, info run.Info) (sink.Sink, error) {
	cfg := load(l, info.Device)
	if l.Err() != nil {
		return nil, l.Err()
	}
	if cfg.emulator != "" {
		info.Log.Info("writing to a Cloud Storage emulator without credentials", "emulator", cfg.emulator, "bucket", cfg.bucket)
	} else {
		info.Log.Info("writing to Cloud Storage", "bucket", cfg.bucket, "credentials", cfg.creds.Source, "identity", cfg.creds.Identity,
			"endpoint", cfg.endpoint, "mode", string(cfg.objects.Mode))
	}
	return newSink(cfg, dialRaw), nil
}

func load(l *config.Loader, device string) Config {
	c := Config{
		objects:    objstore.Load(l, prefix, device),
		creds:      gcpcreds.Load(l, prefix),
		maxMessage: int(l.Bytes(prefix+"_MAX_MESSAGE_BYTES", 0, 1<<30)),
		emulator:   l.HostPort("STORAGE_EMULATOR_HOST", "http", "https"),
	}
	endpointVar := prefix + "_ENDPOINT"
	if ep := strings.TrimSpace(l.String(endpointVar)); ep != "" {
		u, err := url.Parse(ep)
		switch {
		case err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || (u.Path != "" && u.Path != "/"):
			l.Fail(endpointVar, ep, "an https://host[:port] URL without a path (the API's /storage/v1/ is added)")
		case c.emulator != "":
			l.Fail(endpointVar, ep, "unset when STORAGE_EMULATOR_HOST is set: an emulator is reached without credentials, an endpoint with them")
		default:
			c.endpoint = "https://" + u.Host + "/storage/v1/"
		}
	}
	bucketVar := prefix + "_BUCKET"
	c.bucket = strings.TrimSpace(l.String(bucketVar))
	if c.bucket != "" && (!bucketName.MatchString(c.bucket) || len(c.bucket) > 63 && !strings.Contains(c.bucket, ".")) {
		l.Fail(bucketVar, c.bucket, "a bucket name: 3 to 63 lower-case letters, digits, - _ and . (up to 222 with dots), starting and ending with a letter or digit")
	}
	return c
}
