package blocktest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/iotfake"
	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// No long-lived AWS secret on the device: aws-sqs and aws-s3 with
// credentials from the AWS IoT credentials provider (iotfake: mutual TLS,
// credentials of iotTTL), the destination's emulator behind the fake's
// SigV4 check, so only unexpired credentials it issued get through.
func init() {
	targets = append(targets,
		&target{name: "aws-sqs-iot", pkg: "services/aws-sqs", open: openSQSIoT, batch: 10, only: []string{"aws-iot"}},
		&target{name: "aws-s3-iot", pkg: "services/aws-s3", open: openS3IoT, batch: 200, dupFree: true,
			env: map[string]string{"BATCH_MAX_WAIT": "200ms"}, only: []string{"aws-iot"}},
	)
	scenarios = append(scenarios, scenario{name: "aws-iot", kind: "aws-iot", run: awsIoT})
	Small.Scenarios = append(Small.Scenarios, "aws-iot")
	// The config scenario sets each of the AWS IoT variables wrong.
	for _, tg := range targets {
		if p, ok := map[string]string{"aws-sqs": "AWS_SQS", "aws-s3": "AWS_S3"}[tg.name]; ok {
			tg.badVars[p+"_IOT_CREDENTIALS_ENDPOINT"] = bad("http://c2x.credentials.iot.eu-west-1.amazonaws.com/path")
			tg.badVars[p+"_IOT_ROLE_ALIAS"] = bad("no spaces in an alias")
			tg.badVars[p+"_IOT_THING_NAME"] = bad("thing/1")
			tg.badVars[p+"_IOT_CERT"] = bad("/no/such/device-cert.pem")
			tg.badVars[p+"_IOT_KEY"] = bad(`-----BEGIN PRIVATE KEY-----\niotBadKeyMaterial0123\n-----END PRIVATE KEY-----`)
			tg.badVars[p+"_IOT_CA"] = bad("/no/such/iot-ca.pem")
		}
	}
}

const (
	// iotTTL is how long the fake's credentials last: the block fetches
	// new ones half-way, every 2 s.
	iotTTL   = 4 * time.Second
	iotAlias = "cloud-block-role"
	iotThing = "blocktest-device"
	iotRate  = 20 // messages/s
	iotSize  = 200
)

// iotBackend is a destination behind the fake credentials endpoint.
type iotBackend struct {
	iot *iotfake.Fake
	// front serves the emulator behind the SigV4 check: the block's
	// destination. The test's reader uses the emulator directly.
	front         *httptest.Server
	cert, keyFile string
	mu            sync.Mutex
	rejected      []rejection
}

type rejection struct {
	at   time.Time
	code string
}

