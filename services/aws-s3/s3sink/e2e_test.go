package s3sink

// End-to-end tests through the real binary: Mosquitto -> aws-s3 -> an S3
// emulator, read back with the SDK and compared byte for byte.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

type e2eEnv struct {
	st     store
	bucket string
	mode   objstore.Mode
	broker *harness.Mosquitto
	block  *harness.Block
}

func newE2E(t *testing.T, st store, overrides map[string]string) *e2eEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin := harness.Build(t, "services/aws-s3")
	e := &e2eEnv{st: st, bucket: st.createBucket(t, "e2e"), mode: objstore.Mode(overrides["AWS_S3_OBJECT_MODE"])}
	if e.mode == "" {
		e.mode = objstore.Batch
	}
	e.broker = harness.StartMosquitto(t, harness.MosquittoOptions{})
	env := st.env(e.bucket, map[string]string{"BATCH_MAX_WAIT": "200ms"})
	for k, v := range overrides {
		env[k] = v
	}
	e.block = harness.NewBlock(t, bin, e.broker, env)
	return e
}

// delivered reads every object back: payloads by id, and how many ids were
// written more than once (in different objects).
func (e *e2eEnv) delivered(t *testing.T) (map[string][]byte, int) {
	return payloads(t, e.mode, e.st.objects(t, e.bucket))
}

