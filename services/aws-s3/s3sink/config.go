package s3sink

import (
	"log/slog"
	"math"
	"net/url"

	"github.com/cloud-block/cloud-block/common/awsiot"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// prefix names the object layout variables (AWS_S3_OBJECT_MODE, ...).
const prefix = "AWS_S3"

// s3MaxPut is the largest object one PutObject may write (5 GiB).
const s3MaxPut = 5 << 30

// Vars are the service's variables: its own, the object layout's, and the
// batch defaults suited to objects (one object per minute or 4 MiB, rather
// than a request every 200 ms).
var Vars = config.Merge([]config.Var{
	{Name: "AWS_S3_BUCKET", Required: true,
		Doc: "Bucket the objects are written to. It must exist: the block checks it at start and never creates it."},
	{Name: "AWS_S3_REGION", Aliases: []string{"AWS_REGION"}, Required: true,
		Doc: "Region of the bucket, e.g. `eu-west-1` (any value for most S3-compatible stores)."},
	{Name: "AWS_S3_ACCESS_KEY",
		Doc: "Access key id. With AWS_S3_SECRET_KEY; leave both unset to use the AWS IoT credentials provider (`AWS_S3_IOT_*`) or, without it, the SDK's default credential chain (AWS_ACCESS_KEY_ID, ~/.aws and AWS_PROFILE, web identity with AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, ECS or EC2 instance role). The key needs s3:PutObject and s3:ListBucket (for the start-up check) on the bucket."},
	{Name: "AWS_S3_SECRET_KEY", Secret: true, Doc: "Secret access key of AWS_S3_ACCESS_KEY."},
	{Name: "AWS_S3_SESSION_TOKEN", Secret: true, Doc: "Session token, for temporary credentials given as AWS_S3_ACCESS_KEY and AWS_S3_SECRET_KEY."},
}, awsiot.Vars(prefix), []config.Var{
	{Name: "AWS_S3_ENDPOINT", Aliases: []string{"AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"},
		Doc: "Endpoint URL of an S3-compatible store or emulator, e.g. `http://minio:9000`. Default: AWS's endpoint for the region."},
	{Name: "AWS_S3_FORCE_PATH_STYLE",
		Doc: "`true` addresses the bucket in the path (`endpoint/bucket/key`) rather than the host name (`bucket.endpoint/key`). Default: `true` when AWS_S3_ENDPOINT is set (MinIO and most emulators need it), else `false`."},
	{Name: "AWS_S3_MAX_OBJECT_BYTES", Default: "5GiB",
		Doc: "Largest object written, at most S3's single-PUT limit of 5GiB; lower it for a store or proxy with a smaller limit. A message whose object would be larger is dead-lettered (in batch mode a payload may use this less 1KiB, kept for its line's envelope); a larger batch object is split."},
	{Name: "BATCH_MAX_MESSAGES", Default: "10000", Doc: "Most messages in one batch object."},
	{Name: "BATCH_MAX_BYTES", Default: "4MiB", Doc: "Most payload bytes in one batch object (before the NDJSON envelope and gzip)."},
	{Name: "BATCH_MAX_WAIT", Default: "60s",
		Doc: "Longest a batch waits to fill before its object is written. A backlog is written in full objects at once. In message mode a shorter wait (e.g. `1s`) lowers latency."},
}, objstore.Vars(prefix))

// Service is the aws-s3 destination.
var Service = run.Service{Name: "aws-s3", Vars: Vars, New: New}

// Config is the validated configuration of the sink.
type Config struct {
	Bucket    string
	Region    string
	AccessKey string // "" uses the SDK's default credential chain
	SecretKey string
	Token     string
	IoT       *awsiot.Provider // the AWS IoT credentials provider, when configured
	Endpoint  string           // "" is AWS's endpoint for Region
	PathStyle bool
	// MaxObject bounds every object's body.
	MaxObject int64
	Objects   objstore.Options
}

// New reads the variables; problems are collected by l.
func New(l *config.Loader, info run.Info) (sink.Sink, error) {
	return newSink(load(l, info.Device, info.Log), info), nil
}

func load(l *config.Loader, device string, log *slog.Logger) Config {
	c := Config{
		Bucket:    l.String("AWS_S3_BUCKET"),
		Region:    l.String("AWS_S3_REGION"),
		AccessKey: l.String("AWS_S3_ACCESS_KEY"),
		SecretKey: l.String("AWS_S3_SECRET_KEY"),
		Token:     l.String("AWS_S3_SESSION_TOKEN"),
		MaxObject: l.Bytes("AWS_S3_MAX_OBJECT_BYTES", 64<<10, s3MaxPut),
		Objects:   objstore.Load(l, prefix, device),
		IoT:       awsiot.Load(l, prefix, log),
	}
	if c.AccessKey != "" && l.IsSet(prefix+"_IOT_CREDENTIALS_ENDPOINT") {
		l.Fail("AWS_S3_ACCESS_KEY", c.AccessKey, "unset when "+l.SetName(prefix+"_IOT_CREDENTIALS_ENDPOINT")+" is set: the credentials come from AWS IoT or from keys, not both")
	}
	if c.Region != "" && !config.ValidAWSRegion(c.Region) {
		l.Fail("AWS_S3_REGION", c.Region, config.AWSRegionAllowed)
	}
	if c.Bucket != "" && !validBucket(c.Bucket) {
		l.Fail("AWS_S3_BUCKET", c.Bucket, "a bucket name of 3 to 255 letters, digits, '.', '-' or '_' (not a URL or a path)")
	}
	switch {
	case c.AccessKey != "" && c.SecretKey == "":
		l.Require("AWS_S3_SECRET_KEY", "required when AWS_S3_ACCESS_KEY is set")
	case c.AccessKey == "" && c.SecretKey != "":
		l.Require("AWS_S3_ACCESS_KEY", "required when AWS_S3_SECRET_KEY is set")
	case c.AccessKey == "" && c.Token != "":
		l.Require("AWS_S3_ACCESS_KEY", "required with AWS_S3_SECRET_KEY when AWS_S3_SESSION_TOKEN is set")
	}
	if u := l.URL("AWS_S3_ENDPOINT", "https", "http"); u != nil {
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			l.Fail("AWS_S3_ENDPOINT", u.String(), "a URL without a path or query, such as https://host:port (the bucket goes in AWS_S3_BUCKET)")
		}
		c.Endpoint = (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
	}
	c.PathStyle = c.Endpoint != ""
	if l.IsSet("AWS_S3_FORCE_PATH_STYLE") {
		c.PathStyle = l.Bool("AWS_S3_FORCE_PATH_STYLE")
	}
	return c
}

// validBucket accepts current S3 bucket names and the legacy ones (upper
// case, '_', up to 255 characters) that older us-east-1 buckets still have.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 255 {
		return false
	}
	for _, c := range []byte(b) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// toInt bounds a byte count for sink.Limits, whose ints are 32 bits on armv7.
func toInt(n int64) int { return int(min(n, int64(math.MaxInt))) }