func newIOTBackend(t *testing.T, h func(*iotBackend) *httptest.Server) *iotBackend {
	b := &iotBackend{iot: iotfake.New(t, iotAlias, iotTTL)}
	cert, key := b.iot.DeviceCert(t, iotThing)
	// The certificate as PEM text, the key as a file: both forms a device
	// may use.
	b.cert, b.keyFile = cert, filepath.Join(t.TempDir(), "device.key")
	if err := os.WriteFile(b.keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	b.front = h(b)
	t.Cleanup(b.front.Close)
	return b
}

func (b *iotBackend) reject(code string) {
	b.mu.Lock()
	b.rejected = append(b.rejected, rejection{time.Now(), code})
	b.mu.Unlock()
}

// iotEnv is the block's AWS IoT identity.
func (b *iotBackend) iotEnv() map[string]string {
	return map[string]string{
		"AWS_IOT_CREDENTIALS_ENDPOINT": b.iot.URL, "AWS_IOT_ROLE_ALIAS": iotAlias, "AWS_IOT_THING_NAME": iotThing,
		"AWS_IOT_CERT": b.cert, "AWS_IOT_KEY": b.keyFile, "AWS_IOT_CA": b.iot.CA,
		"AWS_EC2_METADATA_DISABLED": "true",
	}
}

func (b *iotBackend) upstream() string { return strings.TrimPrefix(b.front.URL, "http://") }

// --- aws-sqs: sqsfake behind the check ---------------------------------------

type sqsIoT struct {
	*sqsBackend
	*iotBackend
}

func openSQSIoT(t *testing.T) backend {
	fake := sqsfake.New()
	ib := newIOTBackend(t, func(b *iotBackend) *httptest.Server {
		return httptest.NewServer(b.iot.Verify(fake, iotfake.JSON, b.reject))
	})
	// The reader (the queue's consumer, not the device) and the set-up go
	// to the fake directly.
	sb := &sqsBackend{ep: fake.Listen(t), seen: map[string]bool{}}
	sb.addr = strings.TrimPrefix(sb.ep.URL, "http://")
	sb.client = sqsfake.Client(sb.ep.URL, func(o *sqs.Options) {
		o.HTTPClient = &http.Client{Transport: bufferedBodies{http.DefaultTransport}}
	})
	sb.queue, sb.url = sqsfake.CreateQueue(t, sb.client, "faults-iot", nil)
	return &sqsIoT{sb, ib}
}

func (b *sqsIoT) env(addr string) map[string]string {
	env := b.iotEnv()
	env["AWS_SQS_QUEUE_NAME"], env["AWS_SQS_REGION"], env["AWS_SQS_ENDPOINT"] = b.queue, "us-east-1", "http://"+addr
	return env
}
func (b *sqsIoT) upstream() string  { return b.iotBackend.upstream() }
func (b *sqsIoT) secrets() []string { return nil } // added as issued (awsIoT)
// The fronts stay up: a rig's down() refuses at the proxy first.
func (b *sqsIoT) read(t testing.TB) []msg { return b.sqsBackend.read(t) }

// --- aws-s3: gofakes3 behind the check ---------------------------------------

type s3IoT struct {
	*s3Backend
	*iotBackend
}

func openS3IoT(t *testing.T) backend {
	faker := gofakes3.New(s3mem.New()).Server()
	ib := newIOTBackend(t, func(b *iotBackend) *httptest.Server {
		return httptest.NewServer(b.iot.Verify(faker, iotfake.XML, b.reject))
	})
	raw := httptest.NewServer(faker)
	t.Cleanup(raw.Close)
	conn := emulators.S3Conn{Endpoint: raw.URL, Region: "us-east-1", AccessKey: "reader", SecretKey: "reader-secret"}
	sb := &s3Backend{conn: conn, bucket: "blocktest-iot"}
	conn.CreateBucket(t, sb.bucket)
	return &s3IoT{sb, ib}
}

func (b *s3IoT) env(addr string) map[string]string {
	env := b.iotEnv()
	env["AWS_S3_BUCKET"], env["AWS_S3_REGION"], env["AWS_S3_ENDPOINT"] = b.bucket, "us-east-1", "http://"+addr
	return env
}
func (b *s3IoT) upstream() string        { return b.iotBackend.upstream() }
func (b *s3IoT) secrets() []string       { return nil }
func (b *s3IoT) read(t testing.TB) []msg { return b.s3Backend.read(t) }

// ioter is what awsIoT needs of a backend.
type ioter interface{ identity() *iotBackend }

func (b *sqsIoT) identity() *iotBackend { return b.iotBackend }
func (b *s3IoT) identity() *iotBackend  { return b.iotBackend }

// awsIoT: messages at iotRate for ten times the scale's outage (Small 50 s,
// Full 10 min) while the credentials expire every iotTTL; a third of the
// way in, the credentials endpoint goes away for the outage (at least
// three lifetimes of the credentials, so they really expire). Nothing is
// lost; the block fetched new credentials about every half lifetime
// without a restart; no request but those of the outage's last moments was
// refused by the SigV4 check; while the endpoint is away the messages stay
// spooled and /ready names the endpoint; the block recovers by itself; no
// key or token shows in logs, /ready or /metrics.
func awsIoT(t *testing.T, tg *target, sc Scale) {
	if !strings.HasSuffix(tg.name, "-iot") {
		t.Skip("the AWS IoT credentials provider runs on the -iot targets")
	}
	run := 10 * sc.Outage
	away := max(sc.Outage, 3*iotTTL)
	r := newRig(t, tg, rigOpts{broker: harness.MosquittoOptions{Persistence: true}, env: map[string]string{
		"READY_MAX_UNSENT_AGE": readyAge.String(), "RETRY_MAX_BACKOFF": "5s",
	}})
	ib := r.be.(ioter).identity()
	// The device's key, line by line, must never show either.
	key, err := os.ReadFile(ib.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(key), "\n") {
		if len(l) > 40 {
			r.addSecret(l)
		}
	}
	defer func() {
		for _, s := range ib.iot.Secrets() {
			r.addSecret(s)
		}
	}()
	r.start()
	r.waitReady(200, time.Minute)
	s := &stream{pub: harness.NewPublisher(t, r.broker, "cloud-input", iotSize)}
	n := int(iotRate * run.Seconds())
	began := time.Now()
	from, to, done := s.publish(n, iotRate)

	time.Sleep(run / 3)
	fetchesBefore := ib.iot.Fetches()
	ib.iot.SetDown(true)
	downAt := time.Now()
	body := r.waitReady(503, away+readyAge+30*time.Second, "oldest undelivered message", "AWS IoT credentials endpoint "+ib.iot.URL+"/role-aliases/"+iotAlias+"/credentials")
	saidAfter := time.Since(downAt)
	r.checkLive()
	time.Sleep(time.Until(downAt.Add(away)))
	spooled := r.metric("cloudblock_spool_messages")
	if spooled <= 0 {
		t.Errorf("cloudblock_spool_messages = %v at the end of the endpoint's outage, want the messages held", spooled)
	}
	ib.iot.SetDown(false)
	upAt := time.Now()
	_, downHits := ib.iot.Refused()
	r.waitReady(200, 2*time.Minute)
	recovered := time.Since(upAt)

	<-done
	tl, _ := r.waitRange(from, to, iotSize, 5*time.Minute, false)
	elapsed := time.Since(began)
	fetches := ib.iot.Fetches()
	ib.mu.Lock()
	var outside []string
	codes := map[string]int{}
	for _, rj := range ib.rejected {
		codes[rj.code]++
		// Credentials kept through the outage may expire in flight: a
		// refusal is expected only within a second of their expiry.
		if rj.at.Before(downAt) || rj.at.After(upAt.Add(time.Second)) {
			outside = append(outside, rj.at.Format("15:04:05.000")+" "+rj.code)
		}
	}
	ib.mu.Unlock()
	if len(outside) > 0 {
		t.Errorf("%d requests refused by the SigV4 check outside the endpoint's outage: %v", len(outside), outside)
	}
	// Fetched about every half lifetime; at least once a lifetime outside
	// the outage.
	if want := int((elapsed - away) / iotTTL); fetches < want {
		t.Errorf("%d credentials fetched in %s (outage %s), want at least %d: one a lifetime (%s)", fetches, elapsed.Round(time.Second), away, want, iotTTL)
	}
	if r.block.Starts != 1 {
		t.Errorf("the block was started %d times", r.block.Starts)
	}
	var ready struct {
		LastError string `json:"last_error"`
	}
	json.Unmarshal([]byte(body), &ready)
	// The SDK's wrapping first, then the part that says what is wrong.
	why := ready.LastError
	if i := strings.Index(why, "AWS IoT credentials endpoint"); i > 0 {
		why = "..." + why[i:]
	}
	note := fmt.Sprintf("%s at %d msg/s, credentials of %s: %d fetched (%d before the outage) in one run of the block; endpoint away %s from %s: %v spooled, /ready 503 after %s, 200 again %s after it returned (%d connections refused meanwhile); SigV4 refusals: %s; /ready's last_error: %.200s",
		run, iotRate, iotTTL, fetches, fetchesBefore, away, downAt.Sub(began).Round(time.Second), spooled, saidAfter.Round(100*time.Millisecond),
		recovered.Round(100*time.Millisecond), downHits, fmtCodes(codes), why)
	t.Logf("%s: /ready during the endpoint's outage: %s", tg.name, body)
	t.Logf("%s aws-iot: %s; %s", tg.name, tl, note)
	r.report("aws-iot", tl, 0, note)
}

func fmtCodes(codes map[string]int) string {
	if len(codes) == 0 {
		return "none"
	}
	var out []string
	for c, n := range codes {
		out = append(out, fmt.Sprintf("%d %s", n, c))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
