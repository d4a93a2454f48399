package s3sink

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/harness"
)

// startVersity runs versitygw, a real S3 gateway that checks SigV4
// signatures; the test is skipped, naming `make tools`, when it is not built.
func startVersity(t *testing.T) store {
	return storeOf(emulators.StartVersity(t).S3Conn)
}

func TestConformanceVersitygw(t *testing.T) {
	conformance(t, startVersity(t))
}

// versitygw checks signatures: a wrong secret is an authentication error.
func TestWrongSecretVersitygw(t *testing.T) {
	st := startVersity(t)
	bucket := st.createBucket(t, "auth")
	err := loadSink(t, st.env(bucket, map[string]string{"AWS_S3_SECRET_KEY": "wrong-secret"})).Connect(context.Background())
	if !sink.IsAuth(err) || sink.IsPermanent(err) {
		t.Fatalf("Connect with a wrong secret: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("the secret is in the error: %v", err)
	}
	t.Logf("wrong secret: %v", err)
}

func TestE2EVersitygw(t *testing.T) {
	st := startVersity(t)
	e := newE2E(t, st, map[string]string{"AWS_S3_GZIP": "true"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", 200)
	odd := oddPayloads()
	pub.Publish(0, 1000, 0)
	for _, p := range odd {
		pub.PublishRaw("cloud-input", p, false)
	}
	pub.Publish(1000, 2000, 0)
	tally, dupIDs := e.waitAll(t, 2000, 200, odd, time.Minute)
	t.Logf("versitygw: %s; %d duplicate ids", tally, dupIDs)
	if tally.Duplicates != 0 || dupIDs != 0 {
		t.Errorf("duplicates: %s, %d duplicate ids", tally, dupIDs)
	}
}
