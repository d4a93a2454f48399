package awsiot

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// SDKCredentials hands the provider to the AWS SDK's credentials cache,
// which fetches new credentials ExpiryWindow before they expire (at most
// half their lifetime before: RefreshAt) and, while the endpoint fails,
// keeps the current ones until they expire (Keep). aws-sqs and aws-s3 give
// it to their clients.
func SDKCredentials(p *Provider) aws.CredentialsProvider {
	return aws.NewCredentialsCache(sdkProvider{p}, func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = ExpiryWindow })
}

type sdkProvider struct{ p *Provider }

func (c sdkProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	return sdkCredentials(c.p.Fetch(ctx))
}

func (c sdkProvider) AdjustExpiresBy(v aws.Credentials, d time.Duration) (aws.Credentials, error) {
	v.Expires = c.p.RefreshAt(v.Expires, -d)
	return v, nil
}

func (c sdkProvider) HandleFailToRefresh(_ context.Context, prev aws.Credentials, err error) (aws.Credentials, error) {
	return sdkCredentials(c.p.Keep(prev.AccessKeyID, err))
}

func sdkCredentials(v Credentials, err error) (aws.Credentials, error) {
	if err != nil {
		return aws.Credentials{}, err
	}
	return aws.Credentials{AccessKeyID: v.AccessKeyID, SecretAccessKey: v.SecretAccessKey, SessionToken: v.SessionToken,
		CanExpire: true, Expires: v.Expires, Source: Source}, nil
}
