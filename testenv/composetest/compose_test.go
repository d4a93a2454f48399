// Package composetest checks the compose files a balena user copies
// (compose/*.yml) against the code and the Makefile: every variable a block
// service sets (or suggests in a comment) is one the service reads, every
// required one is there, the images are the ones `make images` tags, and the
// files use only what balena's compose 2.1 support accepts.
package composetest

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-block/cloud-block/common/run"
	"github.com/cloud-block/cloud-block/services/aws-s3/s3sink"
	"github.com/cloud-block/cloud-block/services/aws-sqs/sqssink"
	"github.com/cloud-block/cloud-block/services/azure-blob/blobsink"
	"github.com/cloud-block/cloud-block/services/azure-eh/ehsink"
	"github.com/cloud-block/cloud-block/services/gcp-pubsub/pubsubsink"
	"github.com/cloud-block/cloud-block/services/gcp-storage/gcssink"
)

// blocks are the services by name, as the compose files use them.
var blocks = map[string]run.Service{
	"aws-sqs":     sqssink.Service,
	"aws-s3":      s3sink.Service,
	"azure-eh":    ehsink.Service,
	"azure-blob":  blobsink.Service,
	"gcp-pubsub":  pubsubsink.Service,
	"gcp-storage": gcssink.Service,
}

// sensorVars are what examples/sensor reads (a main package: not importable).
var sensorVars = []string{"MQTT_HOST", "MQTT_TOPIC", "MQTT_CLIENT_ID", "INTERVAL", "DEVICE_ID", "COUNT"}

// balenaFields are the service fields balena's supervisor supports (its
// docker-compose reference: compose 2.x, nothing from version 3 such as deploy).
var balenaFields = strings.Fields(`build cap_add cap_drop cgroup_parent command cpu_shares cpu_quota cpuset
	devices depends_on dns dns_opt dns_search domainname entrypoint environment expose extra_hosts
	group_add healthcheck hostname image ipc labels mac_address mem_limit mem_reservation network_mode
	networks oom_kill_disable oom_score_adj pid pids_limit ports privileged read_only restart
	security_opt shm_size stop_grace_period stop_signal sysctls tmpfs ulimits user userns_mode
	volumes working_dir`)

var root = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

type composeFile struct {
	Version  string             `yaml:"version"`
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
	Networks map[string]any     `yaml:"networks"`
}

type service struct {
	Image           string            `yaml:"image"`
	Build           any               `yaml:"build"`
	Restart         string            `yaml:"restart"`
	DependsOn       []string          `yaml:"depends_on"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	ReadOnly        bool              `yaml:"read_only"`
	Volumes         []string          `yaml:"volumes"`
	Environment     map[string]string `yaml:"environment"`
}

// makeVar reads `NAME := value` or `NAME ?= value` from the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `\s*[:?]?=\s*(.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("Makefile has no %s", name)
	}
	return strings.TrimSpace(string(m[1]))
}

func composeFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "compose", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no compose/*.yml (%v)", err)
	}
	return files
}

// TestEveryServiceHasAComposeFile: one per destination, and all.yml with all.
func TestEveryServiceHasAComposeFile(t *testing.T) {
	services := strings.Fields(makeVar(t, "SERVICES"))
	for _, svc := range services {
		if _, ok := blocks[svc]; !ok {
			t.Errorf("the Makefile's SERVICES has %s, which this test does not import", svc)
		}
		f := load(t, filepath.Join(root, "compose", svc+".yml"))
		if _, ok := f.Services["cloud-block-"+svc]; !ok {
			t.Errorf("compose/%s.yml has no cloud-block-%s service", svc, svc)
		}
	}
	all := load(t, filepath.Join(root, "compose", "all.yml"))
	for _, svc := range services {
		if _, ok := all.Services["cloud-block-"+svc]; !ok {
			t.Errorf("compose/all.yml has no cloud-block-%s service", svc)
		}
	}
}

func load(t *testing.T, path string) composeFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rel(path), err)
	}
	return f
}

func rel(p string) string {
	r, _ := filepath.Rel(root, p)
	return r
}

// TestComposeFiles checks each file as balena and the blocks will read it.
func TestComposeFiles(t *testing.T) {
	registry := makeVar(t, "REGISTRY")
	tags := strings.Fields(makeVar(t, "IMAGE_TAGS"))
	for _, path := range composeFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkBalena(t, raw)
			f := load(t, path)
			if f.Version != "2.1" {
				t.Errorf("version %q, want \"2.1\" (what balena reads)", f.Version)
			}
			if len(f.Networks) > 0 {
				t.Errorf("networks: the default network is what the services use")
			}
			if _, ok := f.Services["mqtt"]; !ok {
				t.Errorf("no mqtt service (the blocks' default LOCAL_MQTT_HOST is mqtt://mqtt:1883)")
			}
			for name, s := range f.Services {
				if s.Restart != "always" {
					t.Errorf("%s: restart %q, want always", name, s.Restart)
				}
				for _, v := range s.Volumes {
					src, _, _ := strings.Cut(v, ":")
					if _, ok := f.Volumes[src]; !ok {
						t.Errorf("%s: volume %q is not a named volume of the file (balena has no bind mounts)", name, v)
					}
				}
				for _, d := range s.DependsOn {
					if _, ok := f.Services[d]; !ok {
						t.Errorf("%s: depends on %q, which is not a service of the file", name, d)
					}
				}
				switch {
				case name == "mqtt":
					checkMosquitto(t, s)
				case strings.HasPrefix(name, "cloud-block-"):
					svc := strings.TrimPrefix(name, "cloud-block-")
					checkImage(t, name, s.Image, registry, svc, tags)
					checkBlock(t, f, name, svc, s, raw)
				case name == "sensor":
					checkImage(t, name, s.Image, registry, "sensor", tags)
					for k := range s.Environment {
						if !slices.Contains(sensorVars, k) {
							t.Errorf("sensor: examples/sensor reads no %s", k)
						}
					}
				}
			}
		})
	}
}

// checkBalena rejects what balena does not do with a compose file.
func checkBalena(t *testing.T, raw []byte) {
	t.Helper()
	if strings.Contains(string(raw), "${") {
		t.Errorf("variable interpolation (${...}): balena does not interpolate")
	}
	var top map[string]any
	if err := yaml.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	for k := range top {
		if !slices.Contains([]string{"version", "services", "volumes", "networks"}, k) {
			t.Errorf("top-level %q: not part of compose 2.x as balena reads it", k)
		}
	}
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for name, fields := range doc.Services {
		for k := range fields {
			if !slices.Contains(balenaFields, k) {
				t.Errorf("%s: field %q is not supported by balena's compose 2.x", name, k)
			}
		}
	}
}

// checkImage: the name `make images` gives the image, with a tag it always pushes.
func checkImage(t *testing.T, service, image, registry, name string, tags []string) {
	t.Helper()
	repo, tag, ok := strings.Cut(image, ":")
	if want := registry + "/cloud-block-" + name; !ok || repo != want {
		t.Errorf("%s: image %q, want %s:<tag> (the Makefile's REGISTRY and naming)", service, image, want)
		return
	}
	// $(VERSION) differs per build: the files name a fixed tag of IMAGE_TAGS.
	if strings.HasPrefix(tag, "$") || !slices.Contains(tags, tag) {
		t.Errorf("%s: tag %q is not one of the Makefile's fixed IMAGE_TAGS %v", service, tag, tags)
	}
}

// checkBlock checks a block service against the variables its code reads.
func checkBlock(t *testing.T, f composeFile, name, svc string, s service, raw []byte) {
	t.Helper()
	b, ok := blocks[svc]
	if !ok {
		t.Errorf("%s: no such cloud-block service (want one of the Makefile's SERVICES)", name)
		return
	}
	known := map[string]bool{}
	for _, v := range b.AllVars() {
		known[v.Name] = true
		for _, a := range v.Aliases {
			known[a] = true
		}
	}
	for k := range s.Environment {
		if !known[k] {
			t.Errorf("%s: cloud-block-%s reads no variable %s", name, svc, k)
		}
	}
	// Suggestions in comments (`# NAME: "value"`) must be real names too.
	for _, k := range commentedVars(raw, name) {
		if !known[k] {
			t.Errorf("%s: a comment suggests %s, which cloud-block-%s does not read", name, k, svc)
		}
	}
	for _, v := range b.AllVars() {
		if !v.Required {
			continue
		}
		present := hasKey(s.Environment, v.Name)
		for _, a := range v.Aliases {
			present = present || hasKey(s.Environment, a)
		}
		if !present {
			t.Errorf("%s: required variable %s is missing (a placeholder is enough)", name, v.Name)
		}
	}

	// Shutdown: Docker's SIGKILL must come after the block's own timeout.
	shutdown := 10 * time.Second
	if v := s.Environment["SHUTDOWN_TIMEOUT"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: SHUTDOWN_TIMEOUT %q: %v", name, v, err)
		}
		shutdown = d
	}
	grace, err := time.ParseDuration(s.StopGracePeriod)
	if err != nil || grace <= shutdown+5*time.Second {
		t.Errorf("%s: stop_grace_period %q, want well over SHUTDOWN_TIMEOUT %s", name, s.StopGracePeriod, shutdown)
	}
	// The buffer (default BUFFER_DIR /data/cloud-block/<svc>) on a named volume.
	if dir := s.Environment["BUFFER_DIR"]; dir != "" && !strings.HasPrefix(dir, "/data/") {
		t.Errorf("%s: BUFFER_DIR %q is not on the /data volume", name, dir)
	}
	onData := false
	for _, v := range s.Volumes {
		if _, target, _ := strings.Cut(v, ":"); target == "/data" {
			onData = true
		}
	}
	if !onData {
		t.Errorf("%s: no named volume on /data for the buffer", name)
	}
	if !s.ReadOnly {
		t.Errorf("%s: read_only is not set (the image needs only /data)", name)
	}
	host := s.Environment["LOCAL_MQTT_HOST"]
	if host == "" {
		host = "mqtt://mqtt:1883"
	}
	if h := strings.Split(strings.TrimPrefix(host, "mqtt://"), ":")[0]; f.Services[h].Restart == "" {
		t.Errorf("%s: LOCAL_MQTT_HOST %s names no service of the file", name, host)
	}
	if !slices.Contains(s.DependsOn, "mqtt") {
		t.Errorf("%s: does not depend on mqtt", name)
	}
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// commentedVars returns the variable names suggested in comments within a
// service's section of the raw file.
func commentedVars(raw []byte, service string) []string {
	var out []string
	in := false
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case line == "  "+service+":":
			in = true
			continue
		case in && len(line) > 2 && line[2] != ' ' && line[2] != '#' || strings.HasPrefix(line, "volumes:"):
			in = false // the next service, or the end of services
		}
		if m := commentedVar.FindStringSubmatch(line); in && m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

var commentedVar = regexp.MustCompile(`^\s+#\s*([A-Z][A-Z0-9_]+):`)

// checkMosquitto checks the broker's image and configuration against what
// the delivery promise needs (compose/mosquitto/mosquitto.conf explains it).
func checkMosquitto(t *testing.T, s service) {
	t.Helper()
	if s.Build != "./mosquitto" {
		t.Errorf("mqtt: build %v, want ./mosquitto (balena cannot bind-mount the configuration)", s.Build)
	}
	if !slices.Contains(s.Volumes, "mosquitto-data:/mosquitto/data") {
		t.Errorf("mqtt: no named volume on /mosquitto/data for its persistence")
	}
	conf, err := os.ReadFile(filepath.Join(root, "compose", "mosquitto", "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(conf), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		settings[k] = v
	}
	atLeast := func(key string, min int) {
		n, err := strconv.Atoi(settings[key])
		if err != nil || n < min {
			t.Errorf("mosquitto.conf: %s %q, want at least %d", key, settings[key], min)
		}
	}
	if settings["listener"] != "1883" || settings["allow_anonymous"] != "true" {
		t.Errorf("mosquitto.conf: want `listener 1883` and `allow_anonymous true` for the compose network")
	}
	atLeast("max_inflight_messages", 100)
	atLeast("max_queued_messages", 100000)
	atLeast("max_queued_bytes", 1<<20)
	if settings["persistence"] != "true" || settings["autosave_interval"] == "" {
		t.Errorf("mosquitto.conf: want persistence true and an autosave_interval")
	}
	df, err := os.ReadFile(filepath.Join(root, "compose", "mosquitto", "Dockerfile"))
	if err != nil || !regexp.MustCompile(`(?m)^FROM eclipse-mosquitto:2\.\d+\.\d+$`).Match(df) {
		t.Errorf("compose/mosquitto/Dockerfile: want FROM eclipse-mosquitto:<pinned 2.x version> (%v)", err)
	}
}
