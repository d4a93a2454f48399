package emulators

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// The development account every Azurite serves; the key is the one Microsoft
// publishes for it, not a secret.
const (
	AzuriteAccountName = "devstoreaccount1"
	AzuriteAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is Microsoft's Blob Storage emulator (npm azurite, pinned in
// testenv/node), run in memory: Stop loses all blobs; Start re-creates the
// containers made with CreateContainer.
type Azurite struct {
	AccountName      string
	AccountKey       string
	BlobEndpoint     string // http://127.0.0.1:PORT/devstoreaccount1/ (path-style account)
	ConnectionString string
	*process

	mu         sync.Mutex
	containers []string
}

// StartAzurite starts azurite-blob from testenv/node/node_modules, failing
// the test when `npm ci` has not been run there (`make setup` does).
func StartAzurite(t testing.TB) *Azurite {
	t.Helper()
	bin := filepath.Join(RepoRoot, "testenv", "node", "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("azurite is not installed (%s missing): run `make setup`", bin)
	}
	dir := t.TempDir()
	a := &Azurite{AccountName: AzuriteAccountName, AccountKey: AzuriteAccountKey}
	a.process = startProcess(t, true, func(port int) procs.Spec {
		return procs.Spec{
			Name: "azurite-blob",
			Path: bin,
			Args: []string{
				"--blobHost", "127.0.0.1",
				"--blobPort", strconv.Itoa(port),
				"--inMemoryPersistence",
				"--disableTelemetry",
				// The newest azblob sends an x-ms-version newer than
				// Azurite 3.35 knows; without this every call is a 400.
				"--skipApiVersionCheck",
				// No --location: Azurite refuses it together with
				// --inMemoryPersistence. Whatever it writes (debug logs) lands
				// in the working directory, a temp dir.
			},
			Dir:     dir,
			Ready:   procs.TCPReady(procs.Addr(port)),
			Timeout: 60 * time.Second,
		}
	})
	a.BlobEndpoint = httpURL(a.addr()) + "/" + a.AccountName + "/"
	a.ConnectionString = "DefaultEndpointsProtocol=http;AccountName=" + a.AccountName +
		";AccountKey=" + a.AccountKey + ";BlobEndpoint=" + httpURL(a.addr()) + "/" + a.AccountName + ";"
	return a
}

// Client returns an SDK client authenticated with the shared key.
func (a *Azurite) Client(t testing.TB) *azblob.Client {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(a.ConnectionString, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// CreateContainer creates a container, failing the test on error; Start
// re-creates it after an outage.
func (a *Azurite) CreateContainer(t testing.TB, name string) {
	t.Helper()
	a.createContainer(t, name)
	a.mu.Lock()
	a.containers = append(a.containers, name)
	a.mu.Unlock()
}

func (a *Azurite) createContainer(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Client(t).CreateContainer(ctx, name, nil); err != nil {
		t.Fatalf("create container %q: %v", name, err)
	}
}

// Start runs Azurite again on the same port and re-creates the containers.
func (a *Azurite) Start() {
	a.process.t.Helper()
	if !a.restart() {
		return
	}
	a.mu.Lock()
	names := append([]string(nil), a.containers...)
	a.mu.Unlock()
	for _, n := range names {
		a.createContainer(a.process.t, n)
	}
}
