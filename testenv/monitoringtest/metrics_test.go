package monitoringtest

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

// exportedMetrics runs the file destination's binary against Mosquitto and
// reads its /metrics: metric family name -> type (counter, gauge,
// histogram). It also checks that every sample carries the service label
// the alerts' annotations and the dashboard's variable use.
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	bin := harness.Build(t, "testenv/cmd/filedest")
	broker := harness.StartMosquitto(t, harness.MosquittoOptions{})
	b := harness.NewBlock(t, bin, broker, map[string]string{"FILE_SINK_PATH": filepath.Join(t.TempDir(), "out.jsonl")})
	b.Start() // returns once /live answers and the block is subscribed
	resp, err := http.Get("http://" + b.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	types := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if !strings.Contains(line, `service="`) {
			t.Errorf("/metrics sample without a service label: %s", line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) == 0 {
		t.Fatal("/metrics has no # TYPE lines")
	}
	return types
}

// commonRegistrations finds every metric common/ registers: a call of the
// metrics registry's Counter, CounterFunc, GaugeFunc or Histogram with a
// "cloudblock_..." literal, in the non-test Go files. Every destination's
// binary is common/run.Main with its sink, so these are what every
// service exports.
func commonRegistrations(t *testing.T) map[string]string {
	t.Helper()
	kinds := map[string]string{"Counter": "counter", "CounterFunc": "counter", "GaugeFunc": "gauge", "Histogram": "histogram"}
	regs := map[string]string{}
	root := filepath.Join(harness.RepoRoot(), "common")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || kinds[sel.Sel.Name] == "" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			name, err := strconv.Unquote(lit.Value)
			if err == nil && strings.HasPrefix(name, "cloudblock_") {
				if prev, dup := regs[name]; dup {
					t.Errorf("%s: %s registered twice (%s and %s)", fset.Position(lit.Pos()), name, prev, kinds[sel.Sel.Name])
				}
				regs[name] = kinds[sel.Sel.Name]
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return regs
}

// metricName is a cloudblock metric name as PromQL writes it; a longer
// identifier around it (a colon, an upper-case letter) makes the match one
// no service exports, so the test names it.
var metricName = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])(cloudblock_[a-zA-Z0-9_:]*)`)

// usedMetrics: every cloudblock name in a file, expressions, queries and
// annotations alike.
func usedMetrics(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir(), file))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range metricName.FindAllStringSubmatch(string(b), -1) {
		names = append(names, m[1])
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// known says whether name is one the block exports: a family, or a
// histogram's _bucket, _sum or _count series.
func known(types map[string]string, name string) bool {
	if _, ok := types[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && types[base] == "histogram" {
			return true
		}
	}
	return false
}

// TestMetricsExported: every metric the alert rules and the dashboard name
// is one a running block exports, and the running block exports exactly
// what common/ registers, so it holds for every destination, not only the
// test's file destination.
func TestMetricsExported(t *testing.T) {
	exported := exportedMetrics(t)
	registered := commonRegistrations(t)

	for name, typ := range registered {
		if got, ok := exported[name]; !ok {
			t.Errorf("common/ registers %s (%s) but the running block does not export it", name, typ)
		} else if got != typ {
			t.Errorf("%s: registered in common/ as a %s, exported as a %s", name, typ, got)
		}
	}
	for name, typ := range exported {
		if _, ok := registered[name]; !ok && strings.HasPrefix(name, "cloudblock_") {
			t.Errorf("the file destination exports %s (%s), which common/ does not register: other destinations may not have it", name, typ)
		}
	}

	for _, file := range []string{"alerts.yml", "grafana-dashboard.json"} {
		used := usedMetrics(t, file)
		if len(used) == 0 {
			t.Errorf("monitoring/%s: no cloudblock metric found", file)
		}
		for _, name := range used {
			if !known(exported, name) {
				t.Errorf("monitoring/%s names %s, which the services do not export", file, name)
			}
		}
		t.Logf("monitoring/%s uses %d metrics, all exported: %s", file, len(used), strings.Join(used, " "))
	}
}
