package iotfake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Protocol is how an emulator behind Verify reports errors.
type Protocol int

const (
	// JSON is AWS JSON 1.0 (SQS).
	JSON Protocol = iota
	// XML is S3's REST-XML.
	XML
)

// Verify returns h behind a SigV4 check: a request passes only when signed
// with an access key the fake issued, unexpired, carrying that key's
// session token, and the signature is right (the request is signed again
// with the issued secret and the signatures compared). Anything else is
// answered as AWS would: 403 InvalidClientTokenId or SignatureDoesNotMatch,
// 400/403 ExpiredToken. rejected, if not nil, is called for each refusal.
func (f *Fake) Verify(h http.Handler, p Protocol, rejected func(code string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, msg := f.check(r)
		if code == "" {
			h.ServeHTTP(w, r)
			return
		}
		if rejected != nil {
			rejected(code)
		}
		status := http.StatusForbidden
		if code == "ExpiredToken" && p == JSON {
			status = http.StatusBadRequest
		}
		switch p {
		case JSON:
			w.Header().Set("X-Amzn-Query-Error", code+";Sender")
			w.Header().Set("Content-Type", "application/x-amz-json-1.0")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.sqs#" + code, "message": msg})
		case XML:
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(status)
			if r.Method != http.MethodHead {
				xml.NewEncoder(w).Encode(struct {
					XMLName xml.Name `xml:"Error"`
					Code    string
					Message string
				}{Code: code, Message: msg})
			}
		}
	})
}

// check returns the error code and message refusing r ("" when it passes).
// It reads and restores r's body.
func (f *Fake) check(r *http.Request) (code, msg string) {
	auth := r.Header.Get("Authorization")
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return "MissingAuthenticationToken", "Request is missing Authentication Token"
	}
	var cred, signed string
	for _, part := range strings.Split(strings.TrimPrefix(auth, algo), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signed = v
		}
	}
	scope := strings.Split(cred, "/") // AKID/date/region/service/aws4_request
	if len(scope) != 5 {
		return "IncompleteSignature", "bad Credential scope"
	}
	c, ok := f.lookup(scope[0])
	if !ok {
		return "InvalidClientTokenId", "The security token included in the request is invalid."
	}
	if !time.Now().Before(c.expires) {
		return "ExpiredToken", "The security token included in the request is expired"
	}
	if r.Header.Get("X-Amz-Security-Token") != c.token {
		return "InvalidClientTokenId", "The security token included in the request is invalid."
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "IncompleteSignature", "no X-Amz-Date"
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return "IncompleteSignature", "reading the body: " + err.Error()
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	sum := sha256.Sum256(body)
	hash := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case hash == "":
		hash = hex.EncodeToString(sum[:])
	case hash == "UNSIGNED-PAYLOAD" || strings.HasPrefix(hash, "STREAMING-"):
	case hash != hex.EncodeToString(sum[:]):
		return "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed."
	}
	// Sign a copy holding only the signed headers, with the issued secret.
	again, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return "IncompleteSignature", err.Error()
	}
	again.ContentLength = r.ContentLength
	for _, name := range strings.Split(signed, ";") {
		switch name {
		case "host", "content-length", "x-amz-date", "x-amz-security-token":
			continue
		}
		again.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
	}
	s := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = scope[3] == "s3" })
	creds := aws.Credentials{AccessKeyID: scope[0], SecretAccessKey: c.secret, SessionToken: c.token}
	if err := s.SignHTTP(context.Background(), creds, again, hash, scope[3], scope[2], at); err != nil {
		return "IncompleteSignature", err.Error()
	}
	if again.Header.Get("Authorization") != auth {
		return "SignatureDoesNotMatch", fmt.Sprintf("The request signature we calculated does not match the signature you provided (signed headers %s)", signed)
	}
	return "", ""
}
