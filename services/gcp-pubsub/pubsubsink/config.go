// Package pubsubsink is the Google Cloud Pub/Sub destination: each message
// becomes one Pub/Sub message on a topic, its payload unchanged as the data
// and its identity in attributes.
package pubsubsink

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/gcpcreds"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Prefix of the service's variables.
const prefix = "GCP_PUBSUB"

// Ordering-key modes (GCP_PUBSUB_ORDERING_KEY).
const (
	orderNone   = "none"
	orderDevice = "device"
	orderTopic  = "topic"
)

// defaultMaxMessage is Pub/Sub's 10 MB request limit less 4 KiB for what
// travels with the payload: the attributes (each value at most 1,024 bytes),
// an ordering key and the request's topic name.
const defaultMaxMessage = 10_000_000 - 4<<10

// Vars are the service's variables.
var Vars = append([]config.Var{
	{Name: prefix + "_TOPIC", Required: true,
		Doc: "Topic to publish to: its id (in " + prefix + "_PROJECT_ID) or its full name `projects/<project>/topics/<id>`. It must exist; the service account needs the Pub/Sub Publisher role on it."},
	{Name: prefix + "_SUBSCRIPTION",
		Doc: "Accepted for compatibility with the original block and ignored: this block only publishes."},
	{Name: prefix + "_ORDERING_KEY", Default: orderNone,
		Doc: "`none`, or `device` / `topic` to publish with that ordering key, so a subscription with message ordering receives each device's / MQTT topic's messages in order (one batch in flight)."},
	{Name: prefix + "_MAX_MESSAGE_BYTES", Default: strconv.Itoa(defaultMaxMessage),
		Doc: "Largest payload published; larger ones are dead-lettered. The default is Pub/Sub's 10 MB limit less room for the attributes; lower it for an emulator with a smaller limit (pstest takes 4 MiB a request)."},
	{Name: "PUBSUB_EMULATOR_HOST",
		Doc: "host:port of a Pub/Sub emulator (as the Google client libraries read it): plain gRPC, no credentials."},
	{Name: prefix + "_ENDPOINT",
		Doc: "host:port of the Pub/Sub API instead of `pubsub.googleapis.com:443`, reached with TLS and the credentials: a regional endpoint (`europe-west1-pubsub.googleapis.com:443`) or a Private Service Connect one. Not with PUBSUB_EMULATOR_HOST."},
}, gcpcreds.Vars(prefix)...)

// Service is the gcp-pubsub destination.
var Service = run.Service{Name: "gcp-pubsub", Vars: Vars, New: New}

// topicID is Pub/Sub's rule for a topic id.
var topicID = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`)

// Config is the validated configuration.
type Config struct {
	topic      string // full name: projects/<project>/topics/<id>
	project    string // the client's project
	ordering   string
	maxMessage int
	emulator   string
	endpoint   string
	creds      gcpcreds.Credentials
	// tokens: the last access-token failure (workload identity federation).
	tokens *tokens
	device string
	// publishTimeout bounds one publish with its retries; 0 keeps the
	// client's 60 s. Tests against a dead endpoint shorten it.
	publishTimeout time.Duration
}

// New reads the variables and returns the unconnected sink.
func New(l *config.Loader, info run.Info) (sink.Sink, error) {
	cfg := load(l, info.Device)
	if sub := l.Optional(prefix + "_SUBSCRIPTION"); sub != "" {
		info.Log.Info(prefix + "_SUBSCRIPTION is ignored: this block only publishes")
	}
	if l.Err() != nil {
		return nil, l.Err()
	}
	if cfg.emulator != "" {
		info.Log.Info("publishing to a Pub/Sub emulator without credentials", "emulator", cfg.emulator, "topic", cfg.topic)
	} else {
		info.Log.Info("publishing to Pub/Sub", "topic", cfg.topic, "credentials", cfg.creds.Source, "identity", cfg.creds.Identity,
			"endpoint", cfg.endpoint, "ordering_key", cfg.ordering)
	}
	return newSink(cfg, dialSDK), nil
}

func load(l *config.Loader, device string) Config {
	c := Config{
		creds:      gcpcreds.Load(l, prefix),
		ordering:   l.Enum(prefix+"_ORDERING_KEY", orderNone, orderDevice, orderTopic),
		maxMessage: int(l.Bytes(prefix+"_MAX_MESSAGE_BYTES", 1, defaultMaxMessage)),
		emulator:   l.HostPort("PUBSUB_EMULATOR_HOST"),
		endpoint:   l.HostPort(prefix + "_ENDPOINT"),
		device:     device,
		tokens:     &tokens{},
	}
	if c.endpoint != "" && c.emulator != "" {
		l.Fail(prefix+"_ENDPOINT", c.endpoint, "unset when PUBSUB_EMULATOR_HOST is set: an emulator is reached without TLS or credentials, an endpoint with both")
	}
	c.project = c.creds.ProjectID
	topicVar := prefix + "_TOPIC"
	topic := strings.TrimSpace(l.String(topicVar))
	switch parts := strings.Split(topic, "/"); {
	case topic == "":
		// Reported by the loader as missing.
	case len(parts) == 4 && parts[0] == "projects" && parts[1] != "" && parts[2] == "topics" && topicID.MatchString(parts[3]):
		c.topic = topic
		if c.project == "" {
			c.project = parts[1]
		}
	case topicID.MatchString(topic):
		if c.project == "" {
			l.Require(prefix+"_PROJECT_ID", "required when "+topicVar+" is a topic id and the credentials name no project_id")
		}
		c.topic = "projects/" + c.project + "/topics/" + topic
	default:
		l.Fail(topicVar, topic, "a topic id (3 to 255 letters, digits and - _ . ~ + %, starting with a letter) or projects/<project>/topics/<id>")
	}
	return c
}
