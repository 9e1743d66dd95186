package observability_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const dashboardPath = "helm/sse-service/dashboards/sse-service.json"

// The parts of a Grafana dashboard the checks read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Datasource  json.RawMessage `json:"datasource"`
	FieldConfig fieldConfig     `json:"fieldConfig"`
	Targets     []panelTarget   `json:"targets"`
	Panels      []panel         `json:"panels"` // a row's panels (collapsed rows hold them)
}

// fieldConfig is a panel's display settings: the defaults, then overrides
// for the series a matcher picks.
type fieldConfig struct {
	Defaults struct {
		Unit string `json:"unit"`
	} `json:"defaults"`
	Overrides []struct {
		Matcher struct {
			ID      string `json:"id"`
			Options any    `json:"options"`
		} `json:"matcher"`
		Properties []struct {
			ID    string `json:"id"`
			Value any    `json:"value"`
		} `json:"properties"`
	} `json:"overrides"`
}

type panelTarget struct {
	RefID        string          `json:"refId"`
	Expr         string          `json:"expr"`
	LegendFormat string          `json:"legendFormat"`
	Exemplar     bool            `json:"exemplar"`
	Datasource   json.RawMessage `json:"datasource"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Query      json.RawMessage `json:"query"` // a string, or an object with a "query" field
	Datasource json.RawMessage `json:"datasource"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// allPanels returns every panel, rows and the panels inside rows included.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// parsedQuery is one query of the dashboard, parsed.
type parsedQuery struct {
	panel  panel
	target panelTarget
	expr   parser.Expr
}

// parsedQueries returns every panel query of d that parses once the
// Grafana variables are substituted; TestDashboardPromQL reports the others.
func parsedQueries(d dashboard) []parsedQuery {
	var out []parsedQuery
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			q, err := substituteGrafanaVars(tg.Expr)
			if err != nil {
				continue
			}
			expr, err := promqlParser.ParseExpr(q)
			if err != nil {
				continue
			}
			out = append(out, parsedQuery{panel: p, target: tg, expr: expr})
		}
	}
	return out
}

// variableQuery returns a query variable's query text.
func variableQuery(v variable) (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object: %v", v.Name, err)
	}
	return o.Query, nil
}

var (
	labelValuesRE = regexp.MustCompile(`^\s*label_values\s*\(\s*(.*\S)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
	queryResultRE = regexp.MustCompile(`^\s*query_result\s*\((.*)\)\s*$`)
	rangeRE       = regexp.MustCompile(`\[([^\]]*)\]`)
)

// variablePromQL returns the PromQL inside a Prometheus variable query:
// the metric selector of label_values(selector, label), or the expression
// of query_result(expr).
func variablePromQL(q string) (string, error) {
	if m := labelValuesRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	if m := queryResultRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	return "", fmt.Errorf("%q: only label_values(selector, label) and query_result(expr) are checked", q)
}

// datasourceUID reads a datasource reference, {"type":..., "uid": ...} or
// the older plain string.
func datasourceUID(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	var o struct {
		UID string `json:"uid"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.UID
}

// scopeLabels are the labels every query of the dashboard is filtered by,
// each with the variable of the same name. job is what keeps a panel to
// sse-service: the runtime (go_*, process_*) and HTTP (http_*) metrics are
// exported by every Go workload of the namespace, and Pod = All matches
// them all.
var scopeLabels = []string{"namespace", "job", "pod"}

// hasMatcher reports whether vs filters label name by the dashboard
// variable of the same name, with a regex matcher, as multi-value
// variables need.
func hasMatcher(vs *parser.VectorSelector, name string) bool {
	for _, m := range vs.LabelMatchers {
		if m.Name == name && m.Type == labels.MatchRegexp && m.Value == "$"+name {
			return true
		}
	}
	return false
}

// TestDashboardPromQL parses every query of the dashboard with the PromQL
// parser and checks the metrics it reads exist, and that every query is
// filtered by the namespace, job and pod variables (scoped to the service).
func TestDashboardPromQL(t *testing.T) {
	d := loadDashboard(t)
	exported, _ := exportedSeries(t)
	queries := 0

	for _, p := range allPanels(d.Panels) {
		if p.Type == "row" {
			if len(p.Targets) > 0 {
				t.Errorf("row %q has queries", p.Title)
			}
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			where := fmt.Sprintf("panel %q query %s", p.Title, tg.RefID)
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s: empty expr", where)
				continue
			}
			queries++
			for _, r := range rangeRE.FindAllStringSubmatch(tg.Expr, -1) {
				if r[1] != "$__rate_interval" {
					t.Errorf("%s: range [%s]: use [$__rate_interval]", where, r[1])
				}
			}
			q, err := substituteGrafanaVars(tg.Expr)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			expr, err := promqlParser.ParseExpr(q)
			if err != nil {
				t.Errorf("%s: %q does not parse: %v", where, q, err)
				continue
			}
			checkMetricNames(t, where, expr, exported)
			checkHistogramQuantiles(t, where, expr)
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					for _, l := range scopeLabels {
						if !hasMatcher(vs, l) {
							t.Errorf("%s: %s is not filtered by %s=~\"$%s\"", where, vs, l, l)
						}
					}
				}
				return nil
			})
		}
	}
	if queries == 0 {
		t.Fatal("no query found in the dashboard")
	}

	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		where := fmt.Sprintf("variable %s", v.Name)
		q, err := variableQuery(v)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		sel, err := variablePromQL(q)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		sel, err = substituteGrafanaVars(sel)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		expr, err := promqlParser.ParseExpr(sel)
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", where, sel, err)
			continue
		}
		checkMetricNames(t, where, expr, exported)
	}
}

