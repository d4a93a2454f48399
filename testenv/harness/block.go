package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloud-block/cloud-block/testenv/procs"
)

// built holds, per build (package, tags, release), the path of its binary
// once this process has built it.
var built sync.Map // key -> *builtBinary

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BinCache is where the test binaries are built: CLOUDBLOCK_TEST_BIN if set,
// else .cache/testbin in the repository. Every test process builds into the
// same files: `go build -o` relinks only when a binary's inputs changed, so
// the packages of one `go test` run, and the next run, link each binary once
// instead of once per process.
func BinCache() string {
	if d := os.Getenv("CLOUDBLOCK_TEST_BIN"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(), ".cache", "testbin")
}

// Build compiles the main package at pkgDir (relative to the repo root,
// e.g. "services/aws-sqs" or "testenv/cmd/filedest") once per test process.
func Build(t testing.TB, pkgDir string) string { return build(t, pkgDir, "", false) }

// BuildTags is Build with build tags (comma-separated), e.g. "spoolseam"
// for the spool's test seam (SeamBuildTag).
func BuildTags(t testing.TB, pkgDir, tags string) string { return build(t, pkgDir, tags, false) }

// BuildRelease builds as the images do: static (CGO_ENABLED=0), -trimpath,
// stripped (-s -w), for measuring memory and size as users get them.
func BuildRelease(t testing.TB, pkgDir string) string { return build(t, pkgDir, "", true) }

func build(t testing.TB, pkgDir, tags string, release bool) string {
	t.Helper()
	variant := "dev"
	if release {
		variant = "release"
	}
	if tags != "" {
		variant += "-" + strings.ReplaceAll(tags, ",", "-")
	}
	v, _ := built.LoadOrStore(pkgDir+"#"+variant, &builtBinary{})
	b := v.(*builtBinary)
	b.once.Do(func() { b.path, b.err = buildCached(pkgDir, tags, variant, release) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// buildCached runs `go build -o` into BinCache()/<variant>/<package path>,
// holding a lock on that binary so two processes do not link it at once.
func buildCached(pkgDir, tags, variant string, release bool) (string, error) {
	out := filepath.Join(BinCache(), variant, filepath.FromSlash(pkgDir), filepath.Base(pkgDir))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	unlock, err := procs.LockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	if release {
		args = append(args, "-trimpath", "-ldflags", "-s -w")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = filepath.Join(RepoRoot(), pkgDir)
	if release {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build -tags %q %s: %v\n%s", tags, pkgDir, err, b)
	}
	return out, nil
}

// Block is a running cloud-block binary.
type Block struct {
	t       testing.TB
	Bin     string
	Env     map[string]string
	BufDir  string
	HTTP    string // 127.0.0.1:port
	proc    *procs.Proc
	logDir  string
	Starts  int
	allLogs []string
	// NoSubscribeWait makes Start return once /live answers, without waiting
	// for the MQTT subscription (for tests of a block that cannot connect).
	NoSubscribeWait bool
}

// NewBlock prepares a block for bin with the broker and a fresh buffer
// dir; env adds or overrides variables. Start runs it.
func NewBlock(t testing.TB, bin string, broker *Mosquitto, env map[string]string) *Block {
	b := &Block{t: t, Bin: bin, BufDir: t.TempDir(), HTTP: procs.Addr(procs.FreePort(t)), logDir: t.TempDir()}
	b.Env = map[string]string{
		"LOCAL_MQTT_HOST":       broker.URL(),
		"BUFFER_DIR":            b.BufDir,
		"HTTP_LISTEN":           b.HTTP,
		"BALENA_DEVICE_UUID":    "test-device",
		"RETRY_INITIAL_BACKOFF": "50ms",
		"RETRY_MAX_BACKOFF":     "1s",
		"LOG_LEVEL":             "info",
	}
	for k, v := range env {
		b.Env[k] = v
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			for _, l := range b.allLogs {
				data, _ := os.ReadFile(l)
				s := string(data)
				if len(s) > 8000 {
					s = "..." + s[len(s)-8000:]
				}
				t.Logf("--- block log %s:\n%s", l, s)
			}
		}
	})
	return b
}

// Start runs the binary and waits for /live and for the MQTT subscription:
// before the first subscription of a persistent session, the broker does
// not queue anything for the block, so a test publishing earlier could
// lose messages that no block is promised.
func (b *Block) Start() {
	b.t.Helper()
	var env []string
	for k, v := range b.Env {
		env = append(env, k+"="+v)
	}
	p, err := procs.StartNoCleanup(procs.Spec{
		Name: filepath.Base(b.Bin), Path: b.Bin, Env: env,
		Ready: func() error {
			resp, err := http.Get("http://" + b.HTTP + "/live")
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		},
	}, b.logDir)
	if err != nil {
		b.t.Fatal(err)
	}
	b.proc = p
	b.Starts++
	b.allLogs = append(b.allLogs, p.LogPath)
	if !b.NoSubscribeWait {
		b.WaitMetric("cloudblock_mqtt_connected", 30*time.Second, func(v float64) bool { return v == 1 })
	}
}

// Kill sends SIGKILL.
func (b *Block) Kill() {
	if b.proc != nil {
		b.proc.Kill()
		b.proc = nil
	}
}

// Stop sends SIGTERM and waits.
func (b *Block) Stop() {
	if b.proc != nil {
		b.proc.Stop()
		b.proc = nil
	}
}

// Running reports whether the process is alive.
func (b *Block) Running() bool {
	if b.proc == nil {
		return false
	}
	select {
	case <-b.proc.Done():
		return false
	default:
		return true
	}
}

// Proc is the current process (nil when stopped).
func (b *Block) Proc() *procs.Proc { return b.proc }

// Logs returns everything every run of the block printed.
func (b *Block) Logs() string {
	var sb strings.Builder
	for _, l := range b.allLogs {
		data, _ := os.ReadFile(l)
		sb.Write(data)
	}
	return sb.String()
}

// Metrics scrapes /metrics into name -> value (labels dropped; histograms
// appear as their _sum and _count).
func (b *Block) Metrics() (map[string]float64, error) {
	resp, err := http.Get("http://" + b.HTTP + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return ParseMetrics(resp.Body)
}

// Metric returns one metric's value (or -1 when unavailable).
func (b *Block) Metric(name string) float64 {
	m, err := b.Metrics()
	if err != nil {
		return -1
	}
	v, ok := m[name]
	if !ok {
		return -1
	}
	return v
}

// ParseMetrics reads the Prometheus text format.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			if strings.Contains(name, "_bucket") {
				continue
			}
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// Ready returns /ready's status code and body.
func (b *Block) Ready() (int, string) {
	resp, err := http.Get("http://" + b.HTTP + "/ready")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// WaitMetric waits until cond(metric value) holds.
func (b *Block) WaitMetric(name string, timeout time.Duration, cond func(float64) bool) {
	b.t.Helper()
	var last float64
	err := procs.WaitFor(context.Background(), timeout, func() error {
		last = b.Metric(name)
		if cond(last) {
			return nil
		}
		return fmt.Errorf("%s = %v", name, last)
	})
	if err != nil {
		b.t.Fatalf("waiting for metric: %v", err)
	}
}
