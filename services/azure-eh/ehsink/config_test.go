package ehsink

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/entra"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

func TestEnvTable(t *testing.T) { sinktest.EnvTable(t, Service) }

const (
	testKey  = "c2VjcmV0LWtleS12YWx1ZQ=="
	hubConn  = "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=" + testKey + ";EntityPath=telemetry"
	nsConn   = "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=" + testKey
	tenantID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

// load runs New over env the way run.Main does, returning the sink, the
// joined configuration error and what was logged.
func load(env map[string]string) (*Sink, error, string) {
	var logs bytes.Buffer
	s, err := sinktest.LoadSink(Service, run.Info{Device: "dev-1", Log: slog.New(slog.NewJSONHandler(&logs, nil))}, env)
	snk, _ := s.(*Sink)
	return snk, err, logs.String()
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"nothing", map[string]string{},
			"AZURE_EH_CONNECTIONSTRING is not set: set it to a connection string with the Send right, or set AZURE_EH_NAMESPACE and AZURE_EH_NAME for Microsoft Entra auth"},
		{"both auth methods", map[string]string{"AZURE_EH_CONNECTION_STRING": hubConn, "AZURE_EH_NAMESPACE": "myns.servicebus.windows.net"},
			`AZURE_EH_NAMESPACE="myns.servicebus.windows.net" is invalid: want unset when AZURE_EH_CONNECTION_STRING is set: configure one way to authenticate, a connection string or Microsoft Entra (AZURE_EH_NAMESPACE)`},
		{"garbage connection string", map[string]string{"AZURE_EH_CONNECTIONSTRING": "sb://myns/" + testKey},
			"AZURE_EH_CONNECTIONSTRING=(secret value not shown) is invalid: want a connection string such as Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=<policy>;SharedAccessKey=<key>;EntityPath=<event hub> (Endpoint and a key or SharedAccessSignature are required)"},
		{"namespace connection string without a hub", map[string]string{"AZURE_EH_CONNECTIONSTRING": nsConn},
			"AZURE_EH_NAME is not set: required: the connection string has no EntityPath (it is the namespace's), so name the event hub"},
		{"hub differs from EntityPath", map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn, "AZURE_EH_NAME": "other"},
			`AZURE_EH_NAME="other" is invalid: want the connection string's EntityPath "telemetry", or unset`},
		{"client secret with a connection string", map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn, "AZURE_EH_CLIENT_SECRET": "s3cret"},
			"AZURE_EH_CLIENT_SECRET=(secret value not shown) is invalid: want unset: it is only used with AZURE_EH_NAMESPACE (Microsoft Entra auth), not with a connection string"},
		{"namespace with a scheme", map[string]string{"AZURE_EH_NAMESPACE": "sb://myns.servicebus.windows.net/", "AZURE_EH_NAME": "telemetry"},
			`AZURE_EH_NAMESPACE="sb://myns.servicebus.windows.net/" is invalid: want a fully qualified namespace such as myns.servicebus.windows.net (no scheme, no path)`},
		{"namespace without a hub", map[string]string{"AZURE_EH_NAMESPACE": "myns.servicebus.windows.net"},
			"AZURE_EH_NAME is not set: required with AZURE_EH_NAMESPACE (Microsoft Entra auth)"},
		{"half a service principal", map[string]string{"AZURE_EH_NAMESPACE": "myns.servicebus.windows.net", "AZURE_EH_NAME": "telemetry", "AZURE_EH_TENANT_ID": tenantID, "AZURE_EH_CLIENT_ID": "app"},
			"AZURE_EH_CLIENT_SECRET is not set: required when AZURE_EH_TENANT_ID or AZURE_EH_CLIENT_ID is set: one credential: a client secret, a client certificate or a federated token file (AZURE_EH_CLIENT_SECRET, AZURE_EH_CLIENT_CERTIFICATE or AZURE_EH_CLIENT_CERTIFICATE_PATH, AZURE_EH_FEDERATED_TOKEN_FILE)"},
		{"bad tenant", map[string]string{"AZURE_EH_NAMESPACE": "myns.servicebus.windows.net", "AZURE_EH_NAME": "telemetry", "AZURE_EH_TENANT_ID": "my tenant", "AZURE_EH_CLIENT_ID": "app", "AZURE_EH_CLIENT_SECRET": "s3cret"},
			`AZURE_EH_TENANT_ID="my tenant" is invalid: want a tenant id: a GUID such as 00000000-0000-0000-0000-000000000000, or a domain such as contoso.onmicrosoft.com`},
		{"bad partition key", map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn, "AZURE_EH_PARTITION_KEY": "sensor"},
			`AZURE_EH_PARTITION_KEY="sensor" is invalid: want one of none, device, topic`},
		{"key and partition id", map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn, "AZURE_EH_PARTITION_KEY": "topic", "AZURE_EH_PARTITION_ID": "1"},
			`AZURE_EH_PARTITION_ID="1" is invalid: want unset when AZURE_EH_PARTITION_KEY is topic: events go to one fixed partition or are routed by a key, not both`},
		{"bad partition id", map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn, "AZURE_EH_PARTITION_ID": "first"},
			`AZURE_EH_PARTITION_ID="first" is invalid: want a partition id such as 0 (partitions are numbered from 0)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err, logs := load(tc.env)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error\n got %v\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error()+logs, testKey) || strings.Contains(err.Error()+logs, "s3cret") {
				t.Fatalf("a secret leaked: %s %s", err, logs)
			}
		})
	}
}

func TestConfigValid(t *testing.T) {
	s, err, _ := load(map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn, "AZURE_EH_PARTITION_KEY": "Device"})
	if err != nil {
		t.Fatal(err)
	}
	if s.where != "myns.servicebus.windows.net/telemetry" || s.keyBy != keyDevice || s.partitionID != "" || s.device != "dev-1" {
		t.Fatalf("%+v", s)
	}
	s, err, _ = load(map[string]string{"AZURE_EH_CONNECTIONSTRING": nsConn, "AZURE_EH_NAME": "telemetry", "AZURE_EH_PARTITION_ID": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if s.where != "myns.servicebus.windows.net/telemetry" || s.partitionID != "3" {
		t.Fatalf("%+v", s)
	}
	for _, env := range []map[string]string{
		{"AZURE_EH_NAMESPACE": "myns.servicebus.windows.net", "AZURE_EH_NAME": "telemetry"},
		{"AZURE_EH_NAMESPACE": "myns.servicebus.windows.net", "AZURE_EH_NAME": "telemetry", "AZURE_EH_TENANT_ID": tenantID, "AZURE_EH_CLIENT_ID": "app", "AZURE_EH_CLIENT_SECRET": "s3cret"},
	} {
		s, err, _ := load(env)
		if err != nil {
			t.Fatal(err)
		}
		if s.where != "myns.servicebus.windows.net/telemetry" || s.dial == nil {
			t.Fatalf("%+v", s)
		}
	}
}

func TestReceiveOnlyVariablesLoggedOnce(t *testing.T) {
	_, err, logs := load(map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn,
		"AZURE_EH_CONSUMER_GROUP": "$Default", "AZURE_EH_STORAGE_ACCOUNT": "acct", "AZURE_EH_STORAGE_ACCOUNT_KEY": "a2V5", "AZURE_EH_CONTAINER_NAME": "ckpt"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "AZURE_EH_CONSUMER_GROUP,AZURE_EH_STORAGE_ACCOUNT,AZURE_EH_STORAGE_ACCOUNT_KEY,AZURE_EH_CONTAINER_NAME") ||
		strings.Contains(logs, "a2V5") {
		t.Fatalf("logs: %s", logs)
	}
	if _, _, logs := load(map[string]string{"AZURE_EH_CONNECTIONSTRING": hubConn}); logs != "" {
		t.Fatalf("logged without receive settings: %s", logs)
	}
}

func TestCredentialChoice(t *testing.T) {
	l := config.NewLoader(func(n string) (string, bool) {
		v, ok := map[string]string{"AZURE_EH_TENANT_ID": tenantID, "AZURE_EH_CLIENT_ID": "app", "AZURE_EH_CLIENT_SECRET": "s3cret"}[n]
		return v, ok
	}, Vars)
	id := entra.Load(l, "AZURE_EH")
	if l.Err() != nil || id.Kind != entra.KindSecret {
		t.Fatalf("loading a client secret: %v", l.Err())
	}
	c, err := newCredential(id)
	if _, ok := c.(*azidentity.DefaultAzureCredential); ok || err != nil {
		t.Fatalf("with a client secret: %T %v", c, err)
	}
	c, err = newCredential(nil)
	if _, ok := c.(*azidentity.DefaultAzureCredential); !ok || err != nil {
		t.Fatalf("without: %T %v", c, err)
	}
}
