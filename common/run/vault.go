package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/cloud-block/cloud-block/common/config"
	"github.com/cloud-block/cloud-block/common/sink"
	"github.com/cloud-block/cloud-block/common/vault"
)

const (
	// vaultStartTimeout bounds reading the vault at start, retries included.
	vaultStartTimeout = 2 * time.Minute
	// vaultRefreshTimeout bounds one later re-read.
	vaultRefreshTimeout = time.Minute
	// authRereadGap is the least time between re-reads caused by
	// authentication failures: every batch in flight reports one.
	authRereadGap = 10 * time.Second
)

// vaultState is the Azure Key Vault behind the configuration.
type vaultState struct {
	src     *vault.Source
	store   secretStore // src, or a fake in tests
	env     config.Lookup
	refresh time.Duration
}

// lookup is env, then the vault (env alone without a vault).
func (v *vaultState) lookup(env config.Lookup) config.Lookup {
	if v == nil {
		return env
	}
	return config.Chain(env, v.store.Lookup)
}

// configure reads the configuration: the vault's settings from env only,
// then every variable from env, then the vault. A vault that cannot be read
// is the only error reported (the service's variables cannot be judged
// without it); otherwise every problem is reported at once. tap, if set,
// wraps the lookup the service's variables are read through (tests).
func configure(ctx context.Context, svc Service, env config.Lookup, stdout io.Writer, tap func(config.Lookup) config.Lookup) (*settings, error) {
	v, verr := openVault(ctx, svc, env)
	var readErr *vault.Error
	if errors.As(verr, &readErr) {
		return nil, verr
	}
	lookup := v.lookup(env)
	if tap != nil {
		lookup = tap(lookup)
	}
	s, err := load(svc, lookup, stdout)
	if err != nil && v != nil {
		if names := missing(err); len(names) > 0 {
			err = errors.Join(err, fmt.Errorf("not in Azure Key Vault %s either, as secret %s", v.src.URL(), strings.Join(names, ", ")))
		}
	}
	if err := errors.Join(verr, err); err != nil {
		return nil, err
	}
	if v != nil {
		s.vault = v
		s.fromVault = v.src.Found()
		s.log.Info("variables read from Azure Key Vault", "vault", v.src.URL(), "variables", s.fromVault)
	}
	return s, nil
}

// openVault reads the vault's settings from env and, when a vault is
// configured, the secrets of every variable of svc that env does not set.
func openVault(ctx context.Context, svc Service, env config.Lookup) (*vaultState, error) {
	cfg, err := vault.LoadConfig(env)
	if err != nil || cfg == nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, vaultStartTimeout)
	defer cancel()
	src, err := vault.Open(ctx, cfg, vault.Wanted(svc.AllVars(), env))
	if err != nil {
		return nil, err
	}
	return &vaultState{src: src, store: src, env: env, refresh: cfg.Refresh}, nil
}

// missing lists the secret names of the required variables err reports unset.
func missing(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ce *config.Error
		if errors.As(e, &ce) && ce.Missing {
			out = append(out, vault.SecretName(ce.Name))
		}
	}
	walk(err)
	return out
}

// startRotation wraps the sink so it can be replaced, and re-reads the vault
// on the refresh interval and when the destination rejects its
// credentials. The returned function stops the interval and waits for a
// rotation it started; call it once the pipeline has stopped.
func (s *settings) startRotation(ctx context.Context) (onAuthError func(context.Context), stop func()) {
	sw := &swapSink{cur: s.snk}
	s.snk = sw
	r := &rotator{
		store: s.vault.store,
		env:   s.vault.env,
		sw:    sw,
		log:   s.log,
		gap:   authRereadGap,
		newSink: func(lookup config.Lookup) (sink.Sink, error) {
			l := config.NewLoader(lookup, s.svc.AllVars())
			snk, err := s.svc.New(l, Info{Service: s.svc.Name, Device: s.device, Log: s.log})
			if lerr := l.Err(); lerr != nil {
				return nil, lerr
			}
			return snk, err
		},
	}
	r.built = r.store.Generation()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.every(ctx, s.vault.refresh)
	}()
	return r.onAuthError, func() {
		cancel()
		<-done
	}
}

// secretStore is what the rotator needs of a *vault.Source.
type secretStore interface {
	Lookup(name string) (string, bool)
	Refresh(ctx context.Context) ([]string, error)
	Generation() uint64
}

