package sqssink

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/cloud-block/cloud-block/common/awsiot"
)

// iotCredentials hands the AWS IoT credentials provider to the SDK's
// credentials cache, which fetches new credentials awsiot.ExpiryWindow
// before they expire (at most half their lifetime before: RefreshAt) and,
// while the endpoint fails, keeps the current ones until they expire (Keep).
type iotCredentials struct{ p *awsiot.Provider }

func newIOTCredentials(p *awsiot.Provider) aws.CredentialsProvider {
	return aws.NewCredentialsCache(iotCredentials{p}, func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = awsiot.ExpiryWindow })
}

func (c iotCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	return sdkCredentials(c.p.Fetch(ctx))
}

func (c iotCredentials) AdjustExpiresBy(v aws.Credentials, d time.Duration) (aws.Credentials, error) {
	v.Expires = c.p.RefreshAt(v.Expires, -d)
	return v, nil
}

func (c iotCredentials) HandleFailToRefresh(_ context.Context, prev aws.Credentials, err error) (aws.Credentials, error) {
	return sdkCredentials(c.p.Keep(prev.AccessKeyID, err))
}

func sdkCredentials(v awsiot.Credentials, err error) (aws.Credentials, error) {
	if err != nil {
		return aws.Credentials{}, err
	}
	return aws.Credentials{AccessKeyID: v.AccessKeyID, SecretAccessKey: v.SecretAccessKey, SessionToken: v.SessionToken,
		CanExpire: true, Expires: v.Expires, Source: awsiot.Source}, nil
}
