package blobsink

import (
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/common/sink/sinktest"
)

const ways = "exactly one way to authenticate: AZURE_BLOB_STORAGE_ACCOUNT with AZURE_BLOB_STORAGE_ACCOUNT_KEY; or AZURE_BLOB_CONNECTIONSTRING; or AZURE_BLOB_TENANT_ID and AZURE_BLOB_CLIENT_ID with AZURE_BLOB_CLIENT_SECRET, AZURE_BLOB_CLIENT_CERTIFICATE (or AZURE_BLOB_CLIENT_CERTIFICATE_PATH) or AZURE_BLOB_FEDERATED_TOKEN_FILE; or AZURE_BLOB_USE_ENTRA=true"

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"nothing set", map[string]string{}, "AZURE_BLOB_CONTAINER_NAME is not set: required: Container the blobs are written to.\n" +
			"AZURE_BLOB_STORAGE_ACCOUNT_KEY is not set: " + ways},
		{"two methods", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT": "acct1",
			"AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey, "AZURE_BLOB_CONNECTIONSTRING": "UseDevelopmentStorage=true"},
			"AZURE_BLOB_CONNECTIONSTRING=(secret value not shown) is invalid: want unset, since AZURE_BLOB_STORAGE_ACCOUNT_KEY is set too: " + ways},
		{"bad names", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "My_Data", "AZURE_BLOB_STORAGE_ACCOUNT": "https://acct1.blob.core.windows.net", "AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey},
			`AZURE_BLOB_CONTAINER_NAME="My_Data" is invalid: want 3 to 63 lower-case letters, digits and hyphens, starting and ending with a letter or digit, no two hyphens in a row` + "\n" +
				`AZURE_BLOB_STORAGE_ACCOUNT="https://acct1.blob.core.windows.net" is invalid: want the storage account's name: 3 to 24 lower-case letters and digits (not its URL)`},
		{"key without account, not base64", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT_KEY": "hunter2!"},
			"AZURE_BLOB_STORAGE_ACCOUNT is not set: required with AZURE_BLOB_STORAGE_ACCOUNT_KEY\n" +
				"AZURE_BLOB_STORAGE_ACCOUNT_KEY=(secret value not shown) is invalid: want the account's access key as the portal shows it (base64)"},
		{"half a service principal", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT": "acct1", "AZURE_BLOB_TENANT_ID": "contoso.onmicrosoft.com"},
			"AZURE_BLOB_CLIENT_SECRET is not set: required when AZURE_BLOB_TENANT_ID or AZURE_BLOB_CLIENT_ID is set: one credential: a client secret, a client certificate or a federated token file (AZURE_BLOB_CLIENT_SECRET, AZURE_BLOB_CLIENT_CERTIFICATE or AZURE_BLOB_CLIENT_CERTIFICATE_PATH, AZURE_BLOB_FEDERATED_TOKEN_FILE)\n" +
				"AZURE_BLOB_CLIENT_ID is not set: required with a service principal (AZURE_BLOB_TENANT_ID and AZURE_BLOB_CLIENT_ID name the app registration)"},
		{"entra without account", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_USE_ENTRA": "true"},
			"AZURE_BLOB_STORAGE_ACCOUNT is not set: required with Microsoft Entra auth unless AZURE_BLOB_ENDPOINT is set"},
		{"endpoint with a SAS", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_USE_ENTRA": "yes", "AZURE_BLOB_ENDPOINT": "https://acct1.blob.core.windows.net/?sp=c&sig=abc"},
			`AZURE_BLOB_ENDPOINT="https://acct1.blob.core.windows.net/?(query not shown)" is invalid: want a URL without a query: give a SAS as AZURE_BLOB_CONNECTIONSTRING=BlobEndpoint=...;SharedAccessSignature=...`},
		{"key and a client secret", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT": "acct1", "AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey, "AZURE_BLOB_CLIENT_SECRET": "hunter2"},
			"AZURE_BLOB_CLIENT_SECRET=(secret value not shown) is invalid: want unset, since AZURE_BLOB_STORAGE_ACCOUNT_KEY is set too: " + ways},
		{"entra over http", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_USE_ENTRA": "true", "AZURE_BLOB_ENDPOINT": "http://127.0.0.1:10000/devstoreaccount1"},
			`AZURE_BLOB_ENDPOINT="http://127.0.0.1:10000/devstoreaccount1" is invalid: want an https URL with Microsoft Entra auth, which never sends its token over plain http`},
		{"endpoint with a connection string", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_CONNECTIONSTRING": "AccountName=acct1;AccountKey=" + devKey, "AZURE_BLOB_ENDPOINT": "http://127.0.0.1:10000/devstoreaccount1"},
			`AZURE_BLOB_ENDPOINT="http://127.0.0.1:10000/devstoreaccount1" is invalid: want unset when AZURE_BLOB_CONNECTIONSTRING is set: the connection string names the account and endpoint (AccountName=, BlobEndpoint=)`},
		{"malformed connection string", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_CONNECTIONSTRING": "AccountKey=" + devKey},
			"AZURE_BLOB_CONNECTIONSTRING=(secret value not shown) is invalid: want a value the Azure SDK accepts (connection string needs either AccountName or BlobEndpoint)"},
		{"gzip in message mode", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT": "acct1", "AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey,
			"AZURE_BLOB_OBJECT_MODE": "message", "AZURE_BLOB_GZIP": "true", "AZURE_BLOB_UPLOAD_CONCURRENCY": "0"},
			"AZURE_BLOB_UPLOAD_CONCURRENCY=\"0\" is invalid: want an integer from 1 to 64\n" +
				`AZURE_BLOB_GZIP="true" is invalid: want false when AZURE_BLOB_OBJECT_MODE is message, which stores each payload unchanged`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := config.NewLoader(sinktest.Env(tc.env), Service.AllVars())
			s, err := New(l, run.Info{})
			if s != nil || err == nil || err.Error() != l.Err().Error() {
				t.Fatalf("New returned %v, %v; want no sink and the loader's problems", s, err)
			}
			got := ""
			if err := l.Err(); err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("errors\n%s\nwant\n%s", got, tc.want)
			}
			for _, secret := range []string{devKey, "hunter2", "UseDevelopmentStorage", "sig=abc"} {
				if strings.Contains(got, secret) {
					t.Errorf("a secret value is in the error: %s", got)
				}
			}
		})
	}
}

