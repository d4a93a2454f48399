// Package imagetest runs the images `make images` built, under a real
// container engine: each service's image for every platform (the arm ones
// under qemu-user), and the example sensor's. `make test-images` starts the
// project's engine (scripts/setup.sh engine-run), makes its base images,
// builds the images and runs this package and testenv/composetest with
// CLOUDBLOCK_ENGINE set to the engine's address; without it every test
// skips, naming that command.
//
// The package also holds what both use: the engine's client, unique names
// for what a test creates (removed by name when it ends), a network of the
// test's own whose bridge address the host's emulators are forwarded to, the
// destinations' emulators with their read-back, and the broker.
package imagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Services are the destinations, as the Makefile's SERVICES lists them.
var Services = []string{"aws-sqs", "aws-s3", "azure-eh", "azure-blob", "gcp-pubsub", "gcp-storage"}

// Registry is the Makefile's REGISTRY: the images' names start with it.
const Registry = "ghcr.io/cloud-block"

// Platforms are the platforms `make images` builds, with the suffix of
// their tags.
var Platforms = []struct{ Platform, Suffix, Arch, Variant string }{
	{"linux/amd64", "amd64", "amd64", ""},
	{"linux/arm64", "arm64", "arm64", ""},
	{"linux/arm/v7", "armv7", "arm", "v7"},
}

// Root is the repository's root.
var Root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

// Engine is the container engine the tests run on.
type Engine struct {
	Host string // DOCKER_HOST
	CLI  string // the engine's client
	Tag  string // the version tag `make images` gave the images
	// api reaches the engine's API over its unix socket (nil for another
	// DOCKER_HOST): the tests poll containers' state every 100 ms, and a
	// request costs a fraction of a run of the client, a process of its own
	// (about 0.1 s of CPU each).
	api *http.Client
}

// Open returns the engine of `make test-images`, or skips the test.
func Open(t testing.TB) *Engine {
	t.Helper()
	host := os.Getenv("CLOUDBLOCK_ENGINE")
	if host == "" {
		t.Skip("needs a container engine and the images: make test-images starts one and builds them")
	}
	e := &Engine{Host: host, CLI: os.Getenv("DOCKER"), Tag: os.Getenv("CLOUDBLOCK_IMAGE_TAG")}
	if e.CLI == "" {
		e.CLI = "/usr/bin/docker"
	}
	if e.Tag == "" {
		t.Fatal("CLOUDBLOCK_IMAGE_TAG is not set: the tag make images gave the images (make test-images sets it)")
	}
	if sock, ok := strings.CutPrefix(host, "unix://"); ok {
		e.api = &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
		}}
	}
	return e
}

// get decodes the engine's answer to GET path into v. The paths carry no
// API version: the engine answers in its own, and the fields read are in
// every version since Docker 1.12.
func (e *Engine) get(path string, v any) error {
	resp, err := e.api.Get("http://engine" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, v)
}

// Image is the name of an image `make images` built: name is a service or
// "sensor"; suffix is a platform's ("" for the engine's own platform).
func (e *Engine) Image(name, suffix string) string {
	tag := e.Tag
	if suffix != "" {
		tag += "-" + suffix
	}
	return Registry + "/cloud-block-" + name + ":" + tag
}

// Cmd is a command of the engine's client.
func (e *Engine) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, e.CLI, args...)
	c.Env = append(os.Environ(), "DOCKER_HOST="+e.Host)
	return c
}

// Try runs the client and returns its output (stdout, then stderr).
func (e *Engine) Try(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.Cmd(ctx, args...)
	var o, er bytes.Buffer
	c.Stdout, c.Stderr = &o, &er
	err = c.Run()
	return strings.TrimSpace(o.String()), strings.TrimSpace(er.String()), err
}

