package s3sink

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cloud-block/cloud-block/common/awsiot"
)

// newClient builds the S3 client: from the given keys, from the AWS IoT
// credentials provider, or, without either, from the SDK's default
// configuration for its credential chain. Every other
// setting comes from our variables either way.
func (s *Sink) newClient(ctx context.Context) (API, func(), error) {
	// Our own transport, so Close can drop its connections. It keeps enough
	// idle ones for message mode, where BATCH_CONCURRENCY batches (up to
	// 64) of putConcurrency PUTs each may be in flight, to reuse them.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	// S3 answers as soon as it has the body; a silent server must not hold
	// a batch forever (the request itself may take long on a slow uplink).
	tr.ResponseHeaderTimeout = time.Minute
	opts := func(o *s3.Options) {
		o.Region = s.cfg.Region
		o.UsePathStyle = s.cfg.PathStyle
		if s.cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.cfg.Endpoint)
		}
		o.HTTPClient = &http.Client{Transport: tr}
		// The pipeline retries with its own backoff and never gives up; the
		// SDK's retry quota would only turn the first requests after an
		// outage into "retry quota exceeded" failures.
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) { so.RateLimiter = ratelimit.None })
		// Checksums only where S3 requires them: the default adds CRC32
		// headers that some S3-compatible stores refuse. SigV4 signs the
		// payload's SHA-256, which S3 verifies.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	}
	if s.cfg.AccessKey != "" {
		creds := credentials.NewStaticCredentialsProvider(s.cfg.AccessKey, s.cfg.SecretKey, s.cfg.Token)
		return s3.New(s3.Options{Credentials: creds}, opts), tr.CloseIdleConnections, nil
	}
	if s.cfg.IoT != nil {
		return s3.New(s3.Options{Credentials: awsiot.SDKCredentials(s.cfg.IoT)}, opts), tr.CloseIdleConnections, nil
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the AWS SDK's default configuration (AWS_S3_ACCESS_KEY is not set): %w", err)
	}
	cfg.Credentials = checkedCredentials{cfg.Credentials}
	return s3.NewFromConfig(cfg, opts), tr.CloseIdleConnections, nil
}

// checkedCredentials marks a failure of the default chain to produce
// credentials, which the SDK reports without a type of its own, so it is
// classified as an authentication problem.
type checkedCredentials struct{ aws.CredentialsProvider }

func (c checkedCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	v, err := c.CredentialsProvider.Retrieve(ctx)
	if err != nil {
		return v, &credentialsError{err: err}
	}
	return v, nil
}

type credentialsError struct{ err error }

func (e *credentialsError) Error() string {
	return "no credentials from the default chain (AWS_S3_ACCESS_KEY is not set): " + e.err.Error()
}
func (e *credentialsError) Unwrap() error { return e.err }