func TestConfigValid(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		auth     auth
		endpoint string
	}{
		{"original names", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT": "acct1", "AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey},
			authSharedKey, "https://acct1.blob.core.windows.net/"},
		{"azurite by endpoint", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_STORAGE_ACCOUNT": "devstoreaccount1", "AZURE_BLOB_STORAGE_ACCOUNT_KEY": devKey,
			"AZURE_BLOB_ENDPOINT": "http://127.0.0.1:10000/devstoreaccount1"}, authSharedKey, "http://127.0.0.1:10000/devstoreaccount1"},
		{"sas", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_CONNECTIONSTRING": "BlobEndpoint=https://acct1.blob.core.windows.net;SharedAccessSignature=sv=2024-08-04&sp=c&sig=abc"},
			authConnString, ""},
		{"service principal", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "$root", "AZURE_BLOB_STORAGE_ACCOUNT": "acct1",
			"AZURE_BLOB_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47", "AZURE_BLOB_CLIENT_ID": "0e1b2c3d-0000-0000-0000-000000000000", "AZURE_BLOB_CLIENT_SECRET": "s3cret"},
			authEntra, "https://acct1.blob.core.windows.net/"},
		{"default credential, sovereign", map[string]string{"AZURE_BLOB_CONTAINER_NAME": "telemetry", "AZURE_BLOB_USE_ENTRA": "true",
			"AZURE_BLOB_ENDPOINT": "https://acct1.blob.core.usgovcloudapi.net/"}, authEntraDefault, "https://acct1.blob.core.usgovcloudapi.net/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := config.NewLoader(sinktest.Env(tc.env), Service.AllVars())
			s, err := New(l, run.Info{Device: "dev1"})
			if err := l.Err(); err != nil {
				t.Fatal(err)
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.(*Sink).cfg
			if c.Auth != tc.auth || c.Endpoint != tc.endpoint {
				t.Errorf("auth %v endpoint %q, want %v %q", c.Auth, c.Endpoint, tc.auth, tc.endpoint)
			}
			if c.Concurrency != 8 || c.Create {
				t.Errorf("defaults: concurrency %d create %v", c.Concurrency, c.Create)
			}
			if strings.Contains(s.(*Sink).cl.where, "sig=") {
				t.Errorf("the endpoint kept for messages holds the SAS: %s", s.(*Sink).cl.where)
			}
		})
	}
}

// The batching defaults an object store wants replace the common ones.
func TestBatchDefaults(t *testing.T) {
	want := map[string]string{"BATCH_MAX_WAIT": "60s", "BATCH_MAX_BYTES": "4MiB", "BATCH_MAX_MESSAGES": "10000"}
	for _, v := range Service.AllVars() {
		if d, ok := want[v.Name]; ok && v.Default != d {
			t.Errorf("%s defaults to %q, want %q", v.Name, v.Default, d)
		}
	}
}
