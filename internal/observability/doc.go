// Package observability holds only checks, as tests: the Grafana dashboard
// and the Prometheus alert rules in helm/sse-service/dashboards are parsed
// with Prometheus's own PromQL and rule file parsers, every metric they use
// must be one the service exports, and every alert must have a runbook in
// docs/observability.md. It has no code of its own.
package observability
