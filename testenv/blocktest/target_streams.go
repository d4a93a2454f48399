package blocktest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pubsubadmin "cloud.google.com/go/pubsub/v2/apiv1"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/cloud-block/cloud-block/testenv/ehfake"
	"github.com/cloud-block/cloud-block/testenv/emulators"
	"github.com/cloud-block/cloud-block/testenv/harness"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// --- gcp-pubsub on pstest-server (shared by the rigs) ------------------------

// The consumer's side of gcp-pubsub's attributes (its README).
const (
	psAttrID     = "id"
	psAttrTopic  = "topic"
	psAttrDevice = "device"
)

type pubsubBackend struct {
	p          *emulators.PubSub
	sc         *pubsubadmin.SubscriptionAdminClient
	topic, sub string
	key        serviceAccountKey

	mu  sync.Mutex
	got []msg
}

func openPubSub(t *testing.T) backend {
	p := sharedPubSub(t)
	b := &pubsubBackend{p: p, sc: p.Client(t).SubscriptionAdminClient, key: newServiceAccountKey(t)}
	b.topic = "faults-" + randHex(6)
	b.sub = b.topic + "-sub"
	p.CreateTopicSubscription(t, b.topic, b.sub)
	return b
}

func (b *pubsubBackend) env(addr string) map[string]string {
	return map[string]string{
		"GCP_PUBSUB_TOPIC": b.topic, "GCP_PUBSUB_PROJECT_ID": b.p.Project, "PUBSUB_EMULATOR_HOST": addr,
		// pstest takes 4 MiB a request.
		"GCP_PUBSUB_MAX_MESSAGE_BYTES": strconv.Itoa(4<<20 - 4<<10),
		// The emulator takes no credentials, but the block holds them.
		"GCP_PUBSUB_CLIENT_EMAIL": b.key.email, "GCP_PUBSUB_PRIVATE_KEY": b.key.pem,
	}
}

func (b *pubsubBackend) upstream() string  { return b.p.Host }
func (b *pubsubBackend) secrets() []string { return b.key.secrets }

// read pulls and acknowledges whatever the subscription holds now.
func (b *pubsubBackend) read(t testing.TB) []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := b.p.SubscriptionName(b.sub)
	for {
		resp, err := b.sc.Pull(ctx, &pubsubpb.PullRequest{Subscription: name, MaxMessages: 1000, ReturnImmediately: true})
		if err != nil {
			t.Fatalf("pull %s: %v", b.sub, err)
		}
		var acks []string
		for _, m := range resp.GetReceivedMessages() {
			pm := m.GetMessage()
			a := pm.GetAttributes()
			b.got = append(b.got, msg{ID: a[psAttrID], Topic: a[psAttrTopic], Device: a[psAttrDevice], Payload: pm.GetData()})
			acks = append(acks, m.GetAckId())
		}
		if len(acks) == 0 {
			return append([]msg(nil), b.got...)
		}
		if err := b.sc.Acknowledge(ctx, &pubsubpb.AcknowledgeRequest{Subscription: name, AckIds: acks}); err != nil {
			t.Fatalf("ack %s: %v", b.sub, err)
		}
	}
}

// --- azure-eh on the project's fake Event Hubs -------------------------------

// The consumer's side of azure-eh's application properties (its README).
const (
	ehPropTopic  = "mqtt_topic"
	ehPropDevice = "device"
	ehPropID     = "cloudblock_id"
)

// ehBackend runs testenv/node/eventhubs-fake.js as ehfake does, but with a
// data file of its own: every event the fake accepts is appended there
// before it acknowledges the send, so the reader reads the file instead of
// holding AMQP receivers open across outages.
type ehBackend struct {
	port int
	data string
	key  string
	spec procs.Spec
	dir  string

	mu   sync.Mutex
	proc *procs.Proc
	tail
	got []msg
}

func openEH(t *testing.T) backend { return newEHBackend(t) }