// TestDashboardVariablesAndDatasources checks the dashboard imports as is
// and follows the chosen data source, namespace and pod.
func TestDashboardVariablesAndDatasources(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "sse-service" || d.Title != "sse-service" {
		t.Errorf("uid %q, title %q: want sse-service for both (links and the ConfigMap rely on the uid)", d.UID, d.Title)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d, want 39 or more", d.SchemaVersion)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok {
		t.Error("no datasource variable")
	} else {
		var q string
		_ = json.Unmarshal(ds.Query, &q)
		if ds.Type != "datasource" || q != "prometheus" {
			t.Errorf("datasource variable: type %q query %q, want datasource / prometheus", ds.Type, q)
		}
	}
	for name, want := range map[string]string{
		"namespace": "label_values(sse_connected_clients, namespace)",
		"job":       `label_values(sse_connected_clients{namespace=~"$namespace"}, job)`,
		"pod":       `label_values(sse_connected_clients{namespace=~"$namespace", job=~"$job"}, pod)`,
	} {
		v, ok := vars[name]
		if !ok {
			t.Errorf("no %s variable", name)
			continue
		}
		q, err := variableQuery(v)
		if v.Type != "query" || err != nil || q != want {
			t.Errorf("%s variable: type %q query %q (%v), want query %q", name, v.Type, q, err, want)
		}
		if uid := datasourceUID(v.Datasource); uid != "${datasource}" {
			t.Errorf("%s variable: datasource %q, want ${datasource}", name, uid)
		}
	}
	// Job = All must mean the jobs that export sse_ metrics, not every
	// job: Grafana then sends the listed values. A custom all value (say
	// .*) would bring in every workload of the namespace.
	if job, ok := vars["job"]; ok && (!job.IncludeAll || job.AllValue != "") {
		t.Errorf("job variable: includeAll %v, allValue %q; want All, with no custom all value", job.IncludeAll, job.AllValue)
	}

	ids := map[int]string{}
	exemplars := false
	for _, p := range allPanels(d.Panels) {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue // a row queries nothing; its panels are checked themselves
		}
		if uid := datasourceUID(p.Datasource); uid != "${datasource}" {
			t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, uid)
		}
		for _, tg := range p.Targets {
			if uid := datasourceUID(tg.Datasource); uid != "" && uid != "${datasource}" {
				t.Errorf("panel %q query %s: datasource %q, want ${datasource}", p.Title, tg.RefID, uid)
			}
			if tg.Exemplar && strings.Contains(tg.Expr, "histogram_quantile") && strings.Contains(tg.Expr, "sse_event_delivery_seconds_bucket") {
				exemplars = true
			}
		}
	}
	if !exemplars {
		t.Error("the delivery latency panel does not show exemplars (targets' exemplar: true)")
	}
}

// TestDashboardShowsTheContractMetrics fails when a metric the on-call
// relies on has no panel any more.
func TestDashboardShowsTheContractMetrics(t *testing.T) {
	d := loadDashboard(t)
	used := map[string]bool{}
	for _, q := range parsedQueries(d) {
		names, _ := selectorNames(q.expr)
		for _, n := range names {
			used[n] = true
		}
	}
	for _, n := range []string{
		"sse_connected_clients", "sse_max_connections", "sse_connections_total",
		"sse_clients_dropped_total", "sse_events_published_total", "sse_events_sent_total",
		"sse_events_replayed_total", "sse_bytes_sent_total", "sse_heartbeats_sent_total",
		"sse_event_delivery_seconds_bucket", "sse_connection_duration_seconds_bucket",
		"sse_publish_failures_total", "http_requests_total", "http_request_duration_seconds_bucket",
		"go_goroutines", "process_resident_memory_bytes", "process_cpu_seconds_total",
		"process_open_fds", "process_max_fds",
		"sse_broker_connected", "sse_broker_publish_duration_seconds_bucket", "sse_broker_publish_failures_total",
		"sse_broker_replay_duration_seconds_bucket", "sse_broker_replay_failures_total",
		"sse_broker_events_received_total", "sse_broker_events_lost_total",
	} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}
