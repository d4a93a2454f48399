package sqssink

import (
	"context"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func TestEnvTable(t *testing.T) { sinktest.EnvTable(t, Service) }

func TestConfigErrors(t *testing.T) {
	const iotKey = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing set", map[string]string{},
			[]string{"AWS_SQS_QUEUE_NAME is not set: required: " + Vars[0].Doc}},
		{"bad name", map[string]string{"AWS_SQS_QUEUE_NAME": "my queue"},
			[]string{`AWS_SQS_QUEUE_NAME="my queue" is invalid: want a queue name (letters, digits, - and _, at most 80 characters, ending in .fifo for a FIFO queue) or a queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/my-queue`}},
		{"bad URL", map[string]string{"AWS_SQS_QUEUE_NAME": "https://sqs.eu-west-1.amazonaws.com/q"},
			[]string{`AWS_SQS_QUEUE_NAME="https://sqs.eu-west-1.amazonaws.com/q" is invalid: want a queue name`}},
		{"half a key pair", map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_SQS_ACCESS_KEY": "AKIAEXAMPLE"},
			[]string{"AWS_SQS_SECRET_KEY is not set: required when AWS_SQS_ACCESS_KEY is set"}},
		{"other half", map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_SQS_SECRET_KEY": "s3cr3t-value"},
			[]string{"AWS_SQS_ACCESS_KEY is not set: required when AWS_SQS_SECRET_KEY is set"}},
		{"every problem at once", map[string]string{
			"AWS_SQS_QUEUE_NAME": "q", "AWS_SQS_REGION": "Ireland", "AWS_SQS_ENDPOINT": "localhost:4566",
			"AWS_SQS_MESSAGE_GROUP_ID": "my group",
		}, []string{
			`AWS_SQS_REGION="Ireland" is invalid: want an AWS region such as eu-west-1 (lower-case letters, digits and hyphens)`,
			`AWS_SQS_ENDPOINT="localhost:4566" is invalid: want a URL such as https://host:port with scheme https, http`,
			`AWS_SQS_MESSAGE_GROUP_ID="my group" is invalid: want device, topic, or a fixed group id of 1 to 128 printable ASCII characters without spaces`,
		}},
		{"endpoint alone", map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_IOT_CREDENTIALS_ENDPOINT": "c2abc.credentials.iot.eu-west-1.amazonaws.com"}, []string{
			"AWS_SQS_IOT_ROLE_ALIAS is not set: required with the AWS IoT credentials provider",
			"AWS_SQS_IOT_CERT is not set: required with the AWS IoT credentials provider",
			"AWS_SQS_IOT_KEY is not set: required with the AWS IoT credentials provider",
		}},
		{"bad values", map[string]string{"AWS_SQS_QUEUE_NAME": "q",
			"AWS_SQS_IOT_CREDENTIALS_ENDPOINT": "http://c2abc.credentials.iot.eu-west-1.amazonaws.com/x", "AWS_IOT_ROLE_ALIAS": "my role",
			"AWS_IOT_THING_NAME": "thing/1", "AWS_IOT_CERT": "/no/such/cert.pem", "AWS_IOT_KEY": "s3cr3t-not-a-key",
		}, []string{
			`AWS_SQS_IOT_CREDENTIALS_ENDPOINT="http://c2abc.credentials.iot.eu-west-1.amazonaws.com/x" is invalid: want the credentials endpoint's host name`,
			`AWS_IOT_ROLE_ALIAS="my role" is invalid: want a role alias of 1 to 128 letters, digits, '_', '=', ',', '@' or '-'`,
			`AWS_IOT_THING_NAME="thing/1" is invalid: want a thing name of 1 to 128 letters, digits, ':', '_' or '-'`,
			`AWS_IOT_CERT="/no/such/cert.pem" is invalid: want PEM text or the path of a PEM file with the device's certificate (neither PEM text nor a readable file: open /no/such/cert.pem: no such file or directory)`,
		}},
		{"key of no certificate", map[string]string{"AWS_SQS_QUEUE_NAME": "q",
			"AWS_IOT_CREDENTIALS_ENDPOINT": "c2abc.credentials.iot.eu-west-1.amazonaws.com", "AWS_IOT_ROLE_ALIAS": "r",
			"AWS_IOT_CERT": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "AWS_IOT_KEY": iotKey,
		}, []string{`AWS_IOT_KEY=(secret value not shown) is invalid: want the private key of AWS_IOT_CERT`}},
		{"keys and AWS IoT", map[string]string{"AWS_SQS_QUEUE_NAME": "q",
			"AWS_SQS_ACCESS_KEY": "AKIAs3cr3t", "AWS_SQS_SECRET_KEY": "s3cr3t-value", "AWS_IOT_CREDENTIALS_ENDPOINT": "c2abc.credentials.iot.eu-west-1.amazonaws.com",
			"AWS_IOT_ROLE_ALIAS": "r", "AWS_IOT_CERT": "/no/such/cert.pem", "AWS_IOT_KEY": iotKey,
		}, []string{
			"AWS_SQS_ACCESS_KEY=(secret value not shown) is invalid: want unset when AWS_IOT_CREDENTIALS_ENDPOINT is set: the credentials come from AWS IoT or from keys, not both",
			`AWS_IOT_CERT="/no/such/cert.pem" is invalid`,
		}},
		{"a thing without an endpoint", map[string]string{"AWS_SQS_QUEUE_NAME": "q", "AWS_IOT_THING_NAME": "sensor-1"},
			[]string{"AWS_SQS_IOT_CREDENTIALS_ENDPOINT is not set: required when AWS_IOT_THING_NAME is set"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.env, testDevice)
			if err == nil {
				t.Fatal("no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Errorf("got %d problems, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("secret in the error: %v", err)
			}
		})
	}
}