// rotator re-reads the vault and, when a value changed, builds a new sink
// from the new values and swaps it in.
type rotator struct {
	store   secretStore
	env     config.Lookup
	sw      *swapSink
	log     *slog.Logger
	gap     time.Duration
	newSink func(config.Lookup) (sink.Sink, error)

	mu       sync.Mutex // one rotation at a time
	built    uint64     // the store's generation the current sink was built from
	lastAuth time.Time
}

// onAuthError is the pipeline's OnAuthError: read the vault again at once,
// unless another rotation is under way or one just happened (the caller
// retries after its backoff either way).
func (r *rotator) onAuthError(ctx context.Context) {
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if time.Since(r.lastAuth) < r.gap {
		return
	}
	r.lastAuth = time.Now()
	r.rotate(ctx, "the destination rejected its credentials")
}

// every re-reads the vault on the interval (0: never) until ctx ends.
func (r *rotator) every(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	for {
		// ±10% so a fleet started together does not read the vault together.
		t := time.NewTimer(interval - interval/10 + rand.N(interval/5+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		r.mu.Lock()
		r.rotate(ctx, "refresh interval")
		r.mu.Unlock()
	}
}

// rotate re-reads the vault and rebuilds the sink if the values it was
// built from are stale (also after a rebuild that failed to connect).
func (r *rotator) rotate(ctx context.Context, why string) {
	rctx, cancel := context.WithTimeout(ctx, vaultRefreshTimeout)
	defer cancel()
	changed, err := r.store.Refresh(rctx)
	if ctx.Err() != nil {
		return // shutting down
	}
	if err != nil {
		r.log.Warn("reading Azure Key Vault again failed; keeping the values read before", "why", why, "err", err)
	} else if len(changed) > 0 {
		r.log.Info("values changed in Azure Key Vault", "why", why, "variables", changed)
	}
	gen := r.store.Generation()
	if gen == r.built {
		return
	}
	next, err := r.newSink(config.Chain(r.env, r.store.Lookup))
	if err != nil {
		// Building it again from the same values cannot help: wait for a change.
		r.built = gen
		r.log.Error("the new values from Azure Key Vault are not valid; keeping the destination as it is", "err", err)
		return
	}
	if err := r.sw.swap(ctx, next); err != nil {
		r.log.Error("connecting with the new values from Azure Key Vault failed; keeping the current connection and trying again on the next failure or refresh", "err", err)
		return
	}
	r.built = gen
	r.log.Info("destination reconnected with the new values from Azure Key Vault; other settings take effect at the next start")
}

// swapSink is the sink the pipeline sees when secrets can rotate: it holds
// the current sink and replaces it without the pipeline noticing. Batches
// in flight finish on the old sink; a batch that failed is retried by the
// pipeline on the new one, so nothing is lost.
type swapSink struct {
	// life orders Connect, Close and swap (the sink's lifecycle).
	life      sync.Mutex
	connected bool
	connCtx   context.Context // the context the pipeline connected with: long-lived

	// mu guards cur against the writes in flight.
	mu  sync.RWMutex
	cur sink.Sink
}

func (w *swapSink) Connect(ctx context.Context) error {
	w.life.Lock()
	defer w.life.Unlock()
	if err := w.cur.Connect(ctx); err != nil {
		return err
	}
	w.connected, w.connCtx = true, ctx
	return nil
}

func (w *swapSink) Limits() sink.Limits {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.cur.Limits()
}

func (w *swapSink) WriteBatch(ctx context.Context, batch []sink.Message) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.cur.WriteBatch(ctx, batch)
}

func (w *swapSink) Close(ctx context.Context) error {
	w.life.Lock()
	defer w.life.Unlock()
	w.connected = false
	return w.cur.Close(ctx)
}

// swap makes next the current sink, connecting it first if the current one
// is connected (a failure keeps the current one). The old sink is closed
// once the writes in flight on it are done.
func (w *swapSink) swap(ctx context.Context, next sink.Sink) error {
	w.life.Lock()
	defer w.life.Unlock()
	if w.connected {
		if err := next.Connect(w.connCtx); err != nil {
			_ = next.Close(ctx)
			return err
		}
	}
	w.mu.Lock() // waits for the writes in flight on the old sink
	old := w.cur
	w.cur = next
	w.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The old sink is discarded; an error closing it changes nothing.
	_ = old.Close(cctx)
	return nil
}
