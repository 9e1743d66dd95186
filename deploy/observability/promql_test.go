package observability_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/sse-service/sse-service/internal/metrics"
)

// externalMetrics are used by the dashboard or the alert rules but are not
// exported by the service: they come from elsewhere and are allowed by name.
var externalMetrics = map[string]string{
	// kube-state-metrics, for SSENoReadyReplica.
	"kube_deployment_status_replicas_ready": "kube-state-metrics",
	"kube_deployment_spec_replicas":         "kube-state-metrics",
	// Prometheus's own per-target health series, for SSENoReadyReplica.
	"up": "prometheus",
}

// repoPath returns a path relative to the repository root.
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", filepath.FromSlash(rel))
}

// recordingRegisterer passes registrations on to a registry and keeps the
// collectors, so that metrics declared without any series yet (a vector
// whose label values are set on first use) are known by their descriptors.
type recordingRegisterer struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
	r.Registerer.MustRegister(cs...)
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// exportedSeries returns the series names the service exports: built from
// the service's own registry (metrics.New, with the Go runtime and process
// collectors it registers). Histograms and summaries give their _bucket,
// _sum and _count series. Metrics that are declared but have no series yet
// are returned in declaredOnly: their type is unknown, so their name and,
// unless it ends in _total (a counter), the histogram suffixes are allowed.
func exportedSeries(t *testing.T) (series map[string]bool, declaredOnly []string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	rec := &recordingRegisterer{Registerer: reg}
	// If metrics.New changes its parameters, adapt this call: the check
	// needs the registry the service's /metrics serves.
	metrics.New(rec)
	metrics.NewBroker(rec) // with SSE_BROKER=nats
	metrics.NewConns(rec)
	metrics.RegisterHistory(rec, func() metrics.HistoryStats { return metrics.HistoryStats{} }) // with SSE_BROKER=memory

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering the service's metrics: %v", err)
	}
	series = map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			series[name+"_bucket"] = true
			series[name+"_sum"] = true
			series[name+"_count"] = true
		case dto.MetricType_SUMMARY:
			series[name] = true
			series[name+"_sum"] = true
			series[name+"_count"] = true
		default:
			series[name] = true
		}
	}
	gathered := map[string]bool{}
	for _, mf := range mfs {
		gathered[mf.GetName()] = true
	}
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqNameRE.FindStringSubmatch(d.String())
			if m == nil || gathered[m[1]] {
				continue
			}
			gathered[m[1]] = true
			declaredOnly = append(declaredOnly, m[1])
			series[m[1]] = true
			if strings.HasSuffix(m[1], "_total") {
				continue // a counter, by Prometheus's naming rules
			}
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				series[m[1]+s] = true
			}
		}
	}
	sort.Strings(declaredOnly)
	return series, declaredOnly
}

// grafanaVars replaces Grafana's variables in a query: $name, ${name},
// ${name:format} and [[name]].
var grafanaVarRE = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)

// grafanaValues are what the variables stand for when a query is parsed.
// The dashboard's own variables stay as they are ($namespace...): they only
// ever appear in label matchers' strings, where TestDashboardPromQL looks
// for them.
var grafanaValues = map[string]string{
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__range":         "1h",
	"namespace":       "$namespace",
	"job":             "$job",
	"pod":             "$pod",
}

func substituteGrafanaVars(q string) (string, error) {
	var unknown []string
	out := grafanaVarRE.ReplaceAllStringFunc(q, func(m string) string {
		sm := grafanaVarRE.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		v, ok := grafanaValues[name]
		if !ok {
			unknown = append(unknown, name)
			return m
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown Grafana variable(s) %v", unknown)
	}
	return out, nil
}

var promqlParser = parser.NewParser(parser.Options{})

// selectorNames returns the metric name of every vector selector in expr;
// a selector without a fixed name (say {__name__=~"sse_.*"}) is an error,
// since its metrics cannot be checked.
func selectorNames(expr parser.Expr) (names []string, err error) {
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					err = fmt.Errorf("selector %s matches metric names by pattern", vs)
				}
				name = m.Value
			}
		}
		if name == "" && err == nil {
			err = fmt.Errorf("selector %s has no metric name", vs)
		}
		names = append(names, name)
		return nil
	})
	return names, err
}

// checkMetricNames fails for every metric name in expr that is neither
// exported by the service nor an allowed external one.
func checkMetricNames(t *testing.T, where string, expr parser.Expr, exported map[string]bool) {
	t.Helper()
	names, err := selectorNames(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
	}
	for _, n := range names {
		if n == "" || exported[n] {
			continue
		}
		if _, ok := externalMetrics[n]; ok {
			continue
		}
		t.Errorf("%s: metric %q is not exported by the service (nor an allowed external metric)", where, n)
	}
}

// checkHistogramQuantiles fails when a histogram_quantile's argument is not
// an aggregation that keeps le (the usual mistake that yields NaN or a
// wrong quantile) over _bucket series.
func checkHistogramQuantiles(t *testing.T, where string, expr parser.Expr) {
	t.Helper()
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		call, ok := n.(*parser.Call)
		if !ok || call.Func.Name != "histogram_quantile" || len(call.Args) != 2 {
			return nil
		}
		arg := call.Args[1]
		for {
			p, ok := arg.(*parser.ParenExpr)
			if !ok {
				break
			}
			arg = p.Expr
		}
		agg, ok := arg.(*parser.AggregateExpr)
		if !ok || agg.Without || !containsString(agg.Grouping, "le") {
			t.Errorf("%s: histogram_quantile over %s: aggregate with by (le, ...)", where, call.Args[1])
			return nil
		}
		names, _ := selectorNames(agg.Expr)
		for _, name := range names {
			if !strings.HasSuffix(name, "_bucket") {
				t.Errorf("%s: histogram_quantile over %q, not a _bucket series", where, name)
			}
		}
		return nil
	})
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestExportedSeriesComeFromTheService(t *testing.T) {
	series, declaredOnly := exportedSeries(t)
	for _, name := range []string{
		"sse_connected_clients", "sse_connections_total", "sse_event_delivery_seconds_bucket",
		"go_goroutines",
	} {
		if !series[name] {
			t.Errorf("the service's registry has no %s: is exportedSeries reading the right registry?", name)
		}
	}
	if len(declaredOnly) > 0 {
		t.Logf("declared without series yet (allowed by name; by _bucket/_sum/_count too unless _total): %v", declaredOnly)
	}
	for _, name := range []string{"sse_max_connections", "sse_publish_failures_total", "http_requests_total", "http_request_duration_seconds_bucket"} {
		if !series[name] {
			t.Logf("not (yet) exported by the service: %s", name)
		}
	}
}
