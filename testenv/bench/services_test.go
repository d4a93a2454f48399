package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/aws-s3/s3sink"
	"github.com/cloud-block/cloud-block/services/aws-sqs/sqssink"
	"github.com/cloud-block/cloud-block/services/azure-blob/blobsink"
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/services/gcp-pubsub/pubsubsink"
	"github.com/cloud-block/cloud-block/services/gcp-storage/gcssink"
	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// destination starts a service's emulator and returns the block's env.
type destination struct {
	name  string
	svc   run.Service
	start func(t *testing.T) map[string]string
}

// Object stores batch for a minute by default; the last partial batch
// would then dominate a short run.
var objectBatching = map[string]string{"BATCH_MAX_WAIT": "200ms"}

func with(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

var destinations = []destination{
	{"aws-sqs", sqssink.Service, func(t *testing.T) map[string]string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fake := sqsfake.New()
		srv := &http.Server{Handler: fake}
		go srv.Serve(l)
		t.Cleanup(func() { fake.Close(); srv.Close() })
		endpoint := "http://" + l.Addr().String()
		c := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
			Credentials: credentials.NewStaticCredentialsProvider("bench", "bench", "")})
		q, err := c.CreateQueue(context.Background(), &sqs.CreateQueueInput{QueueName: aws.String("bench")})
		if err != nil {
			t.Fatal(err)
		}
		return map[string]string{"AWS_SQS_QUEUE_NAME": *q.QueueUrl, "AWS_SQS_REGION": "us-east-1",
			"AWS_SQS_ACCESS_KEY": "bench", "AWS_SQS_SECRET_KEY": "bench", "AWS_SQS_ENDPOINT": endpoint}
	}},
	{"aws-s3", s3sink.Service, func(t *testing.T) map[string]string {
		s3 := emulators.StartS3(t)
		s3.CreateBucket(t, "bench")
		return with(objectBatching, map[string]string{"AWS_S3_BUCKET": "bench", "AWS_S3_REGION": s3.Region,
			"AWS_S3_ACCESS_KEY": s3.AccessKey, "AWS_S3_SECRET_KEY": s3.SecretKey, "AWS_S3_ENDPOINT": s3.Endpoint, "AWS_S3_FORCE_PATH_STYLE": "true"})
	}},
	{"azure-eh", ehsink.Service, func(t *testing.T) map[string]string {
		eh := ehfake.Start(t, ehfake.Options{Hub: "bench", Partitions: 4})
		return map[string]string{"AZURE_EH_CONNECTIONSTRING": eh.ConnectionString()}
	}},
	{"azure-blob", blobsink.Service, func(t *testing.T) map[string]string {
		a := emulators.StartAzurite(t)
		a.CreateContainer(t, "bench")
		return with(objectBatching, map[string]string{"AZURE_BLOB_CONNECTIONSTRING": a.ConnectionString, "AZURE_BLOB_CONTAINER_NAME": "bench"})
	}},
	{"gcp-pubsub", pubsubsink.Service, func(t *testing.T) map[string]string {
		p := emulators.StartPubSub(t)
		p.CreateTopicSubscription(t, "bench", "bench-sub")
		return map[string]string{"PUBSUB_EMULATOR_HOST": p.Host, "GCP_PUBSUB_PROJECT_ID": p.Project, "GCP_PUBSUB_TOPIC": "bench"}
	}},
	{"gcp-storage", gcssink.Service, func(t *testing.T) map[string]string {
		g := emulators.StartGCS(t)
		g.CreateBucket(t, "bench")
		return with(objectBatching, map[string]string{"STORAGE_EMULATOR_HOST": g.Host, "GCP_STORAGE_BUCKET": "bench", "GCP_STORAGE_PROJECT_ID": "bench"})
	}},
}

// releaseSize builds the service as released (static, stripped) and returns its size.
func releaseSize(t *testing.T, svc string) int64 {
	out := filepath.Join(t.TempDir(), svc)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join(harness.RepoRoot(), "services", svc)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestBenchServices prints, per destination and within one run: the rate
// through the whole block to the destination's local emulator against the
// plain-subscriber ceiling, CPU per message, peak RSS and binary size.
// Emulators are not the cloud: the rates say whether the block keeps up
// with the broker, not what the cloud would take.
func TestBenchServices(t *testing.T) {
	skipUnlessBench(t)
	n := messages() / 2
	var rows []string
	for _, d := range destinations {
		if want := os.Getenv("BENCH_SERVICES"); want != "" && !strings.Contains(","+want+",", ","+d.name+",") {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			// A broker of its own, and the ceiling measured on it just before:
			// persistent sessions left on a shared broker would queue every
			// later message and load it.
			broker := harness.StartMosquitto(t, harness.MosquittoOptions{})
			ceilRate := float64(n) / ceiling(t, broker, n).Seconds()
			env := d.start(t)
			env["LOG_LEVEL"] = "warn"
			r := runBlock(t, harness.Build(t, "services/"+d.name), broker, n, env)
			rate := float64(n) / r.dur.Seconds()
			emuRate := float64(n) / direct(t, d.svc, env, n, r.batch).Seconds()
			rows = append(rows, fmt.Sprintf("| %s | %d | %.0f | %.0f | %.0f | %.0f %% | %.0f %% | %d | %.1f us | %s | %s |",
				d.name, n, ceilRate, emuRate, rate, 100*rate/ceilRate, 100*rate/emuRate, r.batch,
				float64(r.cpu.Microseconds())/float64(n), mib(r.peakRSS), mib(releaseSize(t, d.name))))
		})
	}
	fmt.Printf("\nEach destination against its local emulator, %d-byte messages. Subscriber ceiling: a counting\n"+
		"subscriber on the same broker. Emulator ceiling: the destination's sink fed directly (no MQTT, no spool)\n"+
		"with batches of the block's mean batch size, as many at once as the pipeline sends.\n", size)
	fmt.Println("| destination | messages | subscriber ceiling msg/s | emulator ceiling msg/s | block msg/s | vs subscriber | vs emulator | batch | CPU/msg | peak RSS | binary (stripped, amd64) |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	fmt.Println(strings.Join(rows, "\n"))
}
