package blobsink

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/cloud-block/cloud-block/common/sink"
)

// fakeEntra issues a token for the right client secret and refuses others
// as Microsoft Entra does (401 invalid_client).
func fakeEntra(t *testing.T, secret string) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
			tenant := strings.Split(r.URL.Path, "/")[1]
			json.NewEncoder(w).Encode(map[string]string{
				"token_endpoint":         srv.URL + "/" + tenant + "/oauth2/v2.0/token",
				"authorization_endpoint": srv.URL + "/" + tenant + "/oauth2/v2.0/authorize",
				"issuer":                 srv.URL + "/" + tenant + "/v2.0",
			})
		case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token"):
			r.ParseForm()
			if r.Form.Get("client_secret") != secret || !strings.Contains(r.Form.Get("scope"), "https://storage.azure.com/.default") {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 0a1b\r\nCorrelation ID: 2c3d\r\nTimestamp: 2024-03-05 07:08:09Z"}`)
				return
			}
			io.WriteString(w, `{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"good-token"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fakeBlobService accepts PUTs that carry the fake Entra's token.
func fakeBlobService(t *testing.T, puts *atomic.Int64) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good-token" {
			w.Header().Set("x-ms-error-code", "InvalidAuthenticationInfo")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodPut {
			puts.Add(1)
			w.WriteHeader(http.StatusCreated)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A service principal's token reaches the blob service, and a wrong client
// secret is an AuthError whose text holds no secret. The credential is
// built as entraCredential does, plus what a test needs (trust in the test
// certificate).
func TestEntraServicePrincipal(t *testing.T) {
	var puts atomic.Int64
	blobSrv := fakeBlobService(t, &puts)
	for _, tc := range []struct {
		secret string
		ok     bool
	}{{"right-secret", true}, {"wrong-secret-value", false}} {
		t.Run(tc.secret, func(t *testing.T) {
			entra := fakeEntra(t, "right-secret")
			c := loadEnv(t, map[string]string{
				"AZURE_BLOB_CONTAINER_NAME": "ctr", "AZURE_BLOB_ENDPOINT": blobSrv.URL + "/acct",
				"AZURE_BLOB_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47", "AZURE_BLOB_CLIENT_ID": "0e1b2c3d-0000-0000-0000-000000000000",
				"AZURE_BLOB_CLIENT_SECRET": tc.secret, "AZURE_BLOB_AUTHORITY_HOST": entra.URL,
			})
			copts := azcore.ClientOptions{
				Transport: blobSrv.Client(), // trusts httptest's certificate, shared by both servers
			}
			cred, err := entraCredential(c, copts)
			if err != nil {
				t.Fatal(err)
			}
			cl, err := azblob.NewClient(c.Endpoint, cred, &azblob.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: blobSrv.Client()}})
			if err != nil {
				t.Fatal(err)
			}
			s := newSink(c, clients{blobs: cl, ctr: cl.ServiceClient().NewContainerClient(c.Container), where: c.Endpoint}, nil)
			ctx := context.Background()
			err = s.Connect(ctx)
			if err == nil {
				err = s.WriteBatch(ctx, msgs(2, oneTopic))
			}
			if tc.ok {
				if err != nil || puts.Load() != 1 {
					t.Fatalf("with the right secret: %v (%d PUTs)", err, puts.Load())
				}
				return
			}
			if !sink.IsAuth(err) || sink.IsPermanent(err) {
				t.Fatalf("with a wrong secret: got %v, want an AuthError", err)
			}
			if strings.Contains(err.Error(), tc.secret) {
				t.Errorf("the secret is in the error: %v", err)
			}
			want := "authentication: checking container ctr: Microsoft Entra refused a token to the client secret of client 0e1b2c3d-0000-0000-0000-000000000000 in tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 at " +
				entra.URL + "/: 401 invalid_client: AADSTS7000215: Invalid client secret provided."
			if err.Error() != want {
				t.Errorf("message\n%q, want\n%q", err, want)
			}
		})
	}
}
