// Package observability holds only checks, as tests: the Grafana dashboard
// and the Prometheus alert rules in helm/sse-service/dashboards are parsed
// with Prometheus's own PromQL and rule file parsers, every metric they use
// must be one the service exports (read from the service's registry,
// internal/metrics), every dashboard query must be scoped to the service and
// every rate shown per second, and every alert must have a runbook in
// docs/observability.md. With promtool ($PROMTOOL, or on PATH; required under
// CI=true) it also runs `promtool check rules` and the alert rules' unit
// tests in testdata. It has no code of its own.
//
// It is in the deploy module (deploy/go.mod), so that Prometheus's parsers
// never enter the service's go.mod; `go test -race work` from the
// repository root runs it with the rest.
package observability
