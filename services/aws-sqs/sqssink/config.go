package sqssink

import (
	"net/url"
	"slices"
	"strings"

	"github.com/cloud-block/cloud-block/common/awsiot"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink"
)

// Vars are the destination's variables. The first four are the original
// block's names.
var Vars = slices.Concat([]config.Var{
	{Name: "AWS_SQS_QUEUE_NAME", Required: true,
		Doc: "The queue: its name, or its full URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`). It must exist. A name ending in `.fifo` is a FIFO queue."},
	{Name: "AWS_SQS_REGION",
		Doc: "AWS region of the queue, e.g. `eu-west-1`. Default: the region in a queue URL, else the SDK's (`AWS_REGION`, the shared config)."},
	{Name: "AWS_SQS_ACCESS_KEY", Secret: true,
		Doc: "Access key id (with `AWS_SQS_SECRET_KEY`). When both are unset, and the AWS IoT credentials provider is not configured (`AWS_SQS_IOT_*`), the SDK's default credential chain is used: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, the shared config and `AWS_PROFILE`, web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`), ECS and EC2 instance roles."},
	{Name: "AWS_SQS_SECRET_KEY", Secret: true, Doc: "Secret access key."},
	{Name: "AWS_SQS_SESSION_TOKEN", Secret: true, Doc: "Session token, for temporary keys."},
}, awsiot.Vars(prefix), []config.Var{
	{Name: "AWS_SQS_ENDPOINT",
		Doc: "Endpoint URL of an emulator (LocalStack, ElasticMQ) or a VPC endpoint. The SDK's own `AWS_ENDPOINT_URL_SQS` and `AWS_ENDPOINT_URL` work too; this one wins."},
	{Name: "AWS_SQS_MESSAGE_GROUP_ID", Default: groupDevice,
		Doc: "FIFO queues only: the MessageGroupId. `device` (the device UUID: one ordered stream per device), `topic` (one per MQTT topic), or a fixed group id."},
	// Ten is SendMessageBatch's own limit; a larger batch would only be cut again.
	{Name: "BATCH_MAX_MESSAGES", Default: "10",
		Doc: "Most messages in one batch. SQS takes at most 10 a request (the block cuts larger batches to fit)."},
})

// prefix names the AWS IoT credentials provider's variables (AWS_SQS_IOT_*).
const prefix = "AWS_SQS"

// Service is the destination's run.Service.
var Service = run.Service{Name: "aws-sqs", Vars: Vars, New: New}

const (
	groupDevice = "device"
	groupTopic  = "topic"
	// maxQueueName is SQS's limit on a queue name, `.fifo` included.
	maxQueueName = 80
)

// Config is the validated configuration.
type Config struct {
	queueName string // set when the queue was given by name
	queueURL  string // set when it was given by URL
	fifo      bool
	region    string
	// urlRegion is the region named in an AWS queue URL's host, if any.
	urlRegion                          string
	accessKey, secretKey, sessionToken string
	// iot is the AWS IoT credentials provider, when configured.
	iot *awsiot.Provider
	// endpoint overrides the SDK's; from AWS_SQS_ENDPOINT or a non-AWS queue URL.
	endpoint string
	group    string // groupDevice, groupTopic or a fixed id
}

// New reads the variables; problems are collected by l.
func New(l *config.Loader, info run.Info) (sink.Sink, error) {
	st := Config{
		region:       l.String("AWS_SQS_REGION"),
		accessKey:    l.String("AWS_SQS_ACCESS_KEY"),
		secretKey:    l.String("AWS_SQS_SECRET_KEY"),
		sessionToken: l.String("AWS_SQS_SESSION_TOKEN"),
		group:        strings.TrimSpace(l.String("AWS_SQS_MESSAGE_GROUP_ID")),
	}
	st.parseQueue(l)
	st.iot = awsiot.Load(l, prefix, info.Log)
	if st.accessKey != "" && l.IsSet(prefix+"_IOT_CREDENTIALS_ENDPOINT") {
		l.Fail("AWS_SQS_ACCESS_KEY", st.accessKey, "unset when "+l.SetName(prefix+"_IOT_CREDENTIALS_ENDPOINT")+" is set: the credentials come from AWS IoT or from keys, not both")
	}
	if u := l.URL("AWS_SQS_ENDPOINT", "https", "http"); u != nil {
		st.endpoint = u.String()
	}
	if st.region != "" && !config.ValidAWSRegion(st.region) {
		l.Fail("AWS_SQS_REGION", st.region, config.AWSRegionAllowed)
	}
	switch {
	case st.accessKey != "" && st.secretKey == "":
		l.Require("AWS_SQS_SECRET_KEY", "required when AWS_SQS_ACCESS_KEY is set")
	case st.accessKey == "" && st.secretKey != "":
		l.Require("AWS_SQS_ACCESS_KEY", "required when AWS_SQS_SECRET_KEY is set")
	case st.accessKey == "" && st.sessionToken != "":
		l.Require("AWS_SQS_ACCESS_KEY", "required when AWS_SQS_SESSION_TOKEN is set")
	}
	if st.group != groupDevice && st.group != groupTopic && !validGroupID(st.group) {
		l.Fail("AWS_SQS_MESSAGE_GROUP_ID", st.group, "device, topic, or a fixed group id of 1 to 128 printable ASCII characters without spaces")
	}
	return newSink(st, info.Device, info.Log), nil
}

// parseQueue reads AWS_SQS_QUEUE_NAME: a queue name or a queue URL.
func (st *Config) parseQueue(l *config.Loader) {
	v := strings.TrimSpace(l.String("AWS_SQS_QUEUE_NAME"))
	if v == "" {
		return // reported as missing by the loader
	}
	const allowed = "a queue name (letters, digits, - and _, at most 80 characters, ending in .fifo for a FIFO queue) or a queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/my-queue"
	if !strings.Contains(v, "/") {
		if !validQueueName(v) {
			l.Fail("AWS_SQS_QUEUE_NAME", v, allowed)
			return
		}
		st.queueName, st.fifo = v, strings.HasSuffix(v, ".fifo")
		return
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		l.Fail("AWS_SQS_QUEUE_NAME", v, allowed)
		return
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" || !validQueueName(parts[1]) {
		l.Fail("AWS_SQS_QUEUE_NAME", v, allowed)
		return
	}
	st.queueURL, st.fifo = v, strings.HasSuffix(parts[1], ".fifo")
	host := strings.ToLower(u.Hostname())
	if !strings.HasSuffix(host, ".amazonaws.com") && !strings.HasSuffix(host, ".amazonaws.com.cn") {
		// An emulator's queue URL: send the requests where the queue is.
		st.endpoint = u.Scheme + "://" + u.Host
		return
	}
	st.urlRegion = regionOfHost(host)
}

// regionOfHost finds the region in an SQS host name: sqs.<region>.amazonaws.com,
// <vpce>.sqs.<region>.vpce.amazonaws.com or the legacy <region>.queue.amazonaws.com.
func regionOfHost(host string) string {
	labels := strings.Split(host, ".")
	for i, l := range labels {
		if l == "sqs" && i+1 < len(labels) && config.ValidAWSRegion(labels[i+1]) {
			return labels[i+1]
		}
		if l == "queue" && i == 1 && config.ValidAWSRegion(labels[0]) {
			return labels[0]
		}
	}
	return ""
}

func validQueueName(n string) bool {
	base := strings.TrimSuffix(n, ".fifo")
	if base == "" || len(n) > maxQueueName {
		return false
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
