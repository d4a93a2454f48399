package iotfake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/cloud-block/cloud-block/common/awsiot"
	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/sink"
)

// provider is common/awsiot's provider for the fake, from the variables a
// device would set.
func provider(t *testing.T, f *Fake, env map[string]string) *awsiot.Provider {
	t.Helper()
	cert, key := f.DeviceCert(t, "sensor-1")
	all := map[string]string{
		"AWS_IOT_CREDENTIALS_ENDPOINT": f.URL, "AWS_IOT_ROLE_ALIAS": f.Alias, "AWS_IOT_THING_NAME": "sensor-1",
		"AWS_IOT_CERT": cert, "AWS_IOT_KEY": key, "AWS_IOT_CA": f.CA,
	}
	for k, v := range env {
		all[k] = v
	}
	l := config.NewLoader(func(n string) (string, bool) { v, ok := all[n]; return v, ok && v != "" }, awsiot.Vars("AWS_SQS"))
	p := awsiot.Load(l, "AWS_SQS", nil)
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Fatal("no provider")
	}
	return p
}

func TestFetchAndVerify(t *testing.T) {
	f := New(t, "block-role", time.Hour)
	p := provider(t, f, nil)
	c, err := p.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.AccessKeyID, "ASIA") || c.SecretAccessKey == "" || c.SessionToken == "" || time.Until(c.Expires) < 59*time.Minute {
		t.Fatalf("credentials %+v", c)
	}
	if f.Fetches() != 1 {
		t.Errorf("fetches %d, want 1", f.Fetches())
	}
	if s := c.String(); strings.Contains(s, c.SecretAccessKey) || strings.Contains(s, c.SessionToken) {
		t.Errorf("Credentials.String shows a secret: %s", s)
	}

	var codes []string
	srv := httptest.NewServer(f.Verify(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }), XML,
		func(code string) { codes = append(codes, code) }))
	defer srv.Close()
	send := func(cr aws.Credentials, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/bucket/a%20key/x.ndjson", strings.NewReader(body))
		req.Header.Set("X-Amz-Content-Sha256", hexSum(body))
		if err := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }).SignHTTP(context.Background(), cr, req, hexSum(body), "s3", "us-east-1", time.Now()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if code := send(good, "hello"); code != 200 {
		t.Fatalf("signed with the issued credentials: HTTP %d (%v)", code, codes)
	}
	wrongSecret, noToken, unknown := good, good, good
	wrongSecret.SecretAccessKey += "x"
	noToken.SessionToken = ""
	unknown.AccessKeyID = "AKIAUNKNOWN"
	for _, cr := range []aws.Credentials{wrongSecret, noToken, unknown} {
		if code := send(cr, "hello"); code != 403 {
			t.Errorf("HTTP %d, want 403", code)
		}
	}
	if want := []string{"SignatureDoesNotMatch", "InvalidClientTokenId", "InvalidClientTokenId"}; strings.Join(codes, ",") != strings.Join(want, ",") {
		t.Errorf("refusals %v, want %v", codes, want)
	}
}

func hexSum(s string) string { return sha256Hex([]byte(s)) }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestExpiredCredentialsRefused(t *testing.T) {
	f := New(t, "block-role", 2*time.Second)
	p := provider(t, f, nil)
	c, err := p.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.Verify(http.NotFoundHandler(), JSON, nil))
	defer srv.Close()
	// Wait for the credentials to expire (the fake's clock is the real one).
	time.Sleep(time.Until(c.Expires) + 10*time.Millisecond)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("{}"))
	cr := aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
	if err := v4.NewSigner().SignHTTP(context.Background(), cr, req, sha256Hex([]byte("{}")), "sqs", "us-east-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("X-Amzn-Query-Error"), "ExpiredToken") {
		t.Errorf("expired credentials: HTTP %d %q, want 400 ExpiredToken", resp.StatusCode, resp.Header.Get("X-Amzn-Query-Error"))
	}
}

