package s3sink

import (
	"context"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/testenv/emulators"
)

// startVersity runs versitygw, a real S3 gateway that checks SigV4
// signatures; the test is skipped, naming `make tools`, when it is not built.
func startVersity(t *testing.T) store {
	return storeOf(emulators.StartVersity(t).S3Conn)
}

func TestConformanceVersitygw(t *testing.T) {
	conformance(t, startVersity(t))
}

func TestMessageMetadataVersitygw(t *testing.T) {
	checkMessageMetadata(t, startVersity(t))
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
