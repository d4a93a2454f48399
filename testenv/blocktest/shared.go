package blocktest

import (
	"sync"
	"testing"

	"github.com/cloud-block/cloud-block/testenv/emulators"
)

// The emulators that are processes of their own and slow to start (Azurite
// is Node.js) are shared by the rigs of one run of the suite: one process of
// each kind, each rig in a container, bucket or topic of its own (random
// names). Outages are each rig's proxy (rig.down), so no rig stops what
// another uses.
var shared struct {
	mu      sync.Mutex
	azurite *emulators.Azurite
	gcs     *emulators.GCS
	pubsub  *emulators.PubSub
}

// Kinds of shared emulator, as a target's shares names them.
const (
	shareAzurite = "azurite"
	sharePubSub  = "pubsub"
	shareGCS     = "gcs"
)

// startShared starts, for the life of t (the suite's top-level test, on its
// own goroutine, before the scenarios), the emulators the named targets
// share.
func startShared(t *testing.T, names []string) {
	kinds := map[string]bool{}
	for _, tg := range targets {
		for _, n := range names {
			if tg.name == n && tg.shares != "" {
				kinds[tg.shares] = true
			}
		}
	}
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if kinds[shareAzurite] {
		shared.azurite = emulators.StartAzurite(t)
	}
	if kinds[shareGCS] {
		shared.gcs = emulators.StartGCS(t)
	}
	if kinds[sharePubSub] {
		shared.pubsub = emulators.StartPubSub(t)
	}
	t.Cleanup(func() {
		shared.mu.Lock()
		shared.azurite, shared.gcs, shared.pubsub = nil, nil, nil
		shared.mu.Unlock()
	})
}

// sharedAzurite is the suite's Azurite, or one of t's own when the suite
// has none running (a test outside TestBlock).
func sharedAzurite(t *testing.T) *emulators.Azurite {
	return fromPool(t, func() *emulators.Azurite { return shared.azurite }, emulators.StartAzurite)
}

// sharedGCS is sharedAzurite for fake-gcs-server.
func sharedGCS(t *testing.T) *emulators.GCS {
	return fromPool(t, func() *emulators.GCS { return shared.gcs }, emulators.StartGCS)
}

// sharedPubSub is sharedAzurite for pstest-server.
func sharedPubSub(t *testing.T) *emulators.PubSub {
	return fromPool(t, func() *emulators.PubSub { return shared.pubsub }, emulators.StartPubSub)
}

// fromPool returns the shared emulator pick reads, or starts one for t.
func fromPool[E comparable](t *testing.T, pick func() E, start func(testing.TB) E) E {
	shared.mu.Lock()
	e := pick()
	shared.mu.Unlock()
	var none E
	if e == none {
		e = start(t)
	}
	return e
}
