package gcssink

import (
	"context"
	"net/http"
	"regexp"
	"testing"

	"google.golang.org/api/googleapi"

	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

var (
	_ sink.Checker = (*Sink)(nil)
	_ bucketReader = storageInserter{}
)

func TestCheck(t *testing.T) {
	forbidden := &googleapi.Error{Code: http.StatusForbidden, Message: "does not have storage.buckets.get access"}
	for _, c := range []struct {
		name                string
		attrsErr, deleteErr error
		granted             []string
		write               bool
		want                []string // patterns of the findings, "warn: " marking warnings
		auth, fails         bool
		left                int // objects left
	}{
		{name: "readable", want: []string{`bucket bkt answered Get Bucket`}},
		// The Storage Object Creator role: no buckets.get, but create.
		{name: "object creator", attrsErr: forbidden, granted: []string{permCreate},
			want: []string{`bucket bkt: the credentials may create objects \(testIamPermissions grants storage\.objects\.create\); they may not read the bucket \(Get Bucket\), which the block does not need`}},
		{name: "no role", attrsErr: forbidden, auth: true, fails: true},
		{name: "bad key", attrsErr: &googleapi.Error{Code: http.StatusUnauthorized}, auth: true, fails: true},
		{name: "missing bucket", attrsErr: &googleapi.Error{Code: http.StatusNotFound}, fails: true},
		{name: "write", write: true, want: []string{`bucket bkt .*`, `wrote and deleted test object in/cloud-block-check/dev-1-\d{8}T\d{6}\.\d{9}Z\.txt`}},
		{name: "write, no delete", write: true, attrsErr: forbidden, granted: []string{permCreate}, deleteErr: forbidden, left: 1,
			want: []string{`bucket bkt: the credentials may create .*`,
				`warn: wrote test object in/cloud-block-check/dev-1-.*\.txt but could not delete it \(storage\.objects\.delete, which the block and the Storage Object Creator role do not have\): delete it by hand: authentication: gcs: deleting .* was refused: .*`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeBucket()
			f.attrsErr, f.deleteErr, f.granted = c.attrsErr, c.deleteErr, c.granted
			s := fakeSink(t, f, map[string]string{"GCP_STORAGE_PREFIX": "in"})
			if err := s.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			// First, who the block is to Google (the fake's: no credentials).
			want := c.want
			if want != nil {
				want = append([]string{`identity: the platform's default credentials`}, want...)
			}
			sinktest.WantCheck(t, s, c.write, c.fails, c.auth, want)
			if n := len(f.keys()); n != c.left {
				t.Errorf("%d objects left, want %d", n, c.left)
			}
		})
	}
}

// Against the emulator: the bucket read, the test object written and
// deleted; a missing bucket; a stopped emulator.
func TestCheckEmulator(t *testing.T) {
	g := startGCS(t)
	g.CreateBucket(t, "checked")
	ctx := context.Background()
	s := envSink(t, map[string]string{"GCP_STORAGE_BUCKET": "checked", "STORAGE_EMULATOR_HOST": g.Host, "GCP_STORAGE_PREFIX": "in/"})
	if err := s.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	fs, err := s.Check(ctx, sink.CheckOptions{Write: true})
	if err != nil || len(fs) != 2 || fs[0].Warn || fs[1].Warn {
		t.Fatalf("check: %+v, %v", fs, err)
	}
	if objs := listObjects(t, g, "checked"); len(objs) != 0 {
		t.Errorf("left behind: %+v", objs)
	}
	missing := envSink(t, map[string]string{"GCP_STORAGE_BUCKET": "missing", "STORAGE_EMULATOR_HOST": g.Host})
	if err := missing.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := missing.Check(ctx, sink.CheckOptions{}); err == nil || sink.IsAuth(err) || !regexp.MustCompile(`bucket missing not found`).MatchString(err.Error()) {
		t.Errorf("missing bucket: %v", err)
	}
	g.Stop()
	if _, err := s.Check(ctx, sink.CheckOptions{}); err == nil || sink.IsAuth(err) {
		t.Errorf("emulator stopped: %v", err)
	}
}
