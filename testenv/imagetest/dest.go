package imagetest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"google.golang.org/api/iterator"

	"github.com/cloud-block/cloud-block/common/objstore"
	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/procs"
	"github.com/cloud-block/cloud-block/testenv/sqsfake"
)

// Destination is a service's cloud for a test: its emulator on the host,
// forwarded to the test network's bridge address, and what has arrived there.
type Destination struct {
	Service string
	// Env is what a user fills in for the block (compose/<service>.yml's
	// required variables), pointed at the emulator through the forwarder.
	Env map[string]string
	fwd *Forwarder

	mu   sync.Mutex
	read func(ctx context.Context) ([]delivered, error)
	got  map[string][]byte // payload by message id: a resend counts once
}

// delivered is one message as the cloud holds it.
type delivered struct {
	id      string
	payload []byte
}

// StartDestination starts svc's emulator and forwards it to host (the test
// network's gateway) until the test ends.
func StartDestination(t testing.TB, svc, host string) *Destination {
	t.Helper()
	d := &Destination{Service: svc, got: map[string][]byte{}}
	switch svc {
	case "aws-s3":
		s := emulators.StartS3(t)
		s.CreateBucket(t, "images")
		d.fwd = Forward(t, host, strings.TrimPrefix(s.Endpoint, "http://"))
		d.Env = map[string]string{
			"AWS_S3_BUCKET": "images", "AWS_S3_REGION": s.Region, "AWS_S3_ENDPOINT": "http://" + d.fwd.Addr(),
			"AWS_S3_ACCESS_KEY": s.AccessKey, "AWS_S3_SECRET_KEY": s.SecretKey,
		}
		c := s.Client()
		d.read = objects(func(ctx context.Context, seen func(key, tag string) bool) ([]object, error) {
			var out []object
			p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String("images")})
			for p.HasMorePages() {
				page, err := p.NextPage(ctx)
				if err != nil {
					return nil, err
				}
				for _, o := range page.Contents {
					if seen(aws.ToString(o.Key), aws.ToString(o.ETag)) {
						continue
					}
					r, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("images"), Key: o.Key})
					if err != nil {
						return nil, err
					}
					body, err := readAll(r.Body)
					if err != nil {
						return nil, err
					}
					out = append(out, object{aws.ToString(o.Key), aws.ToString(o.ETag), body, aws.ToString(r.ContentEncoding)})
				}
			}
			return out, nil
		})
	case "aws-sqs":
		ep := sqsfake.New().Listen(t)
		c := sqsfake.Client(ep.URL)
		queue, qurl := sqsfake.CreateQueue(t, c, "images", nil)
		d.fwd = Forward(t, host, strings.TrimPrefix(ep.URL, "http://"))
		d.Env = map[string]string{
			"AWS_SQS_QUEUE_NAME": queue, "AWS_SQS_REGION": "us-east-1", "AWS_SQS_ENDPOINT": "http://" + d.fwd.Addr(),
			"AWS_SQS_ACCESS_KEY": "images-access", "AWS_SQS_SECRET_KEY": "images-secret",
		}
		r := sqsfake.NewReader(c, qurl)
		d.read = func(ctx context.Context) ([]delivered, error) {
			for {
				// A receive whose answer was lost hides its messages for
				// the visibility timeout: they come back 5 s later.
				n, err := r.Receive(ctx, 0, 5*time.Second)
				if err != nil {
					return nil, err
				}
				if n == 0 {
					break
				}
			}
			var out []delivered
			for _, m := range r.Messages() {
				p := []byte(aws.ToString(m.Body))
				// aws-sqs's README: a body that is not valid SQS text is base64.
				if aws.ToString(m.MessageAttributes["cloudblock.encoding"].StringValue) == "base64" {
					var err error
					if p, err = base64.StdEncoding.DecodeString(string(p)); err != nil {
						return nil, err
					}
				}
				out = append(out, delivered{aws.ToString(m.MessageAttributes["cloudblock.id"].StringValue), p})
			}
			return out, nil
		}
	case "azure-blob":
		a := emulators.StartAzurite(t)
		a.CreateContainer(t, "images")
		u, err := url.Parse(a.BlobEndpoint)
		if err != nil {
			t.Fatal(err)
		}
		d.fwd = Forward(t, host, u.Host)
		d.Env = map[string]string{
			"AZURE_BLOB_CONTAINER_NAME": "images", "AZURE_BLOB_STORAGE_ACCOUNT": a.AccountName,
			"AZURE_BLOB_STORAGE_ACCOUNT_KEY": a.AccountKey, "AZURE_BLOB_ENDPOINT": "http://" + d.fwd.Addr() + "/" + a.AccountName + "/",
		}
		c := a.Client(t)
		d.read = objects(func(ctx context.Context, seen func(key, tag string) bool) ([]object, error) {
			var out []object
			pager := c.NewListBlobsFlatPager("images", nil)
			for pager.More() {
				page, err := pager.NextPage(ctx)
				if err != nil {
					return nil, err
				}
				for _, it := range page.Segment.BlobItems {
					if seen(*it.Name, string(*it.Properties.ETag)) {
						continue
					}
					r, err := c.DownloadStream(ctx, "images", *it.Name, nil)
					if err != nil {
						return nil, err
					}
					body, err := readAll(r.Body)
					if err != nil {
						return nil, err
					}
					enc := ""
					if r.ContentEncoding != nil {
						enc = *r.ContentEncoding
					}
					out = append(out, object{*it.Name, string(*it.Properties.ETag), body, enc})
				}
			}
			return out, nil
		})
	case "gcp-storage":
		g := emulators.StartGCS(t)
		g.CreateBucket(t, "images")
		d.fwd = Forward(t, host, g.Host)
		d.Env = map[string]string{"GCP_STORAGE_BUCKET": "images", "STORAGE_EMULATOR_HOST": d.fwd.Addr()}
		c := g.Client(t)
		d.read = objects(func(ctx context.Context, seen func(key, tag string) bool) ([]object, error) {
			var out []object
			it := c.Bucket("images").Objects(ctx, nil)
			for {
				o, err := it.Next()
				if errors.Is(err, iterator.Done) {
					return out, nil
				}
				if err != nil {
					return nil, err
				}
				tag := o.Etag + "/" + o.Updated.String()
				if seen(o.Name, tag) {
					continue
				}
				r, err := c.Bucket("images").Object(o.Name).ReadCompressed(true).NewReader(ctx)
				if err != nil {
					return nil, err
				}
				body, err := readAll(r)
				if err != nil {
					return nil, err
				}
				out = append(out, object{o.Name, tag, body, o.ContentEncoding})
			}
		})
	case "gcp-pubsub":
		p := emulators.StartPubSub(t)
		p.CreateTopicSubscription(t, "images", "images-sub")
		d.fwd = Forward(t, host, p.Host)
		d.Env = map[string]string{"GCP_PUBSUB_TOPIC": "images", "GCP_PUBSUB_PROJECT_ID": p.Project, "PUBSUB_EMULATOR_HOST": d.fwd.Addr()}
		sc := p.Client(t).SubscriptionAdminClient
		sub := p.SubscriptionName("images-sub")
		d.read = func(ctx context.Context) ([]delivered, error) {
			var out []delivered
			for {
				r, err := sc.Pull(ctx, &pubsubpb.PullRequest{Subscription: sub, MaxMessages: 1000, ReturnImmediately: true})
				if err != nil || len(r.GetReceivedMessages()) == 0 {
					return out, err
				}
				var acks []string
				for _, m := range r.GetReceivedMessages() {
					out = append(out, delivered{m.GetMessage().GetAttributes()["id"], m.GetMessage().GetData()})
					acks = append(acks, m.GetAckId())
				}
				if err := sc.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: sub, AckIds: acks}); err != nil {
					return out, err
				}
			}
		}
	case "azure-eh":
		addr, data := startEventHubs(t)
		d.fwd = Forward(t, host, addr)
		d.Env = map[string]string{"AZURE_EH_CONNECTIONSTRING": fmt.Sprintf(
			"Endpoint=sb://%s;SharedAccessKeyName=send;SharedAccessKey=imagesKey=;EntityPath=hub;UseDevelopmentEmulator=true", d.fwd.Addr())}
		var off int64
		d.read = func(context.Context) ([]delivered, error) {
			var out []delivered
			var err error
			off, err = readLines(data, off, func(line []byte) error {
				m, err := decodeEvent(line)
				if err == nil {
					out = append(out, m)
				}
				return err
			})
			return out, err
		}
	default:
		t.Fatalf("no destination %q", svc)
	}
	switch svc {
	case "aws-s3", "azure-blob", "gcp-storage":
		// An object store writes a batch at most every BATCH_MAX_WAIT (60 s
		// by default, as the compose files say): each phase of a test would
		// wait that long for its first object. The code path is the same.
		d.Env["BATCH_MAX_WAIT"] = ObjectBatchWait.String()
	}
	return d
}

