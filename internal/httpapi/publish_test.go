package httpapi

// Tests of the publish handlers (publish.go): POST /v1/topics/{topic}/events
// and POST /v1/events. Who may publish (static tokens, JWTs) is in
// access_test.go; the documented answers are checked against the OpenAPI
// document in openapi_traffic_test.go.

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sse-service/sse-service/internal/auth"
)

func TestPublishErrorsReachTheClientWithoutInternalDetail(t *testing.T) {
	ts := startServer(t, Options{})
	r := ts.do(t, http.MethodPost, "/v1/topics/a/events", map[string]string{"Content-Type": "application/json"}, `{"data":"x"}`)
	wantJSONError(t, "no token", r, http.StatusUnauthorized)
	if got, want := r.header.Get("WWW-Authenticate"), `Bearer realm="sse-service"`; got != want {
		t.Fatalf("no token: WWW-Authenticate %q, want %q", got, want)
	}

	authed := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testToken}
	r = ts.do(t, http.MethodPost, "/v1/topics/a/events", authed, `{"data":"x"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("publish: status %d, want %d (body %q)", r.status, http.StatusCreated, r.body)
	}

	ts.broker.Close() // the backend goes away
	r = ts.do(t, http.MethodPost, "/v1/topics/a/events", authed, `{"data":"x"}`)
	msg := wantJSONError(t, "backend closed", r, http.StatusServiceUnavailable)
	wantRetryAfter(t, "backend closed", r, 2*time.Second)
	if strings.Contains(msg, "memory") || strings.Contains(msg, "closed") {
		t.Fatalf("backend closed: error %q leaks the backend's own error", msg)
	}
}

// A batch is all or nothing: one event the token may not publish refuses
// every event of it.
func TestARefusedBatchPublishesNothing(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	ts := startServer(t, Options{Verifier: v})
	orders := mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), publishGrant("orders:*"))
	r, body := ts.subscribe(t, "/v1/events?topic=orders:1&topic=other", nil)
	wantStream(t, "subscribe", r, body)

	refused := ts.do(t, http.MethodPost, "/v1/events", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + orders},
		`[{"topic":"orders:1","data":"refused"},{"topic":"other","data":"refused"}]`)
	wantJSONError(t, "batch", refused, http.StatusForbidden)
	marker := ts.do(t, http.MethodPost, "/v1/topics/orders:1/events", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + orders}, `{"data":"marker"}`)
	if marker.status != http.StatusCreated {
		t.Fatalf("marker: status %d (body %q)", marker.status, marker.body)
	}
	if ev, err := body.ReadEvent(); err != nil || ev.Data != "marker" {
		t.Fatalf("first event after the refused batch %+v (%v), want the marker", ev, err)
	}
}

// A request whose body never comes is answered anyway: at once when the
// answer does not need the body (a refused token), after the body deadline
// (408) when it does; either way the connection is closed after. So is one
// with a chunked body (with a Content-Length too, it may be smuggling).
func TestBodiesThatNeverComeAreAnswered(t *testing.T) {
	// A body deadline far beyond rawExchange's 5 s: the answers that do
	// not need the body must come without waiting for it.
	patient := startServer(t, Options{BodyTimeout: time.Minute})
	impatient := startServer(t, Options{BodyTimeout: 300 * time.Millisecond})
	head := "POST /v1/topics/a/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
	tests := []struct {
		name   string
		ts     *testServer
		req    string
		status int
	}{
		{"no token, body never comes", patient, head + "\r\n", http.StatusUnauthorized},
		{"wrong token, body never comes", patient, head + "Authorization: Bearer wrong-token-0123456789\r\n\r\n", http.StatusUnauthorized},
		{"GET with a body that never comes", patient, "GET /openapi.yaml HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n", http.StatusOK},
		{"valid token, body never comes", impatient, head + "Authorization: Bearer " + testToken + "\r\n\r\n", http.StatusRequestTimeout},
		{"valid token, half a body", impatient, head + "Authorization: Bearer " + testToken + "\r\n\r\n{\"data\":", http.StatusRequestTimeout},
		{"Content-Length and chunked", patient, "POST /v1/topics/a/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nAuthorization: Bearer " + testToken +
			"\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nc\r\n{\"data\":\"x\"}\r\n0\r\n\r\n", http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, closed := tt.ts.rawExchange(t, tt.req)
			if res.status != tt.status {
				t.Fatalf("status %d, want %d (body %q)", res.status, tt.status, res.body)
			}
			if !closed {
				t.Fatal("the connection stayed open")
			}
		})
	}
}
