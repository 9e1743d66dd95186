// Package e2e holds the end-to-end tests: the service binary as a real
// process, Debian's Chromium driven by playwright-core (browser/driver.mjs),
// Debian's nginx configured like a default ingress proxy, a TCP proxy the
// tests can sever, an in-process NATS server, and the client matrix: five SSE
// client libraries (Chromium's EventSource, npm eventsource and
// fetch-event-source in clients/, go-sse, r3labs/sse), each in the same five
// scenarios.
//
// They run with the rest of the suite (`go test -race work`). What they need
// is installed once by `e2e/setup` (chromium, nginx; playwright-core and the
// Node clients with the Node 22 they run on from the npm registry; never a
// downloaded browser); without it each test skips and says so, except under
// CI=true where a missing tool fails the test.
// Screenshots and service logs are written to artifacts/e2e/ at the top of
// the repository (or $SSE_E2E_ARTIFACTS).
package e2e
