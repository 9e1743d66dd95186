package httpapi

// The OpenAPI document (api/openapi.yaml) against the server: it is valid
// and lists every route and no other (here), and real exchanges conform to
// it (openapi_traffic_test.go, with the checks of openapi_exchange_test.go
// and openapi_stream_test.go).

import (
	"context"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/sse-service/sse-service/api"
	"github.com/sse-service/sse-service/internal/broker/memory"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/web"
)

// openAPIFile names the document in messages.
const openAPIFile = "api/openapi.yaml"

// loadOpenAPI loads and validates the document the service embeds.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIFile, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIFile, err)
	}
	return doc
}

// asRunOptions are the options run gives the server with no SSE_* variable
// set (the defaults the document states: 64 KiB events, batches of 1000
// events and 1 MiB, 32 topics per stream), with the demo page and the
// document of the binary.
func asRunOptions(t *testing.T) Options {
	t.Helper()
	static, err := fs.Sub(web.Static, "static")
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		PublishTokens:   []string{testToken},
		MaxEventBytes:   64 << 10,
		MaxBatchEvents:  1000,
		MaxBatchBytes:   1 << 20,
		MaxTopics:       32,
		MaxConnections:  10000,
		MaxConnsPerIP:   100,
		ReconnectJitter: 5 * time.Second,
		AuthCookie:      "sse_token",
		Static:          static,
		OpenAPI:         api.OpenAPI,
	}
}

// The document is valid OpenAPI 3.1. That run serves it as is, is checked
// in cmd/sse-service.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	if doc := loadOpenAPI(t); !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi = %q, want 3.1", doc.OpenAPI)
	}
}

// specPathsOfEchoRoute maps an Echo route path to the OpenAPI path(s) that
// document it:
//   - a ":name" segment is the path parameter "{name}"
//     (/v1/topics/:topic/events -> /v1/topics/{topic}/events);
//   - the catch-all "/*" (GET, the demo page and its files) is documented
//     as two paths: "/" (the page, index.html) and "/{asset}" (app.js,
//     style.css). Any other wildcard has no mapping and fails the test, so
//     a new one gets documented here and in the spec.
func specPathsOfEchoRoute(t *testing.T, p string) []string {
	t.Helper()
	if p == "/*" {
		return []string{"/", "/{asset}"}
	}
	if strings.Contains(p, "*") {
		t.Errorf("Echo route %q has a wildcard with no mapping to the OpenAPI document", p)
		return nil
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if name, ok := strings.CutPrefix(s, ":"); ok {
			segs[i] = "{" + name + "}"
		}
	}
	return []string{strings.Join(segs, "/")}
}

func TestRoutesMatchTheOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	inSpec := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inSpec[method+" "+path] = true
		}
	}
	broker := memory.New(memory.Options{})
	defer broker.Close()
	log := slog.New(slog.DiscardHandler)
	srv := NewServer(stream.NewHub(broker, stream.NopMetrics{}, log, stream.Options{}), &countingMetrics{}, log, asRunOptions(t))
	inEcho := map[string]bool{}
	for _, r := range srv.routes.Routes() {
		for _, p := range specPathsOfEchoRoute(t, r.Path) {
			inEcho[r.Method+" "+p] = true
		}
	}
	if len(inEcho) == 0 {
		t.Fatal("Echo has no routes")
	}
	var onlyEcho, onlySpec []string
	for k := range inEcho {
		if !inSpec[k] {
			onlyEcho = append(onlyEcho, k)
		}
	}
	for k := range inSpec {
		if !inEcho[k] {
			onlySpec = append(onlySpec, k)
		}
	}
	slices.Sort(onlyEcho)
	slices.Sort(onlySpec)
	if len(onlyEcho) > 0 {
		t.Errorf("routes served but not in api/openapi.yaml: %v", onlyEcho)
	}
	if len(onlySpec) > 0 {
		t.Errorf("operations in api/openapi.yaml that the service does not route: %v", onlySpec)
	}
}
