package run

import (
	"context"
	"io"
	"sync"

	"github.com/cloud-block/cloud-block/common/config"
)

// LoadForTest reads svc's configuration as Run does (the Azure Key Vault
// settings from env, then every variable from env, then the vault) without
// connecting or serving, for tests proving where variables come from. It
// returns each variable the service's configuration found, with the value
// it got; the logs go to stdout.
func LoadForTest(ctx context.Context, svc Service, env config.Lookup, stdout io.Writer) (map[string]string, error) {
	var mu sync.Mutex
	read := map[string]string{}
	_, err := configure(ctx, svc, env, stdout, func(lookup config.Lookup) config.Lookup {
		return func(name string) (string, bool) {
			v, ok := lookup(name)
			if ok {
				mu.Lock()
				read[name] = v
				mu.Unlock()
			}
			return v, ok
		}
	})
	return read, err
}
