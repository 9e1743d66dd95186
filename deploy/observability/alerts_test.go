package observability_test

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
)

const (
	alertsPath = "helm/sse-service/dashboards/alerts.yaml"
	docsPath   = "docs/observability.md"
)

// The alerts the runbooks and the chart rely on.
var wantAlerts = []string{
	"SSESlowClientDropsHigh",
	"SSEConnectionsNearLimit",
	"SSEDeliveryLatencyHigh",
	"SSEPublishFailures",
	"SSENoReadyReplica",
	"SSEBackendDisconnected",
	"SSEBackendFailing",
	"SSEBackendEventsLost",
}

var severities = map[string]bool{"critical": true, "warning": true, "info": true}

// TestAlertRules parses the rules file as Prometheus does (rulefmt checks
// the YAML, the PromQL of every rule and the annotation templates), then
// checks metric names, for, severity, annotations and runbook anchors.
func TestAlertRules(t *testing.T) {
	path := repoPath(t, alertsPath)
	groups, errs := rulefmt.ParseFile(path, false, model.LegacyValidation, promqlParser, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Errorf("rulefmt: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	exported, _ := exportedSeries(t)
	anchors := markdownAnchors(t, repoPath(t, docsPath))

	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = "record " + r.Record
			}
			where := "rule " + name
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			checkMetricNames(t, where, expr, exported)
			checkHistogramQuantiles(t, where, expr)
			if r.Alert == "" {
				continue
			}
			if seen[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			seen[r.Alert] = true
			if r.For <= 0 {
				t.Errorf("%s: no for (a single bad scrape would page)", where)
			}
			if !severities[r.Labels["severity"]] {
				t.Errorf("%s: severity %q, want one of critical, warning, info", where, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			url := r.Annotations["runbook_url"]
			want := docsPath + "#" + strings.ToLower(r.Alert)
			if !strings.HasSuffix(url, want) {
				t.Errorf("%s: runbook_url %q does not end with %s", where, url, want)
			}
			if i := strings.LastIndex(url, "#"); i < 0 || !anchors[url[i+1:]] {
				t.Errorf("%s: runbook_url %q: no such heading in %s", where, url, docsPath)
			}
		}
	}
	for _, a := range wantAlerts {
		if !seen[a] {
			t.Errorf("alert %s is missing", a)
		}
	}
}

var (
	headingRE    = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	anchorDropRE = regexp.MustCompile(`[^\p{L}\p{N}\s_-]`)
)

// githubAnchor is the anchor GitHub gives a heading: lowercase,
// punctuation other than - and _ removed, spaces turned into hyphens.
func githubAnchor(heading string) string {
	s := strings.ToLower(strings.TrimSpace(heading))
	s = anchorDropRE.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, " ", "-")
}

// markdownAnchors returns the anchors of the headings of a Markdown file
// (repeated headings get -1, -2, ... as on GitHub; fenced code is skipped).
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	anchors := map[string]bool{}
	count := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		m := headingRE.FindStringSubmatch(line)
		if fenced || m == nil {
			continue
		}
		a := githubAnchor(m[1])
		if n := count[a]; n > 0 {
			anchors[a+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[a] = true
		}
		count[a]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return anchors
}

func TestGitHubAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"SSESlowClientDropsHigh":  "sseslowclientdropshigh",
		"How late are events?":    "how-late-are-events",
		"Traces (OpenTelemetry)":  "traces-opentelemetry",
		"`sse_connected_clients`": "sse_connected_clients",
	} {
		if got := githubAnchor(in); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", in, got, want)
		}
	}
}
