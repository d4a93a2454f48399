package checktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/api/iterator"

	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// --- aws-sqs: sqsfake behind a front that checks signatures -----------------

// openSQS serves sqsfake behind sigV4, which refuses what SQS refuses: an
// unknown access key, a signature made with another secret (sqsfake reads
// the key from the signature but checks nothing).
func openSQS(t *testing.T) *dest {
	access, secret := "AKIACHECK"+strings.ToUpper(randHex(6)), "sqsSecret-"+randHex(10)
	f := &front{h: sigV4{next: sqsfake.New(), access: access, secret: secret}}
	f.start(t)
	t.Cleanup(f.stop)
	c := sqsfake.Client(f.url(), func(o *sqs.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider(access, secret, "")
	})
	queue, _ := sqsfake.CreateQueue(t, c, "check", nil)
	env := map[string]string{
		"AWS_SQS_QUEUE_NAME": queue, "AWS_SQS_REGION": "us-east-1", "AWS_SQS_ENDPOINT": f.url(),
		"AWS_SQS_ACCESS_KEY": access, "AWS_SQS_SECRET_KEY": secret,
	}
	return &dest{
		env: env, secrets: []string{access, secret},
		wrong: map[string]string{"AWS_SQS_SECRET_KEY": "sqsWrong-" + randHex(10)},
		bad:   [2]string{"AWS_SQS_REGION", "not a region"}, badMessage: `AWS_SQS_REGION="not a region" is invalid: want an AWS region such as eu-west-1 (lower-case letters, digits and hyphens)`,
		stop: f.stop, start: func() { f.start(t) },
	}
}

// front serves a handler on a port of its own that Stop and Start take
// away and give back (an outage).
type front struct {
	h    http.Handler
	addr string

	mu  sync.Mutex
	srv *http.Server
}

func (f *front) url() string { return "http://" + f.addr }

func (f *front) start(t *testing.T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		return
	}
	addr := f.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; {
		// The port was ours a moment ago; retry while it is released.
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.srv = &http.Server{Handler: f.h}
	go f.srv.Serve(ln)
}

func (f *front) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		f.srv.Close()
		f.srv = nil
	}
}

// sigV4 passes on a request signed with its key and secret, and answers
// any other as SQS's JSON protocol does.
type sigV4 struct {
	next           http.Handler
	access, secret string
}