// Through run.Run, as the binary reports them: on stderr, one a line, with
// the common variables' problems too, and exit code 2.
func TestConfigErrorsFromRun(t *testing.T) {
	env := map[string]string{"AWS_SQS_SECRET_KEY": "s3cr3t-value", "BATCH_MAX_MESSAGES": "ten", "HTTP_LISTEN": "off"}
	var stdout, stderr strings.Builder
	code := run.Run(context.Background(), Service, nil, sinktest.Env(env), &stdout, &stderr)
	want := "cloud-block-aws-sqs: configuration error:\n" +
		"  - BATCH_MAX_MESSAGES=\"ten\" is invalid: want an integer from 1 to 1000000\n" +
		"  - AWS_SQS_QUEUE_NAME is not set: required: " + Vars[0].Doc + "\n" +
		"  - AWS_SQS_ACCESS_KEY is not set: required when AWS_SQS_SECRET_KEY is set\n"
	if code != run.ExitConfig || stderr.String() != want {
		t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, stderr.String(), want)
	}
	if strings.Contains(stdout.String()+stderr.String(), "s3cr3t") {
		t.Error("secret printed")
	}
}

func TestConfigQueue(t *testing.T) {
	for _, tc := range []struct {
		queue                       string
		name, url, region, endpoint string
		fifo                        bool
	}{
		{queue: "orders.fifo", name: "orders.fifo", fifo: true},
		{queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/q", url: "https://sqs.eu-west-1.amazonaws.com/123456789012/q", region: "eu-west-1"},
		{queue: "https://eu-central-1.queue.amazonaws.com/123456789012/q.fifo", url: "https://eu-central-1.queue.amazonaws.com/123456789012/q.fifo", region: "eu-central-1", fifo: true},
		{queue: "https://vpce-0abc-xyz.sqs.us-east-2.vpce.amazonaws.com/123456789012/q", url: "https://vpce-0abc-xyz.sqs.us-east-2.vpce.amazonaws.com/123456789012/q", region: "us-east-2"},
		{queue: "http://localhost:4566/000000000000/q", url: "http://localhost:4566/000000000000/q", endpoint: "http://localhost:4566"},
	} {
		s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": tc.queue}, testDevice)
		st := s.st
		if st.queueName != tc.name || st.queueURL != tc.url || st.urlRegion != tc.region || st.endpoint != tc.endpoint || st.fifo != tc.fifo {
			t.Errorf("%s: got name %q url %q region %q endpoint %q fifo %v", tc.queue, st.queueName, st.queueURL, st.urlRegion, st.endpoint, st.fifo)
		}
	}
	// AWS_SQS_ENDPOINT wins over a queue URL's host.
	s := mustLoad(t, map[string]string{"AWS_SQS_QUEUE_NAME": "http://localhost:4566/000000000000/q", "AWS_SQS_ENDPOINT": "http://127.0.0.1:9324"}, testDevice)
	if s.st.endpoint != "http://127.0.0.1:9324" {
		t.Errorf("endpoint %q", s.st.endpoint)
	}
}