func values(m map[string][]byte) [][]byte {
	out := make([][]byte, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}

// waitAll waits until messages 0..n-1 of size were all delivered, plus the
// extra payloads (compared as a multiset), and returns the tally.
func (e *e2eEnv) waitAll(t *testing.T, n, size int, extra [][]byte, timeout time.Duration) (harness.Tally, int) {
	t.Helper()
	var tally harness.Tally
	var dupIDs int
	first := true
	err := procs.WaitFor(context.Background(), timeout, func() error {
		if !first {
			time.Sleep(300 * time.Millisecond)
		}
		first = false
		got, dups := e.delivered(t)
		dupIDs = dups
		var numbered [][]byte
		var others [][]byte
		for _, p := range got {
			if harness.Index(p) >= 0 {
				numbered = append(numbered, p)
			} else {
				others = append(others, p)
			}
		}
		tally = harness.Count(n, size, numbered)
		if tally.Lost > 0 {
			return fmt.Errorf("%s; missing e.g. %v", tally, tally.Missing)
		}
		if missing := missingPayloads(extra, others); missing != "" {
			return fmt.Errorf("extra payloads: %s", missing)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("not everything delivered: %v", err)
	}
	if tally.Corrupt > 0 {
		t.Fatalf("corrupt deliveries: %s", tally)
	}
	return tally, dupIDs
}

// missingPayloads describes the payloads of want not found in got.
func missingPayloads(want, got [][]byte) string {
	used := make([]bool, len(got))
	var miss []string
	for _, w := range want {
		found := false
		for i, g := range got {
			if !used[i] && bytes.Equal(w, g) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			miss = append(miss, fmt.Sprintf("%d bytes", len(w)))
		}
	}
	return strings.Join(miss, ", ")
}

// oddPayloads are the payloads every e2e test sends besides numbered ones:
// every byte value, invalid UTF-8, empty, JSON, multi-line text and a large
// binary payload.
func oddPayloads() [][]byte {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	large := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(7, 9))
	for i := range large {
		large[i] = byte(r.Uint32())
	}
	return [][]byte{all, {0xff, 0xfe, 0x00}, {}, []byte(`{"sensor":"t1","v":21.5}`), []byte("line1\nline2\r\n"), large}
}

func TestE2EBatchByteExact(t *testing.T) {
	for _, gz := range []string{"false", "true"} {
		t.Run("gzip="+gz, func(t *testing.T) {
			_, st := gofakes3Store(t)
			e := newE2E(t, st, map[string]string{"AWS_S3_GZIP": gz})
			e.block.Start()
			pub := harness.NewPublisher(t, e.broker, "cloud-input", 200)
			odd := oddPayloads()
			pub.Publish(0, 1000, 0)
			for _, p := range odd {
				pub.PublishRaw("cloud-input", p, false)
			}
			pub.Publish(1000, 2000, 0)
			tally, dupIDs := e.waitAll(t, 2000, 200, odd, time.Minute)
			t.Logf("%s; %d duplicate ids", tally, dupIDs)
			if tally.Duplicates != 0 || dupIDs != 0 {
				t.Errorf("duplicates without any fault: %s, %d duplicate ids", tally, dupIDs)
			}
			e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
			if code, body := e.block.Ready(); code != 200 {
				t.Errorf("/ready = %d %s", code, body)
			}
		})
	}
}

// Message mode: each payload is an object of its own, unchanged; the
// object size limit is exact, so a payload one byte over it is dead-lettered.
func TestE2EMessageMode(t *testing.T) {
	const max = 256 << 10
	_, st := gofakes3Store(t)
	e := newE2E(t, st, map[string]string{"AWS_S3_OBJECT_MODE": "message", "AWS_S3_MAX_OBJECT_BYTES": "256KiB"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", 100)
	odd := append(oddPayloads()[:5], bytes.Repeat([]byte{'M'}, max))
	pub.Publish(0, 300, 0)
	for _, p := range odd {
		pub.PublishRaw("cloud-input", p, false)
	}
	pub.PublishRaw("cloud-input", bytes.Repeat([]byte{'X'}, max+1), false)
	pub.Publish(300, 600, 0)
	tally, dupIDs := e.waitAll(t, 600, 100, odd, time.Minute)
	t.Logf("message mode: %s; %d duplicate ids", tally, dupIDs)
	if tally.Duplicates != 0 || dupIDs != 0 {
		t.Errorf("duplicates: %s", tally)
	}
	e.block.WaitMetric("cloudblock_dead_lettered_total", 30*time.Second, func(v float64) bool { return v == 1 })
	dead := e.block.DeadLetters(t)
	wantReason := fmt.Sprintf("payload of %d bytes exceeds the destination's limit of %d bytes", max+1, max)
	if !slices.ContainsFunc(dead, func(d harness.DeadLetter) bool { return strings.Contains(d.Reason, wantReason) }) {
		t.Errorf("dead-letter store holds no record of the oversized message: %v", dead)
	}
	if got, _ := e.delivered(t); len(got) != 600+len(odd) {
		t.Errorf("%d objects, want %d", len(got), 600+len(odd))
	}
}

// kill -9 mid-stream: nothing lost, and no message id in two objects. Each
// kill lands after the store has kept a batch's object and before the block
// heard so: the batch is sent again after the restart and must overwrite
// its object (bucket versioning counts the overwrites).
func TestE2EKill9(t *testing.T) {
	const n, size, kills = 20000, 200, 5
	_, st := gofakes3Store(t)
	// The block writes through the hook; the test reads the store directly.
	endpoint, hook := answerHook(t, st.Endpoint)
	e := newE2E(t, st, map[string]string{"BATCH_MAX_MESSAGES": "500", "AWS_S3_GZIP": "true", "AWS_S3_ENDPOINT": endpoint})
	_, err := st.client().PutBucketVersioning(context.Background(), &s3.PutBucketVersioningInput{
		Bucket:                  aws.String(e.bucket),
		VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled},
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := make(chan struct{})
	pause := func() {
		select {
		case stored <- struct{}{}:
			time.Sleep(time.Second) // the kill comes now
		default:
		}
	}
	hook.Store(&pause)
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pub.Publish(0, n, 4000)
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		select {
		case <-stored:
		case <-time.After(30 * time.Second):
			t.Fatal("no object written for 30 s")
		}
		e.block.Kill()
		e.block.Start()
	}
	hook.Store(nil)
	<-done
	tally, dupIDs := e.waitAll(t, n, size, nil, 2*time.Minute)
	objs := e.st.objects(t, e.bucket)
	versions, err := e.st.client().ListObjectVersions(context.Background(), &s3.ListObjectVersionsInput{Bucket: aws.String(e.bucket)})
	if err != nil {
		t.Fatal(err)
	}
	overwrites := len(versions.Versions) - len(objs)
	t.Logf("kill -9 x%d: %s in %d objects (%d PUTs: %d overwrites by resent batches); %d ids in more than one object; publisher republished %d",
		kills, tally, len(objs), len(versions.Versions), overwrites, dupIDs, pub.Republish.Load())
	if dupIDs != 0 {
		t.Errorf("%d message ids written to more than one object", dupIDs)
	}
	if overwrites < kills {
		t.Errorf("%d overwrites after %d kills between a PUT and its answer: resent batches wrote new objects", overwrites, kills)
	}
}

// The store is down for 30 s: the backlog stays in the spool, /ready says
// so, and it drains when the store is back.
func TestE2EOutage(t *testing.T) {
	const n, size = 3000, 200
	f, st := gofakes3Store(t)
	e := newE2E(t, st, map[string]string{"READY_MAX_UNSENT_AGE": "5s"})
	e.block.Start()
	pub := harness.NewPublisher(t, e.broker, "cloud-input", size)
	pub.Publish(0, 500, 0)
	e.waitAll(t, 500, size, nil, time.Minute)
	f.Stop()
	down := time.Now()
	pub.Publish(500, n, 0)
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == n-500 })
	var body string
	err := procs.WaitFor(context.Background(), 30*time.Second, func() error {
		var code int
		code, body = e.block.Ready()
		if code == 503 && strings.Contains(body, "oldest undelivered message") {
			return nil
		}
		return fmt.Errorf("/ready %d %s", code, body)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/ready during the outage: %s", body)
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	f.Start()
	up := time.Now()
	tally, dupIDs := e.waitAll(t, n, size, nil, 2*time.Minute)
	t.Logf("after a 30 s outage: %s, %d duplicate ids; drained in %s", tally, dupIDs, time.Since(up).Round(time.Millisecond))
	if dupIDs != 0 {
		t.Errorf("%d duplicate ids", dupIDs)
	}
	e.block.WaitMetric("cloudblock_spool_messages", 30*time.Second, func(v float64) bool { return v == 0 })
	if code, body := e.block.Ready(); code != 200 {
		t.Errorf("/ready after the outage = %d %s", code, body)
	}
}