func TestRefusals(t *testing.T) {
	f := New(t, "block-role", time.Hour)
	cases := []struct {
		name string
		env  map[string]string
		auth bool
		want string
	}{
		{"unknown alias", map[string]string{"AWS_IOT_ROLE_ALIAS": "other-role"}, true, "HTTP 404: Role alias does not exist"},
		{"thing not the certificate's", map[string]string{"AWS_IOT_THING_NAME": "sensor-2"}, true, "HTTP 403: Access Denied"},
		{"endpoint not trusted", map[string]string{"AWS_IOT_CA": ""}, false, "certificate signed by unknown authority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := provider(t, f, c.env)
			_, err := p.Fetch(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			if sink.IsAuth(err) != c.auth {
				t.Errorf("IsAuth = %v, want %v: %v", sink.IsAuth(err), c.auth, err)
			}
			if !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+f.URL+"/role-aliases/") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q: want the endpoint and %q", err, c.want)
			}
		})
	}
	t.Run("certificate of another CA", func(t *testing.T) {
		cert, key := StrangerCert(t, "sensor-1")
		p := provider(t, f, map[string]string{"AWS_IOT_CERT": cert, "AWS_IOT_KEY": key})
		_, err := p.Fetch(context.Background())
		if err == nil || !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+f.URL) {
			t.Fatalf("a certificate the endpoint does not trust: %v", err)
		}
		if f.Fetches() != 0 {
			t.Errorf("credentials issued to an untrusted certificate")
		}
	})
}

func TestOutageKeepsCurrentCredentials(t *testing.T) {
	f := New(t, "block-role", time.Hour)
	p := provider(t, f, nil)
	c, err := p.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.SetDown(true)
	_, err = p.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "AWS IoT credentials endpoint "+f.URL) {
		t.Fatalf("fetch while down: %v", err)
	}
	var e *awsiot.Error
	if !errors.As(err, &e) || e.Status != 0 || sink.IsAuth(err) {
		t.Errorf("an outage is retryable, not a refusal: %#v", err)
	}
	for _, s := range []string{c.SecretAccessKey, c.SessionToken} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error shows a secret")
		}
	}
	kept, err2 := p.Keep(c.AccessKeyID, err)
	if err2 != nil || kept.AccessKeyID != c.AccessKeyID {
		t.Errorf("Keep while the current credentials are valid: %v, %v", kept, err2)
	}
	if _, err2 := p.Keep("ASIAOTHER", err); err2 != err {
		t.Errorf("Keep of credentials not the last fetched: %v", err2)
	}
	if _, hits := f.Refused(); hits == 0 {
		t.Error("the outage closed no connection")
	}
	f.SetDown(false)
	if _, err := p.Fetch(context.Background()); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

func TestRefreshAt(t *testing.T) {
	f := New(t, "block-role", time.Hour)
	p := provider(t, f, nil)
	now := time.Now()
	// An hour's credentials: the window before expiry.
	if got := p.RefreshAt(now.Add(time.Hour), awsiot.ExpiryWindow); got.Sub(now) < 54*time.Minute || got.Sub(now) > 55*time.Minute {
		t.Errorf("1h credentials refreshed %s from now, want 55m", got.Sub(now))
	}
	// Four seconds' credentials: half-way.
	if got := p.RefreshAt(now.Add(4*time.Second), awsiot.ExpiryWindow); got.Sub(now) < 1900*time.Millisecond || got.Sub(now) > 2100*time.Millisecond {
		t.Errorf("4s credentials refreshed %s from now, want 2s", got.Sub(now))
	}
	// Expired ones: at their expiry.
	if got := p.RefreshAt(now.Add(-time.Second), awsiot.ExpiryWindow); !got.Equal(now.Add(-time.Second)) {
		t.Errorf("expired credentials refreshed at %s", got)
	}
}
