// Package monitoringtest checks monitoring/: the Prometheus alert rules
// (promtool's own check and the unit tests in alerts_test.yml), the Grafana
// dashboard's shape and PromQL, and that every metric either names is one
// the services export, scraped from a running block.
package monitoringtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cloud-block/cloud-block/testenv/harness"
)

func monitoringDir() string { return filepath.Join(harness.RepoRoot(), "monitoring") }

// promtoolPath finds promtool: scripts/setup.sh promtool puts Debian's in
// .cache/bin; one on PATH does too. Missing, the test fails: the rules would
// otherwise go unchecked.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(harness.RepoRoot(), ".cache", "bin", "promtool")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	t.Fatal("promtool not found in .cache/bin or on PATH: run `make setup` (scripts/setup.sh promtool takes it from Debian's prometheus package)")
	return ""
}

// promtool runs promtool in monitoring/ and fails the test with its output
// when it fails.
func promtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtoolPath(t), args...)
	cmd.Dir = monitoringDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool(t, "check", "rules", "alerts.yml")
}

func TestPromtoolTestRules(t *testing.T) {
	promtool(t, "test", "rules", "alerts_test.yml")
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readYAML(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("monitoring/%s: %v", name, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, "alerts.yml", &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("monitoring/alerts.yml has no rules")
	}
	return rules
}

// TestAlertRulesShape: what promtool does not require but an operator
// needs: a `for:` (no page on one bad scrape), a severity to route on, and
// annotations saying what happened and what to do.
func TestAlertRulesShape(t *testing.T) {
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			t.Errorf("a rule without alert: (expr %q): alerts.yml holds alerting rules only", r.Expr)
			continue
		}
		if r.For == "" {
			t.Errorf("%s: no for:", r.Alert)
		}
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
	}
}

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

var instanceLabel = regexp.MustCompile(`\binstance="([^"]*)"`)

// TestAlertRulesTested: alerts_test.yml tests every alert both ways: an
// evaluation where it fires, one where it does not (yet), and in the test
// that fires it a device whose series must not fire it (promtool fails
// the test when an alert fires that exp_alerts does not list).
func TestAlertRulesTested(t *testing.T) {
	var f ruleTests
	readYAML(t, "alerts_test.yml", &f)
	if !slices.Equal(f.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("alerts_test.yml rule_files = %q, want [alerts.yml]", f.RuleFiles)
	}
	fires, silent, bystander := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		var instances []string
		for _, s := range tc.InputSeries {
			if m := instanceLabel.FindStringSubmatch(s.Series); m != nil {
				instances = append(instances, m[1])
			}
		}
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) == 0 {
				silent[at.Alertname] = true
				continue
			}
			fires[at.Alertname] = true
			firing := map[string]bool{}
			for _, a := range at.ExpAlerts {
				firing[a.ExpLabels["instance"]] = true
			}
			for _, in := range instances {
				if !firing[in] {
					bystander[at.Alertname] = true
				}
			}
		}
	}
	for _, r := range alertRules(t) {
		if !fires[r.Alert] {
			t.Errorf("alerts_test.yml: no evaluation where %s fires", r.Alert)
		}
		if !silent[r.Alert] {
			t.Errorf("alerts_test.yml: no evaluation where %s must not fire", r.Alert)
		}
		if !bystander[r.Alert] {
			t.Errorf("alerts_test.yml: the tests where %s fires have no device whose series must not fire it", r.Alert)
		}
	}
}
