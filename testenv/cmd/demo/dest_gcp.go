package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloud-block/cloud-block/testenv/cmd/demo/internal/show"
	"github.com/cloud-block/cloud-block/testenv/procs"
)

// --- GCP Pub/Sub: Google's pstest fake, served by testenv/cmd/pstest-server ----

const (
	demoProject = "demo-project"
	pubsubTopic = "demo-topic"
	demoSub     = "demo-sub"
)

type pubsubDest struct{ h *helper }

func (p *pubsubDest) Describe() string {
	return "Google's Pub/Sub fake (pstest, served by testenv/cmd/pstest-server), topic " + pubsubTopic
}
func (p *pubsubDest) Helpers() []string {
	return []string{"./testenv/cmd/pstest-server", "./testenv/cmd/demo/peek-pubsub"}
}

func (p *pubsubDest) Start(ctx context.Context, d *demo) ([]string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if _, err := d.startProc(procs.Spec{Name: "pstest-server", Path: filepath.Join(d.bin, "pstest-server"),
		Args: []string{"-listen", addr}, Ready: procs.TCPReady(addr)}, true); err != nil {
		return nil, err
	}
	if p.h, err = d.startHelper("peek-pubsub", "-host", addr, "-project", demoProject, "-topic", pubsubTopic, "-sub", demoSub); err != nil {
		return nil, err
	}
	d.say("Pub/Sub fake on %s with topic %s and subscription %s in project %s", addr, pubsubTopic, demoSub, demoProject)
	return []string{"PUBSUB_EMULATOR_HOST=" + addr, "GCP_PUBSUB_PROJECT_ID=" + demoProject, "GCP_PUBSUB_TOPIC=" + pubsubTopic}, nil
}

func (p *pubsubDest) Peek(ctx context.Context) ([]show.Arrival, error) { return p.h.peek(), nil }
func (p *pubsubDest) Stop()                                            {}

// --- GCP Cloud Storage: fake-gcs-server ------------------------------------------

type gcsDest struct {
	url  string
	seen map[string]bool
}

func (g *gcsDest) Describe() string {
	return "fake-gcs-server (a Cloud Storage emulator), bucket " + demoBucket
}
func (g *gcsDest) Helpers() []string { return nil }

func (g *gcsDest) Start(ctx context.Context, d *demo) ([]string, error) {
	bin := filepath.Join(d.root, ".cache", "bin", "fake-gcs-server")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s is missing: `make demo SERVICE=gcp-storage` builds it (scripts/setup.sh tools fake-gcs-server)", rel(d.root, bin))
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	g.url = "http://" + addr
	g.seen = map[string]bool{}
	// Its defaults are https on 0.0.0.0 with a folder under /storage; the
	// public host makes the URLs it hands out point back at this port.
	if _, err := d.startProc(procs.Spec{Name: "fake-gcs-server", Path: bin,
		Args: []string{"-scheme", "http", "-host", "127.0.0.1", "-port", port, "-backend", "memory",
			"-public-host", addr, "-external-url", g.url},
		Ready: httpReady(g.url + "/storage/v1/b")}, true); err != nil {
		return nil, err
	}
	body, _ := json.Marshal(map[string]string{"name": demoBucket})
	resp, err := http.Post(g.url+"/storage/v1/b?project="+demoProject, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("create bucket: %s", resp.Status)
	}
	d.say("Cloud Storage emulator on %s with bucket %s", g.url, demoBucket)
	return []string{"STORAGE_EMULATOR_HOST=" + addr, "GCP_STORAGE_BUCKET=" + demoBucket, objectStoreWait}, nil
}

// Peek lists the bucket through the JSON API and downloads the new objects.
func (g *gcsDest) Peek(ctx context.Context) ([]show.Arrival, error) {
	var list struct {
		Items []struct {
			Name string `json:"name"`
		} `json:"items"`
	}
	if err := g.get(ctx, "/storage/v1/b/"+demoBucket+"/o", func(r io.Reader) error { return json.NewDecoder(r).Decode(&list) }); err != nil {
		return nil, err
	}
	var out []show.Arrival
	for _, it := range list.Items {
		if g.seen[it.Name] {
			continue
		}
		var body []byte
		err := g.get(ctx, "/storage/v1/b/"+demoBucket+"/o/"+url.PathEscape(it.Name)+"?alt=media", func(r io.Reader) (err error) {
			body, err = io.ReadAll(r)
			return err
		})
		if err != nil {
			return out, err
		}
		g.seen[it.Name] = true
		out = append(out, show.Object("gs://"+demoBucket+"/"+it.Name, body))
	}
	return out, nil
}

func (g *gcsDest) get(ctx context.Context, path string, read func(io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return read(resp.Body)
}

func (g *gcsDest) Stop() {}
