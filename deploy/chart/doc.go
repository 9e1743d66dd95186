// Package chart holds no code: its tests render the Helm chart in
// helm/sse-service (with the helm binary named by $HELM, or helm on PATH)
// for the default and the production-like values, and check the invariants
// operators rely on: the grace period covers preStop and the drain, probes
// and metrics use the admin port, nothing routes or opens the admin port to
// everyone, the publish tokens and JWT keys come from mounted Secrets (never
// plain env), private topics have a key source, the pod runs
// restricted, and the dashboard and alert rules are shipped intact.
//
// Without helm the tests skip, saying how to enable them (they fail
// instead when CI=true):
//
//	GOBIN=/tmp/helmbin go install helm.sh/helm/v3/cmd/helm@v3.22.0
//	HELM=/tmp/helmbin/helm go test ./deploy/chart/
package chart
