package s3sink

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
	"github.com/cloud-block/cloud-block/testenv/iotfake"
)

// Through the real SDK to gofakes3 behind the SigV4 check of the AWS IoT
// fake, with credentials that last 3 s: writes keep working across several
// refreshes, fail naming the endpoint once the credentials expire during an
// outage of the endpoint, and work again once it is back. Keys and the
// AWS IoT provider together are refused.
func TestIOTCredentials(t *testing.T) {
	iot := iotfake.New(t, "s3-role", 3*time.Second)
	faker := gofakes3.New(s3mem.New()).Server()
	raw := httptest.NewServer(faker) // set-up only: any key
	defer raw.Close()
	var rejected atomic.Int32
	front := httptest.NewServer(iot.Verify(faker, iotfake.XML, func(string) { rejected.Add(1) }))
	defer front.Close()
	setup := store{Endpoint: raw.URL, Region: "us-east-1", Access: "setup", Secret: "setup"}
	bucket := setup.createBucket(t, "iot")
	cert, key := iot.DeviceCert(t, "sensor-1")
	env := map[string]string{
		"AWS_S3_BUCKET": bucket, "AWS_S3_REGION": "us-east-1", "AWS_S3_ENDPOINT": front.URL,
		"AWS_IOT_CREDENTIALS_ENDPOINT": iot.URL, "AWS_IOT_ROLE_ALIAS": "s3-role", "AWS_IOT_THING_NAME": "sensor-1",
		"AWS_IOT_CERT": cert, "AWS_IOT_KEY": key, "AWS_IOT_CA": iot.CA,
	}
	if _, err := sinktest.LoadSink(Service, run.Info{Device: "dev-1"}, sinktest.With(env, map[string]string{"AWS_S3_ACCESS_KEY": "AKIAX", "AWS_S3_SECRET_KEY": "s3cr3t"})); err == nil ||
		!strings.Contains(err.Error(), `AWS_S3_ACCESS_KEY="AKIAX" is invalid: want unset when AWS_IOT_CREDENTIALS_ENDPOINT is set`) {
		t.Errorf("keys and AWS IoT together: %v", err)
	}
	s := sinktest.Connected(t, loadSink(t, env))
	ctx := context.Background()
	fs, err := s.Check(ctx, sink.CheckOptions{})
	if err != nil || !strings.HasSuffix(fs[0].Text, "credentials from AWS IoT credentials provider "+iot.URL+"/role-aliases/s3-role/credentials (role alias s3-role, thing sensor-1)") {
		t.Errorf("check: %v %+v", err, fs)
	}
	deadline := time.Now().Add(30 * time.Second)
	n := 0
	for iot.Fetches() < 4 {
		n++
		if err := s.WriteBatch(ctx, textMessages(2, 10)); err != nil {
			t.Fatalf("write %d (fetch %d): %v", n, iot.Fetches(), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d fetches in 30 s", iot.Fetches())
		}
		time.Sleep(100 * time.Millisecond) // a device's pace, not synchronisation
	}
	if r := rejected.Load(); r != 0 {
		t.Errorf("%d requests refused by the SigV4 check while refreshing", r)
	}
	iot.SetDown(true)
	deadline = time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		err = s.WriteBatch(ctx, textMessages(2, 10))
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil || !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+iot.URL) || sink.IsPermanent(err) {
		t.Fatalf("write during the endpoint's outage once the credentials expired: %v", err)
	}
	iot.SetDown(false)
	if err := s.WriteBatch(ctx, textMessages(2, 10)); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// Connect's HeadBucket fetches credentials: a refusal is an AuthError
// (check: denied), an endpoint out of reach is not (check: unreachable).
func TestIOTConnectErrors(t *testing.T) {
	iot := iotfake.New(t, "s3-role", time.Hour)
	cert, key := iot.DeviceCert(t, "sensor-1")
	env := map[string]string{
		"AWS_S3_BUCKET": "bkt", "AWS_S3_REGION": "us-east-1", "AWS_S3_ENDPOINT": "http://127.0.0.1:1",
		"AWS_IOT_CREDENTIALS_ENDPOINT": iot.URL, "AWS_IOT_ROLE_ALIAS": "other-role",
		"AWS_IOT_CERT": cert, "AWS_IOT_KEY": key, "AWS_IOT_CA": iot.CA,
	}
	err := loadSink(t, env).Connect(context.Background())
	if !sink.IsAuth(err) || !strings.Contains(err.Error(), "HTTP 404: Role alias does not exist") {
		t.Errorf("unknown role alias: %v (auth %v)", err, sink.IsAuth(err))
	}
	iot.SetDown(true)
	env["AWS_IOT_ROLE_ALIAS"] = "s3-role"
	err = loadSink(t, env).Connect(context.Background())
	if err == nil || sink.IsAuth(err) || !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+iot.URL) {
		t.Errorf("endpoint down: %v (auth %v)", err, sink.IsAuth(err))
	}
}
