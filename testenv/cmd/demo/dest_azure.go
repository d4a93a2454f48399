package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// nodeDir is testenv/node with its npm packages (make demo runs npm ci).
func nodeDir(d *demo, pkg string) (node, dir string, err error) {
	dir = filepath.Join(d.root, "testenv", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
		return "", "", fmt.Errorf("%s is not installed in testenv/node: `make demo SERVICE=%s` installs it (npm ci)", pkg, d.cfg.Service)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		return "", "", errors.New("node (Node.js 20) not found: `make demo` installs it")
	}
	return node, dir, nil
}

// --- Azure Event Hubs: the project's fake on Node -----------------------------

const demoHub = "demo-hub"

type ehDest struct {
	data   string // the fake's event file: one JSON line per stored event
	offset int64
}

func (e *ehDest) Describe() string {
	return "the project's Event Hubs fake (testenv/node/eventhubs-fake.js, AMQP on Node), hub " + demoHub
}
func (e *ehDest) Helpers() []string { return nil }

func (e *ehDest) Start(ctx context.Context, d *demo) ([]string, error) {
	node, dir, err := nodeDir(d, "rhea")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	e.data = filepath.Join(d.work, "events.jsonl")
	if _, err := d.startProc(procs.Spec{
		Name: "eventhubs-fake", Path: node, Dir: dir,
		Args: []string{filepath.Join(dir, "eventhubs-fake.js"), "--host", "127.0.0.1", "--port", port,
			"--hub", demoHub, "--partitions", "2", "--data", e.data},
		Ready: procs.TCPReady(addr), Timeout: 30 * time.Second,
	}, true); err != nil {
		return nil, err
	}
	d.say("Event Hubs fake on amqp://%s with hub %s (2 partitions)", addr, demoHub)
	// The fake accepts any key; UseDevelopmentEmulator makes the SDK speak
	// plain AMQP, as it does to Microsoft's emulator.
	return []string{"AZURE_EH_CONNECTIONSTRING=Endpoint=sb://" + addr +
		";SharedAccessKeyName=demo;SharedAccessKey=demo;EntityPath=" + demoHub + ";UseDevelopmentEmulator=true"}, nil
}

// Peek reads the events the fake stored since the last call.
func (e *ehDest) Peek(ctx context.Context) ([]show.Arrival, error) {
	f, err := os.Open(e.data)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing stored yet
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(e.offset, io.SeekStart); err != nil {
		return nil, err
	}
	var bodies [][]byte
	parts := map[int]int{}
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // EOF, or a line still being written: read it next time
		}
		e.offset += int64(len(line))
		var ev struct {
			P   int    `json:"p"`
			Raw []byte `json:"raw"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("event file: %w", err)
		}
		body, err := amqpData(ev.Raw)
		if err != nil {
			return nil, err
		}
		bodies = append(bodies, body)
		parts[ev.P]++
	}
	if len(bodies) == 0 {
		return nil, nil
	}
	where := ""
	for p := range 2 {
		if parts[p] > 0 {
			where += " p" + strconv.Itoa(p) + ":" + strconv.Itoa(parts[p])
		}
	}
	return []show.Arrival{show.Messages("stored as events in "+demoHub+" (partitions"+where+")", bodies)}, nil
}

func (e *ehDest) Stop() {}

// --- Azure Blob Storage: Azurite ------------------------------------------------

const demoContainer = "demo-container"

// The development account every Azurite serves; Microsoft publishes the key.
const azuriteKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

type blobDest struct{ h *helper }

func (b *blobDest) Describe() string {
	return "Azurite (Microsoft's Blob Storage emulator, on Node), container " + demoContainer
}
func (b *blobDest) Helpers() []string { return []string{"./testenv/cmd/demo/peek-blob"} }

func (b *blobDest) Start(ctx context.Context, d *demo) ([]string, error) {
	_, dir, err := nodeDir(d, "azurite")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	work := filepath.Join(d.work, "azurite")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	if _, err := d.startProc(procs.Spec{
		Name: "azurite-blob", Path: filepath.Join(dir, "node_modules", ".bin", "azurite-blob"), Dir: work,
		Args: []string{"--blobHost", "127.0.0.1", "--blobPort", port, "--inMemoryPersistence", "--disableTelemetry",
			// The SDK sends an API version newer than Azurite knows.
			"--skipApiVersionCheck"},
		Ready: procs.TCPReady(addr), Timeout: 60 * time.Second,
	}, true); err != nil {
		return nil, err
	}
	conn := "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + azuriteKey +
		";BlobEndpoint=http://" + addr + "/devstoreaccount1;"
	if b.h, err = d.startHelper("peek-blob", "-conn", conn, "-container", demoContainer); err != nil {
		return nil, err
	}
	d.say("Azurite on http://%s with container %s", addr, demoContainer)
	return []string{"AZURE_BLOB_CONNECTIONSTRING=" + conn, "AZURE_BLOB_CONTAINER_NAME=" + demoContainer, objectStoreWait}, nil
}

func (b *blobDest) Peek(ctx context.Context) ([]show.Arrival, error) { return b.h.peek(), nil }
func (b *blobDest) Stop()                                            {}
