package s3sink

import (
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func TestEnvTable(t *testing.T) { sinktest.EnvTable(t, Service) }

func configErr(env map[string]string) string {
	l := config.NewLoader(sinktest.Env(env), Service.AllVars())
	New(l, run.Info{Device: "d"})
	if err := l.Err(); err != nil {
		return err.Error()
	}
	return ""
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"nothing set", map[string]string{},
			"AWS_S3_BUCKET is not set: required: Bucket the objects are written to. It must exist: the block checks it at start and never creates it.\n" +
				"AWS_S3_REGION is not set: required: Region of the bucket, e.g. `eu-west-1` (any value for most S3-compatible stores)."},
		{"secret without key", baseEnv(map[string]string{"AWS_S3_ACCESS_KEY": ""}),
			"AWS_S3_ACCESS_KEY is not set: required when AWS_S3_SECRET_KEY is set"},
		{"key without secret", baseEnv(map[string]string{"AWS_S3_SECRET_KEY": ""}),
			"AWS_S3_SECRET_KEY is not set: required when AWS_S3_ACCESS_KEY is set"},
		{"token without keys", baseEnv(map[string]string{"AWS_S3_ACCESS_KEY": "", "AWS_S3_SECRET_KEY": "", "AWS_S3_SESSION_TOKEN": "tok"}),
			"AWS_S3_ACCESS_KEY is not set: required with AWS_S3_SECRET_KEY when AWS_S3_SESSION_TOKEN is set"},
		{"bucket as URL", baseEnv(map[string]string{"AWS_S3_BUCKET": "s3://my-bucket"}),
			`AWS_S3_BUCKET="s3://my-bucket" is invalid: want a bucket name of 3 to 255 letters, digits, '.', '-' or '_' (not a URL or a path)`},
		{"endpoint scheme", baseEnv(map[string]string{"AWS_S3_ENDPOINT": "minio:9000"}),
			`AWS_S3_ENDPOINT="minio:9000" is invalid: want a URL such as https://host:port with scheme https, http`},
		{"endpoint with bucket path", baseEnv(map[string]string{"AWS_ENDPOINT_URL": "http://minio:9000/bucket"}),
			`AWS_ENDPOINT_URL="http://minio:9000/bucket" is invalid: want a URL without a path or query, such as https://host:port (the bucket goes in AWS_S3_BUCKET)`},
		{"path style", baseEnv(map[string]string{"AWS_S3_FORCE_PATH_STYLE": "sometimes"}),
			`AWS_S3_FORCE_PATH_STYLE="sometimes" is invalid: want true or false`},
		{"object size", baseEnv(map[string]string{"AWS_S3_MAX_OBJECT_BYTES": "6GiB"}),
			`AWS_S3_MAX_OBJECT_BYTES="6GiB" is invalid: want a size such as 262144, 256KiB or 64MiB, from 64KiB to 5GiB`},
		{"gzip in message mode", baseEnv(map[string]string{"AWS_S3_OBJECT_MODE": "message", "AWS_S3_GZIP": "true"}),
			`AWS_S3_GZIP="true" is invalid: want false when AWS_S3_OBJECT_MODE is message, which stores each payload unchanged`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := configErr(tc.env); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestSecretNeverInErrors(t *testing.T) {
	got := configErr(baseEnv(map[string]string{"AWS_S3_ACCESS_KEY": "", "AWS_S3_SECRET_KEY": "super-secret-value"}))
	if got == "" || strings.Contains(got, "super-secret-value") {
		t.Errorf("error %q", got)
	}
}

func TestConfigDefaultsAndAliases(t *testing.T) {
	s := loadSink(t, baseEnv(nil))
	c := s.cfg
	if c.Endpoint != "" || c.PathStyle || c.MaxObject != 5<<30 || c.Objects.Mode != objstore.Batch || c.Objects.Gzip {
		t.Errorf("defaults: %+v", c)
	}
	if lim := s.Limits(); !lim.StableBatches || lim.MaxMessageBytes <= 0 {
		t.Errorf("limits %+v", lim)
	}

	// The SDK's own variables keep working; a custom endpoint defaults to
	// path-style addressing, and AWS_S3_ENDPOINT wins over them.
	s = loadSink(t, baseEnv(map[string]string{"AWS_S3_REGION": "", "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"}))
	if s.cfg.Region != "eu-west-1" || s.cfg.Endpoint != "http://127.0.0.1:9000" || !s.cfg.PathStyle {
		t.Errorf("aliases: %+v", s.cfg)
	}
	s = loadSink(t, baseEnv(map[string]string{"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2", "AWS_S3_FORCE_PATH_STYLE": "false"}))
	if s.cfg.Endpoint != "http://b:2" || s.cfg.PathStyle {
		t.Errorf("precedence: %+v", s.cfg)
	}
	s = loadSink(t, baseEnv(map[string]string{"AWS_S3_ENDPOINT": "https://s3.example:8443", "AWS_ENDPOINT_URL_S3": "http://b:2"}))
	if s.cfg.Endpoint != "https://s3.example:8443" {
		t.Errorf("AWS_S3_ENDPOINT should win: %+v", s.cfg)
	}

	// Message mode keys name single messages: no need for exact resends.
	s = loadSink(t, baseEnv(map[string]string{"AWS_S3_OBJECT_MODE": "message", "AWS_S3_MAX_OBJECT_BYTES": "1MiB"}))
	if lim := s.Limits(); lim.StableBatches || lim.MaxMessageBytes != 1<<20 {
		t.Errorf("message mode limits %+v", lim)
	}

	// The batch defaults suit objects.
	vars := map[string]string{}
	for _, v := range Service.AllVars() {
		vars[v.Name] = v.Default
	}
	if vars["BATCH_MAX_WAIT"] != "60s" || vars["BATCH_MAX_BYTES"] != "4MiB" || vars["BATCH_MAX_MESSAGES"] != "10000" {
		t.Errorf("batch defaults %v %v %v", vars["BATCH_MAX_WAIT"], vars["BATCH_MAX_BYTES"], vars["BATCH_MAX_MESSAGES"])
	}
}
