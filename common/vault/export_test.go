package vault

import (
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// FastRetry shortens c's retry delays so tests of transient faults and
// unreachable vaults take milliseconds.
func FastRetry(c *Config) {
	c.retry = policy.RetryOptions{MaxRetries: 2, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 20 * time.Millisecond, TryTimeout: 5 * time.Second}
}