// ObjectBatchWait is the object stores' BATCH_MAX_WAIT in these tests.
const ObjectBatchWait = 2 * time.Second

// Down is an outage of the cloud: connections refused, open ones cut.
func (d *Destination) Down() { d.fwd.Down() }

// Up ends the outage.
func (d *Destination) Up() { d.fwd.Up() }

// Payloads returns every payload delivered so far, each message once. A
// read that fails is logged; what was read before is returned.
func (d *Destination) Payloads(t testing.TB) [][]byte {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, err := d.read(ctx)
	for _, m := range ms {
		d.got[m.id] = m.payload
	}
	if err != nil {
		// The tests poll: the next read tries again.
		t.Logf("%s: reading what the emulator holds (will read again): %v", d.Service, err)
	}
	out := make([][]byte, 0, len(d.got))
	for _, p := range d.got {
		out = append(out, p)
	}
	return out
}

// object is a batch object as a store holds it.
type object struct {
	key, tag string
	body     []byte
	encoding string
}

// objects reads an object store: list turns up the objects not seen yet
// (by key and tag: a resent batch overwrites its object); each is an NDJSON
// batch the block wrote (common/objstore).
func objects(list func(ctx context.Context, seen func(key, tag string) bool) ([]object, error)) func(context.Context) ([]delivered, error) {
	seen := map[string]string{}
	return func(ctx context.Context) ([]delivered, error) {
		objs, err := list(ctx, func(key, tag string) bool { return seen[key] == tag })
		var out []delivered
		for _, o := range objs {
			lines, derr := objstore.Decode(o.body, o.encoding)
			if derr != nil {
				return out, fmt.Errorf("object %s: %w", o.key, derr)
			}
			for _, l := range lines {
				out = append(out, delivered{l.ID, l.Payload})
			}
			seen[o.key] = o.tag
		}
		return out, err
	}
}