func (s sigV4) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if code, msg := s.verify(r, body); code != "" {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"__type":"com.amazon.coral.service#%s","message":%q}`, code, msg)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.next.ServeHTTP(w, r)
}

// verify signs a copy of r's signed part with the secret and compares.
func (s sigV4) verify(r *http.Request, body []byte) (code, msg string) {
	auth := r.Header.Get("Authorization")
	field := func(name string) string {
		_, v, _ := strings.Cut(auth, name+"=")
		v, _, _ = strings.Cut(v, ",")
		return strings.TrimSpace(v)
	}
	scope := strings.Split(field("Credential"), "/") // key/date/region/service/aws4_request
	if len(scope) != 5 || scope[0] != s.access {
		return "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "IncompleteSignature", "X-Amz-Date is missing or malformed."
	}
	c, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return "IncompleteSignature", err.Error()
	}
	for _, h := range strings.Split(field("SignedHeaders"), ";") {
		if h != "host" && h != "content-length" {
			c.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(r.Context(), aws.Credentials{AccessKeyID: s.access, SecretAccessKey: s.secret}, c, hex.EncodeToString(sum[:]), scope[3], scope[2], at)
	if err != nil || c.Header.Get("Authorization") != auth {
		return "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
	}
	return "", ""
}

// --- aws-s3: versitygw, which checks signatures ------------------------------

func openS3(t *testing.T) *dest {
	v := emulators.StartVersity(t)
	v.CreateBucket(t, "checked")
	return &dest{
		env: map[string]string{
			"AWS_S3_BUCKET": "checked", "AWS_S3_REGION": v.Region, "AWS_S3_ENDPOINT": v.Endpoint,
			"AWS_S3_ACCESS_KEY": v.AccessKey, "AWS_S3_SECRET_KEY": v.SecretKey,
		},
		secrets: []string{v.SecretKey},
		wrong:   map[string]string{"AWS_S3_SECRET_KEY": "s3Wrong-" + randHex(10)},
		bad:     [2]string{"AWS_S3_BUCKET", "not/a/bucket"}, badMessage: `AWS_S3_BUCKET="not/a/bucket" is invalid: want a bucket name of 3 to 255 letters, digits, '.', '-' or '_' (not a URL or a path)`,
		objects: func(t *testing.T) []string {
			out, err := v.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("checked")})
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range out.Contents {
				keys = append(keys, aws.ToString(o.Key))
			}
			return keys
		},
		stop: v.Stop, start: v.Start,
	}
}

// --- azure-eh: the project's Event Hubs fake (any token will do) -------------

func openEH(t *testing.T) *dest {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 20) not found: %v", err)
	}
	nodeDir := filepath.Join(harness.RepoRoot(), "testenv", "node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "rhea")); err != nil {
		t.Fatalf("npm packages missing in %s: run `make setup`", nodeDir)
	}
	port, dir := procs.FreePort(t), t.TempDir()
	spec := procs.Spec{
		Name: "eventhubs-fake", Path: node, Dir: nodeDir,
		Args:  []string{filepath.Join(nodeDir, "eventhubs-fake.js"), "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--hub", "hub", "--partitions", "4"},
		Ready: procs.TCPReady(procs.Addr(port)), Timeout: 20 * time.Second,
	}
	var mu sync.Mutex
	var p *procs.Proc
	start := func() {
		mu.Lock()
		defer mu.Unlock()
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; {
			// The port was the fake's a moment ago; retry while it is released.
			if p, err = procs.StartNoCleanup(spec, dir); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	stop := func() {
		mu.Lock()
		defer mu.Unlock()
		if p != nil {
			p.Stop()
			p = nil
		}
	}
	start()
	t.Cleanup(stop)
	key := "ehKey" + randHex(12) + "="
	return &dest{
		env: map[string]string{"AZURE_EH_CONNECTIONSTRING": fmt.Sprintf(
			"Endpoint=sb://%s;SharedAccessKeyName=send;SharedAccessKey=%s;EntityPath=hub;UseDevelopmentEmulator=true", procs.Addr(port), key)},
		secrets: []string{key},
		bad:     [2]string{"AZURE_EH_PARTITION_KEY", "sideways"}, badMessage: `AZURE_EH_PARTITION_KEY="sideways" is invalid: want one of none, device, topic`,
		stop: stop, start: start,
	}
}

// --- azure-blob: Azurite, which checks the shared key ------------------------

func openBlob(t *testing.T) *dest {
	a := emulators.StartAzurite(t)
	a.CreateContainer(t, "checked")
	return &dest{
		env: map[string]string{
			"AZURE_BLOB_STORAGE_ACCOUNT": a.AccountName, "AZURE_BLOB_STORAGE_ACCOUNT_KEY": a.AccountKey,
			"AZURE_BLOB_ENDPOINT": a.BlobEndpoint, "AZURE_BLOB_CONTAINER_NAME": "checked",
		},
		// Azurite's well-known key, but the block holds it as its secret.
		secrets: []string{a.AccountKey},
		wrong:   map[string]string{"AZURE_BLOB_STORAGE_ACCOUNT_KEY": randKey()},
		bad:     [2]string{"AZURE_BLOB_CONTAINER_NAME", "Bad_Name"}, badMessage: `AZURE_BLOB_CONTAINER_NAME="Bad_Name" is invalid: want 3 to 63 lower-case letters, digits and hyphens, starting and ending with a letter or digit, no two hyphens in a row`,
		objects: func(t *testing.T) []string {
			var names []string
			pager := a.Client(t).NewListBlobsFlatPager("checked", nil)
			for pager.More() {
				page, err := pager.NextPage(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range page.Segment.BlobItems {
					names = append(names, *b.Name)
				}
			}
			return names
		},
		stop: a.Stop, start: a.Start,
	}
}

// --- gcp-pubsub: pstest (no credentials checked) -----------------------------

func openPubSub(t *testing.T) *dest {
	p := emulators.StartPubSub(t)
	p.CreateTopicSubscription(t, "checked", "checked-sub")
	email, key, keyLines := serviceAccountKey(t)
	return &dest{
		env: map[string]string{
			"GCP_PUBSUB_TOPIC": "checked", "GCP_PUBSUB_PROJECT_ID": p.Project, "PUBSUB_EMULATOR_HOST": p.Host,
			// The emulator takes no credentials, but the block holds them.
			"GCP_PUBSUB_CLIENT_EMAIL": email, "GCP_PUBSUB_PRIVATE_KEY": key,
		},
		secrets: keyLines,
		bad:     [2]string{"GCP_PUBSUB_TOPIC", "1bad"}, badMessage: `GCP_PUBSUB_TOPIC="1bad" is invalid: want a topic id (3 to 255 letters, digits and - _ . ~ + %, starting with a letter) or projects/<project>/topics/<id>`,
		stop: p.Stop, start: p.Start,
	}
}

// --- gcp-storage: fake-gcs-server (no credentials checked) -------------------

func openGCS(t *testing.T) *dest {
	g := emulators.StartGCS(t)
	g.CreateBucket(t, "checked")
	return &dest{
		env: map[string]string{"GCP_STORAGE_BUCKET": "checked", "STORAGE_EMULATOR_HOST": g.Host},
		bad: [2]string{"GCP_STORAGE_BUCKET", "Bad_Bucket"}, badMessage: `GCP_STORAGE_BUCKET="Bad_Bucket" is invalid: want a bucket name: 3 to 63 lower-case letters, digits, - _ and . (up to 222 with dots), starting and ending with a letter or digit`,
		objects: func(t *testing.T) []string {
			var names []string
			it := g.Client(t).Bucket("checked").Objects(context.Background(), nil)
			for {
				o, err := it.Next()
				if errors.Is(err, iterator.Done) {
					return names
				}
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, o.Name)
			}
		},
		stop: g.Stop, start: g.Start,
	}
}
