package monitoringtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The datasource every panel, target and query variable names: the
// dashboard's own variable, so it imports into any Grafana as is.
const dsType, dsUID = "prometheus", "${datasource}"

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasource     `json:"datasource"`
}

type dashboard struct {
	ID         any     `json:"id"`
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir(), "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("monitoring/grafana-dashboard.json: %v", err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// queryText is a query variable's PromQL: a string, or Grafana's
// {"query": "..."} object.
func queryText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	json.Unmarshal(raw, &o)
	return o.Query
}

// An expression is one PromQL query of the dashboard: a panel's target or a
// query variable's.
type expression struct{ where, expr string }

func dashboardExpressions(d dashboard) []expression {
	var out []expression
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, expression{fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, expression{fmt.Sprintf("variable %s", v.Name), queryText(v.Query)})
		}
	}
	return out
}

func isVar(ds *datasource) bool { return ds != nil && ds.Type == dsType && ds.UID == dsUID }

func TestDashboardShape(t *testing.T) {
	d := readDashboard(t)
	if d.ID != nil {
		t.Errorf("id = %v, want null (Grafana assigns it on import)", d.ID)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both are needed", d.UID, d.Title)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || queryText(v.Query) != dsType {
		t.Errorf("no variable datasource of type datasource for %s: %+v", dsType, v)
	}
	if v, ok := vars["instance"]; !ok || v.Type != "query" {
		t.Errorf("no query variable instance (the device): %+v", v)
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if !isVar(v.Datasource) {
			t.Errorf("variable %s: datasource %+v, want {%s %s}", v.Name, v.Datasource, dsType, dsUID)
		}
		if queryText(v.Query) == "" {
			t.Errorf("variable %s: no query", v.Name)
		}
	}

	ids := map[int]string{}
	n := 0
	for _, p := range allPanels(d.Panels) {
		if prev, ok := ids[p.ID]; ok || p.ID == 0 {
			t.Errorf("panel %q: id %d not unique (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q: no gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		n++
		if !isVar(p.Datasource) {
			t.Errorf("panel %q: datasource %+v, want {%s %s}", p.Title, p.Datasource, dsType, dsUID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("panel %q target %s: empty expression", p.Title, tg.RefID)
			}
			if tg.Datasource != nil && !isVar(tg.Datasource) {
				t.Errorf("panel %q target %s: datasource %+v, want {%s %s}", p.Title, tg.RefID, tg.Datasource, dsType, dsUID)
			}
		}
	}
	if n == 0 {
		t.Error("the dashboard has no panels")
	}
}

// grafanaVar is a Grafana variable in a query: $name, ${name} or
// ${name:format}. The interval ones become a range, the others a regexp
// matching anything (they only appear in =~ matchers).
var (
	grafanaInterval = regexp.MustCompile(`\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}`)
	grafanaVar      = regexp.MustCompile(`\$\{[a-zA-Z0-9_]+(:[a-z]+)?\}|\$[a-zA-Z_][a-zA-Z0-9_]*`)
)

// Grafana's own query functions for variables, around PromQL.
var (
	labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
	queryResult = regexp.MustCompile(`^\s*query_result\((.+)\)\s*$`)
)

// promQL is the PromQL in a query: a variable's label_values(expr, label)
// or query_result(expr) gives its expr.
func promQL(q string) (string, error) {
	for _, re := range []*regexp.Regexp{labelValues, queryResult} {
		if m := re.FindStringSubmatch(q); m != nil {
			return m[1], nil
		}
	}
	if strings.HasPrefix(strings.TrimSpace(q), "label_values(") || strings.HasPrefix(strings.TrimSpace(q), "label_names(") {
		return "", fmt.Errorf("%q: give label_values a series selector, so that the choices are cloud-block's", q)
	}
	return q, nil
}

// TestDashboardPromQL: every expression parses, checked by promtool as
// recording rules with the variables filled in as Grafana would.
func TestDashboardPromQL(t *testing.T) {
	type rec struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rec
	for i, e := range dashboardExpressions(readDashboard(t)) {
		q, err := promQL(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		q = grafanaInterval.ReplaceAllString(q, "5m")
		q = grafanaVar.ReplaceAllString(q, ".*")
		name := fmt.Sprintf("dashboard:expression_%d", i)
		t.Logf("%s: %s", name, e.where) // promtool's errors name the rule
		rules = append(rules, rec{name, q})
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, "check", "rules", p)
}