func readAll(r io.ReadCloser) ([]byte, error) {
	defer r.Close()
	return io.ReadAll(r)
}

// startEventHubs runs the project's fake Event Hubs (testenv/node) with a
// data file, where it appends each event before acknowledging it: the test
// reads that instead of holding receivers open across outages.
func startEventHubs(t testing.TB) (addr, data string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 20) not found: %v", err)
	}
	dir := filepath.Join(Root, "testenv", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "rhea")); err != nil {
		t.Fatalf("npm packages missing in %s: run `make setup`", dir)
	}
	port := procs.FreePort(t)
	data = filepath.Join(t.TempDir(), "events.jsonl")
	procs.Start(t, procs.Spec{
		Name: "eventhubs-fake", Path: node, Dir: dir,
		Args: []string{filepath.Join(dir, "eventhubs-fake.js"), "--host", "127.0.0.1", "--port", strconv.Itoa(port),
			"--hub", "hub", "--partitions", "4", "--data", data},
		Ready: procs.TCPReady(procs.Addr(port)), Timeout: 20 * time.Second,
	})
	return procs.Addr(port), data
}

// readLines calls fn for each whole line of path from off, returning the
// offset after the last one.
func readLines(path string, off int64, fn func([]byte) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return off, nil
	}
	if err != nil {
		return off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return off, err
	}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil || len(line) == 0 || line[len(line)-1] != '\n' {
			return off, nil // a line still being written is read next time
		}
		if err := fn(line); err != nil {
			return off, err
		}
		off += int64(len(line))
	}
}

// decodeEvent turns a stored event into its id and body, as azure-eh's
// README maps them.
func decodeEvent(line []byte) (delivered, error) {
	m, err := ehfake.DecodeStored(line)
	if err != nil {
		return delivered{}, err
	}
	id, _ := m.ApplicationProperties["cloudblock_id"].(string)
	return delivered{id, m.GetData()}, nil
}

// Backlog is nil once the /ready of the block at ip (on the test network)
// counts undelivered messages in its buffer.
func Backlog(ip string) error {
	_, body, err := Get("http://" + ip + ":8080/ready")
	if err != nil {
		return err
	}
	var r struct {
		Spool int `json:"spool_messages"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Spool == 0 {
		return fmt.Errorf("%s", body)
	}
	return nil
}

// Get fetches url (a block's /ready, on the test network) with a short timeout.
func Get(url string) (int, []byte, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return r.StatusCode, b, err
}
