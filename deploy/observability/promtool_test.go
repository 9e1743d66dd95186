package observability_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/sse-service/sse-service/deploy/internal/toolbin"
)

// promtoolTestsPath holds promtool's unit tests of the alert rules: each
// main alert fires in the scenario it is meant for, with its labels and
// annotations, and stays quiet in the ones it is not.
const promtoolTestsPath = "deploy/observability/testdata/alerts.promtool-test.yaml"

// TestAlertRulesWithPromtool runs Prometheus's own checks on the alert
// rules: `promtool check rules` (what Prometheus does when it loads them)
// and `promtool test rules` (the alerts evaluated over made-up series).
// promtool is $PROMTOOL, else promtool on PATH; without it the test skips,
// except under CI=true, where it fails.
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool := toolbin.Find(t, "PROMTOOL", "promtool",
		"e.g. GOBIN=/tmp/promtoolbin go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0; "+
			"PROMTOOL=/tmp/promtoolbin/promtool go test ./deploy/observability/")
	for _, args := range [][]string{
		{"check", "rules", alertsPath},
		{"test", "rules", promtoolTestsPath},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			cmd := exec.Command(promtool, args...)
			cmd.Dir = repoPath(t, ".")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if !strings.Contains(string(out), "SUCCESS") {
				t.Fatalf("promtool %s exited 0 without SUCCESS:\n%s", strings.Join(args, " "), out)
			}
			t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
		})
	}
}