// newEHBackend starts the fake with its usual flags and extra ones.
func newEHBackend(t *testing.T, extra ...string) *ehBackend {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 20) not found: %v", err)
	}
	nodeDir := filepath.Join(harness.RepoRoot(), "testenv", "node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "rhea")); err != nil {
		t.Fatalf("npm packages missing in %s: run `make setup`", nodeDir)
	}
	b := &ehBackend{port: procs.FreePort(t), dir: t.TempDir(), key: "ehKey" + randHex(12) + "="}
	b.data = filepath.Join(b.dir, "events.jsonl")
	b.spec = procs.Spec{
		Name: "eventhubs-fake", Path: node, Dir: nodeDir,
		Args: append([]string{filepath.Join(nodeDir, "eventhubs-fake.js"), "--host", "127.0.0.1", "--port", strconv.Itoa(b.port),
			"--hub", "hub", "--partitions", "4", "--data", b.data}, extra...),
		Ready: procs.TCPReady(procs.Addr(b.port)), Timeout: 20 * time.Second,
	}
	b.launch(t)
	t.Cleanup(func() {
		b.mu.Lock()
		p := b.proc
		b.mu.Unlock()
		if p != nil {
			p.Stop()
			if t.Failed() {
				procs.DumpLog(t, p)
			}
		}
	})
	return b
}

func (b *ehBackend) env(addr string) map[string]string {
	return map[string]string{"AZURE_EH_CONNECTIONSTRING": fmt.Sprintf(
		"Endpoint=sb://%s;SharedAccessKeyName=send;SharedAccessKey=%s;EntityPath=hub;UseDevelopmentEmulator=true", addr, b.key)}
}

func (b *ehBackend) upstream() string  { return procs.Addr(b.port) }
func (b *ehBackend) secrets() []string { return []string{b.key} }

// launch starts the fake on its port.
func (b *ehBackend) launch(t testing.TB) {
	p, err := procs.StartNoCleanup(b.spec, b.dir)
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.proc = p
	b.mu.Unlock()
}

// log is what the fake has printed (its current run's).
func (b *ehBackend) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proc == nil {
		return ""
	}
	return b.proc.Log()
}

// read decodes the events appended to the fake's data file since the last read.
func (b *ehBackend) read(t testing.TB) []msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tail.lines(t, b.data, func(line []byte) {
		m, err := decodeEvent(line)
		if err != nil {
			t.Fatalf("event hub data file: %v", err)
		}
		b.got = append(b.got, m)
	})
	return append([]msg(nil), b.got...)
}

// decodeEvent turns one stored event (the AMQP message the SDK sent) into
// what a consumer sees: the body and the block's application properties.
func decodeEvent(line []byte) (msg, error) {
	m, err := ehfake.DecodeStored(line)
	if err != nil {
		return msg{}, err
	}
	str := func(k string) string { s, _ := m.ApplicationProperties[k].(string); return s }
	body := m.GetData()
	if body == nil {
		body = []byte{}
	}
	id := str(ehPropID)
	// The event's message id is the block's id too (README "How messages
	// map"); one that differs shows in the id, which then fails every check.
	if m.Properties == nil || m.Properties.MessageID != id {
		var mid any
		if m.Properties != nil {
			mid = m.Properties.MessageID
		}
		id = fmt.Sprintf("%s (message id %v)", id, mid)
	}
	return msg{ID: id, Topic: str(ehPropTopic), Device: str(ehPropDevice), Payload: body}, nil
}

// serviceAccountKey is a made-up Google service account key: the emulators
// ignore it, but the block must keep it out of every log and metric.
type serviceAccountKey struct {
	email, pem string   // as the env var takes it: one line, literal \n
	secrets    []string // lines of the key's base64
}

func newServiceAccountKey(t *testing.T) serviceAccountKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	text := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	lines := strings.Split(strings.TrimSpace(text), "\n")
	return serviceAccountKey{
		email:   "faults@test-project.iam.gserviceaccount.com",
		pem:     strings.ReplaceAll(text, "\n", `\n`),
		secrets: lines[1 : len(lines)-1],
	}
}

var ehLimitLog = regexp.MustCompile(`"msg":"connected to the event hub".*"max_message_bytes":(\d+)`)

// ehLimit is the payload limit the block learned from the hub (its link's
// max-message-size less the event's envelope), as it logs it.
func ehLimit(r *rig) int {
	var n int
	err := procs.WaitFor(context.Background(), time.Minute, func() error {
		m := ehLimitLog.FindStringSubmatch(r.block.Logs())
		if m == nil {
			return fmt.Errorf("the block has not logged the hub's limit")
		}
		n, _ = strconv.Atoi(m[1])
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}
