package sqssink

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/testenv/iotfake"
	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// Through the real SDK to sqsfake behind the SigV4 check of the AWS IoT
// fake, with credentials that last 3 s: sends keep working across several
// refreshes; with the endpoint away they work until the credentials
// expire, then fail naming the endpoint (retryable, no secret shown), and
// work again once it is back.
func TestIOTCredentialsRefresh(t *testing.T) {
	iot := iotfake.New(t, "sqs-role", 3*time.Second)
	fake := sqsfake.New()
	raw := httptest.NewServer(fake) // set-up only, unsigned
	defer raw.Close()
	var rejected atomic.Int32
	front := httptest.NewServer(iot.Verify(fake, iotfake.JSON, func(string) { rejected.Add(1) }))
	defer front.Close()
	queue, _ := sqsfake.CreateQueue(t, sqsfake.Client(raw.URL, func(*sqs.Options) {}), "iot", nil)
	cert, key := iot.DeviceCert(t, "sensor-1")
	s := mustLoad(t, map[string]string{
		"AWS_SQS_QUEUE_NAME": queue, "AWS_SQS_REGION": "us-east-1", "AWS_SQS_ENDPOINT": front.URL,
		"AWS_IOT_CREDENTIALS_ENDPOINT": iot.URL, "AWS_IOT_ROLE_ALIAS": "sqs-role", "AWS_IOT_THING_NAME": "sensor-1",
		"AWS_IOT_CERT": cert, "AWS_IOT_KEY": key, "AWS_IOT_CA": iot.CA,
	}, testDevice)
	ctx := context.Background()
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	n := 0
	send := func() error {
		n++
		return s.WriteBatch(ctx, []sink.Message{{ID: fmt.Sprintf("m%d", n), Topic: "cloud-input", Received: time.Now(), Payload: []byte("x")}})
	}
	deadline := time.Now().Add(30 * time.Second)
	for iot.Fetches() < 4 {
		if err := send(); err != nil {
			t.Fatalf("send %d (fetch %d): %v", n, iot.Fetches(), err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d fetches in 30 s", iot.Fetches())
		}
		time.Sleep(100 * time.Millisecond) // a device's pace, not synchronisation
	}
	if r := rejected.Load(); r != 0 {
		t.Errorf("%d requests refused by the SigV4 check while refreshing", r)
	}
	t.Logf("%d sends over %d fetches of 3 s credentials", n, iot.Fetches())

	iot.SetDown(true)
	var err error
	deadline = time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		err = send()
		time.Sleep(100 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("sends still work 10 s into the endpoint's outage with 3 s credentials")
	}
	if !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+iot.URL+"/role-aliases/sqs-role/credentials") || sink.IsAuth(err) || sink.IsPermanent(err) {
		t.Errorf("error during the outage: %v (auth %v): want a retryable error naming the endpoint", err, sink.IsAuth(err))
	}
	for _, secret := range iot.Secrets() {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("a secret in the error: %v", err)
		}
	}
	iot.SetDown(false)
	if err := send(); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// Connect fetches credentials at start: a refusal is an AuthError (check:
// denied), an endpoint out of reach is not (check: unreachable).
func TestIOTConnectErrors(t *testing.T) {
	iot := iotfake.New(t, "sqs-role", time.Hour)
	cert, key := iot.DeviceCert(t, "sensor-1")
	env := map[string]string{
		"AWS_SQS_QUEUE_NAME": "https://sqs.us-east-1.amazonaws.com/000000000000/q", "AWS_SQS_ENDPOINT": "http://127.0.0.1:1",
		"AWS_IOT_CREDENTIALS_ENDPOINT": iot.URL, "AWS_IOT_ROLE_ALIAS": "other-role",
		"AWS_IOT_CERT": cert, "AWS_IOT_KEY": key, "AWS_IOT_CA": iot.CA,
	}
	err := mustLoad(t, env, testDevice).Connect(context.Background())
	if !sink.IsAuth(err) || !strings.Contains(err.Error(), "HTTP 404: Role alias does not exist") {
		t.Errorf("unknown role alias: %v (auth %v)", err, sink.IsAuth(err))
	}
	iot.SetDown(true)
	env["AWS_IOT_ROLE_ALIAS"] = "sqs-role"
	err = mustLoad(t, env, testDevice).Connect(context.Background())
	if err == nil || sink.IsAuth(err) || !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+iot.URL) {
		t.Errorf("endpoint down: %v (auth %v)", err, sink.IsAuth(err))
	}
}