// Docker runs the client and fails the test on an error.
func (e *Engine) Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := e.Try(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// Inspect decodes `docker inspect` of one object into v (kind: container,
// image or network), asking the API where it can.
func (e *Engine) Inspect(t testing.TB, kind, name string, v any) {
	t.Helper()
	if e.api != nil {
		// Image names hold slashes and colons, which the API's paths take
		// as they are; a network's inspect has no /json.
		path := "/" + kind + "s/" + name + "/json"
		if kind == "network" {
			path = "/networks/" + name
		}
		if err := e.get(path, v); err != nil {
			t.Fatalf("inspect %s %s: %v", kind, name, err)
		}
		return
	}
	out := e.Docker(t, kind, "inspect", name)
	var list []json.RawMessage
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 {
		t.Fatalf("docker %s inspect %s: %v\n%s", kind, name, err, out)
	}
	if err := json.Unmarshal(list[0], v); err != nil {
		t.Fatalf("docker %s inspect %s: %v", kind, name, err)
	}
}

// Containers lists the ids of the containers (running or not) that carry
// every one of labels ("key=value").
func (e *Engine) Containers(t testing.TB, labels ...string) []string {
	t.Helper()
	if e.api == nil {
		args := []string{"ps", "-aq"}
		for _, l := range labels {
			args = append(args, "--filter", "label="+l)
		}
		return strings.Fields(e.Docker(t, args...))
	}
	filters, _ := json.Marshal(map[string][]string{"label": labels})
	var list []struct{ ID string }
	if err := e.get("/containers/json?all=1&filters="+url.QueryEscape(string(filters)), &list); err != nil {
		t.Fatalf("listing containers %v: %v", labels, err)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids
}

// Name is a name no other test uses, for something the test creates.
func Name(kind string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "cbt-" + kind + "-" + hex.EncodeToString(b)
}

// Container is what `docker container inspect` says, the parts the tests read.
type Container struct {
	ID     string
	Name   string
	Config struct {
		User string
	}
	HostConfig struct {
		ReadonlyRootfs bool
	}
	State struct {
		Status     string
		Running    bool
		Pid        int
		ExitCode   int
		OOMKilled  bool
		StartedAt  time.Time
		FinishedAt time.Time
		Health     *struct {
			Status        string
			FailingStreak int
			Log           []struct {
				Start    time.Time
				End      time.Time
				ExitCode int
				Output   string
			}
		}
	}
	RestartCount    int
	Mounts          []struct{ Type, Name, Destination string }
	NetworkSettings struct {
		Networks map[string]struct{ IPAddress string }
	}
}

// Container inspects a container.
func (e *Engine) Container(t testing.TB, name string) Container {
	t.Helper()
	var c Container
	e.Inspect(t, "container", name, &c)
	return c
}

// RemoveContainer removes a container by name when the test ends, printing
// the end of its log first if the test failed.
func (e *Engine) RemoveContainer(t testing.TB, name string) {
	t.Cleanup(func() {
		if t.Failed() {
			if out, errOut, err := e.Try("logs", "--tail", "60", name); err == nil {
				t.Logf("--- the last lines of container %s:\n%s\n%s", name, out, errOut)
			}
		}
		e.Try("rm", "-f", "-v", name)
	})
}

// Volume creates a named volume, removed when the test ends.
func (e *Engine) Volume(t testing.TB) string {
	name := Name("vol")
	e.Docker(t, "volume", "create", name)
	t.Cleanup(func() { e.Try("volume", "rm", "-f", name) })
	return name
}

// Network creates a bridge network of the test's own and returns its name
// and the host's address on it (the bridge's gateway): what the test serves
// there only its containers and the host reach.
func (e *Engine) Network(t testing.TB) (name, gateway string) {
	t.Helper()
	name = Name("net")
	e.Docker(t, "network", "create", "--driver", "bridge", name)
	t.Cleanup(func() { e.Try("network", "rm", name) })
	var n struct {
		IPAM struct{ Config []struct{ Gateway string } }
	}
	e.Inspect(t, "network", name, &n)
	if len(n.IPAM.Config) == 0 || n.IPAM.Config[0].Gateway == "" {
		t.Fatalf("network %s has no gateway address", name)
	}
	return name, n.IPAM.Config[0].Gateway
}

// WaitFor polls cond every 100 ms until it returns nil, and fails the test
// with cond's last error when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
