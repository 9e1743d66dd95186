package httpapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sse-service/sse-service/internal/auth"
	"github.com/sse-service/sse-service/internal/stream"
	"github.com/sse-service/sse-service/internal/testutil"
	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

const (
	testJWTSecret = "access-test-hs256-secret-at-least-32-bytes"
	testIssuer    = "https://issuer.example"
	testAudience  = "sse-service"
	testCookie    = "sse_token"
	testOrigin    = "https://app.example"
)

// newTestVerifier is a real auth.Verifier, closed when the test ends.
func newTestVerifier(t *testing.T, cfg auth.Config) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func mustPatterns(t *testing.T, list ...string) auth.Patterns {
	t.Helper()
	ps, err := auth.ParsePatterns(list)
	if err != nil {
		t.Fatalf("ParsePatterns(%q): %v", list, err)
	}
	return ps
}

// mint signs claims with key.
func mint(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s token: %v", method.Alg(), err)
	}
	return tok
}

// grant is a token's claims, valid for an hour, for the test issuer and
// audience, allowing the given sse claim.
func grant(sse map[string]any) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss": testIssuer,
		"aud": testAudience,
		"sub": "user-42",
		"exp": time.Now().Add(time.Hour).Unix(),
	}
	if sse != nil {
		c["sse"] = sse
	}
	return c
}

func subscribeGrant(patterns ...string) jwt.MapClaims {
	return grant(map[string]any{"subscribe": patterns})
}

func publishGrant(patterns ...string) jwt.MapClaims {
	return grant(map[string]any{"publish": patterns})
}

// with returns a copy of c with kv set (pairs of name and value; a nil
// value removes the claim).
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	c = maps.Clone(c)
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(c, k)
			continue
		}
		c[k] = kv[i+1]
	}
	return c
}

// ecKey is a new P-256 key and its public key as PEM.
func ecKey(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate EC key: %v", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatalf("marshal EC public key: %v", err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// subscribe sends GET path with header over a connection of its own. A
// refusal is read whole (nil stream); a 200 stays open until the test ends
// or its connection is closed.
func (ts *testServer) subscribe(t *testing.T, path string, header http.Header) (response, *ssetest.Stream) {
	t.Helper()
	st := ssetest.Dial(t, ts.addr, path, header)
	r := response{status: st.Response.StatusCode, header: st.Response.Header}
	if r.status != http.StatusOK {
		b, err := st.ReadRest()
		if err != nil {
			t.Fatalf("GET %s: read body: %v", path, err)
		}
		r.body = b
		return r, nil
	}
	return r, st
}

// wantStream checks a subscribe was admitted as an event stream, and reads
// its first frame.
func wantStream(t *testing.T, what string, r response, body *ssetest.Stream) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("%s: status %d, want %d (body %q)", what, r.status, http.StatusOK, r.body)
	}
	if got, want := r.header.Get("Content-Type"), "text/event-stream"; got != want {
		t.Fatalf("%s: Content-Type %q, want %q", what, got, want)
	}
	first, err := body.ReadFrame() // retry, the connected comment, the position
	if err != nil {
		t.Fatalf("%s: first frame %q: %v", what, first, err)
	}
	if !slices.Contains(strings.SplitAfter(first, "\n"), ": connected\n") {
		t.Fatalf("%s: first frame %q, want the connected comment", what, first)
	}
}

func bearerHeader(token string) http.Header {
	if token == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + token}}
}

// subscribeCase is one subscribe request and the answer it must get.
type subscribeCase struct {
	name   string
	path   string
	token  string // sent as Authorization: Bearer; "" sends none
	status int
	msg    string // part of the JSON error of a refusal
}

// checkSubscribe runs tt against ts, including what it counts in
// sse_connections_total and what a refusal must not say.
func checkSubscribe(t *testing.T, ts *testServer, tt subscribeCase) {
	t.Helper()
	result := map[int]string{http.StatusOK: "accepted", http.StatusUnauthorized: string(stream.ConnUnauthorized), http.StatusForbidden: string(stream.ConnForbidden)}[tt.status]
	before := ts.metrics.count(result)
	r, body := ts.subscribe(t, tt.path, bearerHeader(tt.token))
	if tt.status == http.StatusOK {
		wantStream(t, "subscribe", r, body)
	} else {
		msg := wantJSONError(t, "subscribe", r, tt.status)
		if !strings.Contains(msg, tt.msg) {
			t.Fatalf("error %q does not say %q", msg, tt.msg)
		}
		if tt.token != "" && strings.Contains(r.body+strings.Join(r.header.Values("WWW-Authenticate"), ""), tt.token) {
			t.Fatalf("refusal repeats the token: %q", r.body)
		}
		if got, want := r.header.Get("Cache-Control"), "no-store"; got != want {
			t.Fatalf("Cache-Control %q, want %q", got, want)
		}
	}
	if tt.status == http.StatusUnauthorized {
		wa := r.header.Get("WWW-Authenticate")
		if !strings.HasPrefix(wa, `Bearer realm="sse-service"`) {
			t.Fatalf("WWW-Authenticate %q, want a Bearer challenge", wa)
		}
		if tt.token != "" && !strings.Contains(wa, `error="invalid_token"`) {
			t.Fatalf("WWW-Authenticate %q does not say invalid_token", wa)
		}
	}
	if got, want := ts.metrics.count(result), before+1; got != want {
		t.Fatalf("%s counted %d times, want %d", result, got, want)
	}
}

func TestPrivateTopicsNeedATokenThatCoversThem(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret), Issuer: testIssuer, Audience: testAudience})
	ts := startServer(t, Options{Verifier: v, PrivateTopics: mustPatterns(t, "user:*", "orders"), AuthCookie: testCookie})

	hs := func(c jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), c) }
	both := subscribeGrant("user:42", "orders")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	ec, _ := ecKey(t)

	tests := []subscribeCase{
		{"no token", "/v1/events?topic=orders", "", http.StatusUnauthorized, `token is required for topic "orders"`},
		{"no token, a private topic among public ones", "/v1/events?topic=news&topic=user:42", "", http.StatusUnauthorized, `"user:42"`},
		{"expired", "/v1/events?topic=orders", hs(with(both, "exp", time.Now().Add(-time.Hour).Unix())), http.StatusUnauthorized, "token expired"},
		{"not yet valid", "/v1/events?topic=orders", hs(with(both, "nbf", time.Now().Add(time.Hour).Unix())), http.StatusUnauthorized, "token not yet valid"},
		{"wrong secret", "/v1/events?topic=orders", mint(t, jwt.SigningMethodHS256, []byte(strings.Repeat("k", 32)), both), http.StatusUnauthorized, "invalid token signature"},
		{"RS256 against a secret", "/v1/events?topic=orders", mint(t, jwt.SigningMethodRS256, rsaKey, both), http.StatusUnauthorized, "token algorithm not allowed"},
		{"ES256 against a secret", "/v1/events?topic=orders", mint(t, jwt.SigningMethodES256, ec, both), http.StatusUnauthorized, "token algorithm not allowed"},
		{"alg none", "/v1/events?topic=orders", mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, both), http.StatusUnauthorized, "token algorithm not allowed"},
		{"wrong issuer", "/v1/events?topic=orders", hs(with(both, "iss", "https://other.example")), http.StatusUnauthorized, "wrong token issuer"},
		{"no issuer", "/v1/events?topic=orders", hs(with(both, "iss", nil)), http.StatusUnauthorized, "wrong token issuer"},
		{"wrong audience", "/v1/events?topic=orders", hs(with(both, "aud", "another-service")), http.StatusUnauthorized, "wrong token audience"},
		{"no audience", "/v1/events?topic=orders", hs(with(both, "aud", nil)), http.StatusUnauthorized, "wrong token audience"},
		{"malformed", "/v1/events?topic=orders", "not-a-jwt", http.StatusUnauthorized, "malformed token"},
		{"malformed segments", "/v1/events?topic=orders", "eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl", http.StatusUnauthorized, "malformed token"},
		{"sse claim of the wrong shape", "/v1/events?topic=orders", hs(grant(map[string]any{"subscribe": "orders"})), http.StatusUnauthorized, "invalid token claims"},
		{"one of several topics not covered", "/v1/events?topic=user:42&topic=orders&topic=news", hs(subscribeGrant("user:*")), http.StatusForbidden, `topic "orders"`},
		{"pattern does not cover another user", "/v1/events?topic=user:43", hs(subscribeGrant("user:42")), http.StatusForbidden, `topic "user:43"`},
		{"no sse claim", "/v1/events?topic=orders", hs(grant(nil)), http.StatusForbidden, `topic "orders"`},
		{"publish claim does not subscribe", "/v1/events?topic=orders", hs(publishGrant("*")), http.StatusForbidden, `topic "orders"`},
		{"token covers every topic", "/v1/events?topic=user:42&topic=orders&topic=news", hs(subscribeGrant("user:*", "orders")), http.StatusOK, ""},
		{"token with aud as a list", "/v1/events?topic=orders", hs(with(both, "aud", []string{"x", testAudience})), http.StatusOK, ""},
		{"public topic needs no token", "/v1/events?topic=news", "", http.StatusOK, ""},
		{"clock needs no token", "/v1/events?topic=clock", "", http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkSubscribe(t, ts, tt) })
	}
}

func TestPrivateTopicsWithAnES256PublicKey(t *testing.T) {
	key, pemBytes := ecKey(t)
	other, _ := ecKey(t)
	v := newTestVerifier(t, auth.Config{PublicKeyPEM: pemBytes})
	ts := startServer(t, Options{Verifier: v, PrivateTopics: mustPatterns(t, "orders", "audit")})
	orders := subscribeGrant("orders")

	tests := []subscribeCase{
		{"valid", "/v1/events?topic=orders", mint(t, jwt.SigningMethodES256, key, orders), http.StatusOK, ""},
		{"signed by another key", "/v1/events?topic=orders", mint(t, jwt.SigningMethodES256, other, orders), http.StatusUnauthorized, "invalid token signature"},
		{"HS256 keyed with the public key PEM", "/v1/events?topic=orders", mint(t, jwt.SigningMethodHS256, pemBytes, orders), http.StatusUnauthorized, "token algorithm not allowed"},
		{"HS256 without a secret configured", "/v1/events?topic=orders", mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), orders), http.StatusUnauthorized, "token algorithm not allowed"},
		{"alg none", "/v1/events?topic=orders", mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, orders), http.StatusUnauthorized, "token algorithm not allowed"},
		{"expired", "/v1/events?topic=orders", mint(t, jwt.SigningMethodES256, key, with(orders, "exp", time.Now().Add(-time.Minute).Unix())), http.StatusUnauthorized, "token expired"},
		{"not covered", "/v1/events?topic=orders&topic=audit", mint(t, jwt.SigningMethodES256, key, orders), http.StatusForbidden, `topic "audit"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkSubscribe(t, ts, tt) })
	}
}

func TestClockIsPublicUnlessListedByName(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	tests := []struct {
		private []string
		topic   string
		status  int
	}{
		{[]string{"*"}, "clock", http.StatusOK},
		{[]string{"*"}, "news", http.StatusUnauthorized},
		{[]string{"clock"}, "clock", http.StatusUnauthorized},
		{[]string{"clock"}, "news", http.StatusOK},
		{[]string{"*", "clock"}, "clock", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.private, ",")+" "+tt.topic, func(t *testing.T) {
			ts := startServer(t, Options{Verifier: v, PrivateTopics: mustPatterns(t, tt.private...)})
			checkSubscribe(t, ts, subscribeCase{path: "/v1/events?topic=" + tt.topic, status: tt.status, msg: `"` + tt.topic + `"`})
		})
	}
}

func TestSubscriberTokenSourcesInOrder(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	ts := startServer(t, Options{Verifier: v, PrivateTopics: mustPatterns(t, "orders"), AuthCookie: testCookie})
	good := mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), subscribeGrant("orders"))
	bad := mint(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), subscribeGrant("orders"))

	tests := []struct {
		name                          string
		header, cookie, cookieName, q string
		status                        int
		msg                           string
	}{
		{name: "header", header: good, status: http.StatusOK},
		{name: "cookie", cookie: good, status: http.StatusOK},
		{name: "query", q: good, status: http.StatusOK},
		{name: "bad header wins over good cookie", header: bad, cookie: good, status: http.StatusUnauthorized, msg: "invalid token signature"},
		{name: "good header wins over bad cookie", header: good, cookie: bad, status: http.StatusOK},
		{name: "bad cookie wins over good query", cookie: bad, q: good, status: http.StatusUnauthorized, msg: "invalid token signature"},
		{name: "good cookie wins over bad query", cookie: good, q: bad, status: http.StatusOK},
		{name: "bad header wins over good query", header: bad, q: good, status: http.StatusUnauthorized, msg: "invalid token signature"},
		{name: "cookie of another name is not looked at", cookie: good, cookieName: "session", status: http.StatusUnauthorized, msg: "token is required"},
		{name: "empty query token", q: "", status: http.StatusUnauthorized, msg: "token is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set("Authorization", "Bearer "+tt.header)
			}
			if tt.cookie != "" {
				name := tt.cookieName
				if name == "" {
					name = testCookie
				}
				h.Set("Cookie", (&http.Cookie{Name: name, Value: tt.cookie}).String())
			}
			path := "/v1/events?topic=orders"
			if tt.q != "" || tt.name == "empty query token" {
				path += "&access_token=" + tt.q
			}
			r, body := ts.subscribe(t, path, h)
			if tt.status == http.StatusOK {
				wantStream(t, "subscribe", r, body)
				return
			}
			if msg := wantJSONError(t, "subscribe", r, tt.status); !strings.Contains(msg, tt.msg) {
				t.Fatalf("error %q does not say %q", msg, tt.msg)
			}
		})
	}
}

// spanText is everything a recorded span says, for leak checks.
func spanText(s tracetest.SpanStub) string {
	var b strings.Builder
	b.WriteString(s.Name + "\n" + s.Status.Description + "\n")
	for _, kv := range s.Attributes {
		b.WriteString(string(kv.Key) + "=" + kv.Value.Emit() + "\n")
	}
	for _, ev := range s.Events {
		b.WriteString(ev.Name + "\n")
		for _, kv := range ev.Attributes {
			b.WriteString(string(kv.Key) + "=" + kv.Value.Emit() + "\n")
		}
	}
	for _, l := range s.Links {
		for _, kv := range l.Attributes {
			b.WriteString(string(kv.Key) + "=" + kv.Value.Emit() + "\n")
		}
	}
	return b.String()
}

func TestQueryTokenNeverReachesSpansLogsOrErrors(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := startLoggedServer(t, log, Options{
		PublishTokens: []string{testToken}, MaxTopics: 8, MaxEventBytes: 1 << 10,
		MaxBatchEvents: 10, MaxBatchBytes: 10 << 10, ReconnectJitter: time.Second, Static: testStatic,
		Verifier: v, PrivateTopics: mustPatterns(t, "orders"), AuthCookie: testCookie, TracerProvider: tp,
	})
	good := mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), subscribeGrant("orders"))
	bad := mint(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), subscribeGrant("orders"))
	// The tokens, and their signatures alone, must appear nowhere.
	var tokens []string
	for _, tok := range []string{good, bad} {
		tokens = append(tokens, tok, tok[strings.LastIndexByte(tok, '.')+1:])
	}
	static := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testToken}
	jsonOnly := map[string]string{"Content-Type": "application/json"}

	var bodies []string
	// A stream admitted with the query token, which gets an event and ends.
	r, body := ts.subscribe(t, "/v1/events?access_token="+good+"&topic=orders", nil)
	wantStream(t, "query token", r, body)
	pub := ts.do(t, http.MethodPost, "/v1/topics/orders/events?access_token="+good, static, `{"data":"x"}`)
	if pub.status != http.StatusCreated {
		t.Fatalf("publish with a query token beside the bearer: status %d, want %d (body %q)", pub.status, http.StatusCreated, pub.body)
	}
	if ev, err := body.ReadEvent(); err != nil || ev.Data != "x" {
		t.Fatalf("stream: %+v %v, want the published event", ev, err)
	}
	body.Conn.Close()
	bodies = append(bodies, pub.body)
	for _, tt := range []struct {
		method, target string
		header         map[string]string
		body           string
		status         int
	}{
		{http.MethodGet, "/v1/events?topic=orders&access_token=" + bad, nil, "", http.StatusUnauthorized},
		{http.MethodGet, "/v1/events?access_token=" + bad + "&topic=a%20b", nil, "", http.StatusBadRequest},
		{http.MethodPost, "/v1/topics/orders/events?access_token=" + good, jsonOnly, `{"data":"x"}`, http.StatusUnauthorized},
		{http.MethodPost, "/v1/events?access_token=" + good, static, `[{"topic":"orders","data":"y"}]`, http.StatusCreated},
		{http.MethodPost, "/v1/events?access_token=" + good, static, `[{"topic":"orders","data":"y"}`, http.StatusBadRequest},
		{http.MethodGet, "/missing?access_token=" + good, nil, "", http.StatusNotFound},
	} {
		var r response
		if tt.method == http.MethodGet && strings.HasPrefix(tt.target, "/v1/events") {
			r, _ = ts.subscribe(t, tt.target, nil)
		} else {
			r = ts.do(t, tt.method, tt.target, tt.header, tt.body)
		}
		if r.status != tt.status {
			path, _, _ := strings.Cut(tt.target, "?")
			t.Fatalf("%s %s: status %d, want %d (body %q)", tt.method, path, r.status, tt.status, r.body)
		}
		bodies = append(bodies, r.body+strings.Join(r.header.Values("WWW-Authenticate"), ""))
	}

	// The admitted stream's span ends, and "stream closed" is logged, once
	// the server sees the client leave; the refused ones' spans at once.
	var got []tracetest.SpanStub
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = spans.GetSpans()
		streams := 0
		for _, s := range got {
			if s.Name == "GET "+routeSubscribe {
				streams++
			}
		}
		logged := strings.Contains(logs.String(), "stream closed")
		if streams == 3 && logged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d stream spans ended, want 3; stream closed logged: %v", streams, logged)
		}
		time.Sleep(10 * time.Millisecond)
	}
	names := map[string]bool{}
	for _, s := range got {
		names[s.Name] = true
	}
	for _, name := range []string{"POST " + routePublish, "POST " + routeBatch} {
		if !names[name] {
			t.Fatalf("no %q span among %v", name, names)
		}
	}
	for _, s := range got {
		text := spanText(s)
		for _, tok := range tokens {
			if strings.Contains(text, tok) {
				t.Errorf("span %q carries a token:\n%s", s.Name, text)
			}
		}
	}
	for _, b := range bodies {
		for _, tok := range tokens {
			if strings.Contains(b, tok) {
				t.Errorf("answer carries a token: %q", b)
			}
		}
	}
	for _, tok := range tokens {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("a log line carries a token:\n%s", logs.String())
		}
	}
}

func TestStreamEndsWithAuthExpiredWhenItsTokenExpires(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	ts := startServer(t, Options{Verifier: v, PrivateTopics: mustPatterns(t, "orders")})
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second) // 1 to 2 s ahead, whole seconds as in a JWT
	tok := mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), with(subscribeGrant("orders"), "exp", exp.Unix()))

	r, body := ts.subscribe(t, "/v1/events?topic=orders", bearerHeader(tok))
	wantStream(t, "subscribe", r, body)
	pub := ts.do(t, http.MethodPost, "/v1/topics/orders/events",
		map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testToken}, `{"data":"before"}`)
	if pub.status != http.StatusCreated {
		t.Fatalf("publish: status %d, want %d (body %q)", pub.status, http.StatusCreated, pub.body)
	}
	var id struct{ ID string }
	if err := json.Unmarshal([]byte(pub.body), &id); err != nil || id.ID == "" {
		t.Fatalf("publish: body %q: %v", pub.body, err)
	}

	ev, err := body.ReadEvent()
	if err != nil || ev.ID != id.ID || ev.Data != "before" {
		t.Fatalf("first event %+v (%v), want id %s data %q", ev, err, id.ID, "before")
	}
	ev, err = body.ReadEvent()
	if err != nil {
		t.Fatalf("waiting for %s: %v", stream.TypeAuthExpired, err)
	}
	// No id of its own: the client's last event id stays the last event's.
	want := ssetest.Event{Type: stream.TypeAuthExpired, Data: `{"reason":"token expired","expiredAt":"` + exp.UTC().Format(time.RFC3339) + `"}`, LastEventID: id.ID}
	if ev != want {
		t.Fatalf("last event %+v, want %+v (and no id)", ev, want)
	}
	// Then a clean end of the body (its last chunk), not a cut connection.
	if ev, err := body.ReadEvent(); err != io.EOF {
		t.Fatalf("after %s: %+v, %v; want the end of the stream", stream.TypeAuthExpired, ev, err)
	}
}

func TestPublishersMayUseAJWTForTheirTopics(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	ts := startServer(t, Options{Verifier: v})
	hs := func(c jwt.MapClaims) string { return mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), c) }
	orders := hs(publishGrant("orders:*"))

	tests := []struct {
		name   string
		path   string
		auth   string // Authorization header
		cookie string // sse_token cookie
		body   string
		status int
		msg    string
	}{
		{"covered topic", "/v1/topics/orders:1/events", "Bearer " + orders, "", `{"data":"x"}`, http.StatusCreated, ""},
		{"other topic", "/v1/topics/other/events", "Bearer " + orders, "", `{"data":"x"}`, http.StatusForbidden, `topic "other"`},
		{"batch, all covered", "/v1/events", "Bearer " + orders, "", `[{"topic":"orders:1","data":"a"},{"topic":"orders:2","data":"b"}]`, http.StatusCreated, ""},
		{"batch, one not covered", "/v1/events", "Bearer " + orders, "", `[{"topic":"orders:1","data":"a"},{"topic":"other","data":"b"}]`, http.StatusForbidden, `event 1: token does not allow publishing to topic "other"`},
		{"no publish claim", "/v1/topics/orders:1/events", "Bearer " + hs(subscribeGrant("*")), "", `{"data":"x"}`, http.StatusForbidden, `topic "orders:1"`},
		{"expired", "/v1/topics/orders:1/events", "Bearer " + hs(with(publishGrant("*"), "exp", time.Now().Add(-time.Hour).Unix())), "", `{"data":"x"}`, http.StatusUnauthorized, "token expired"},
		{"wrong secret", "/v1/topics/orders:1/events", "Bearer " + mint(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 32)), publishGrant("*")), "", `{"data":"x"}`, http.StatusUnauthorized, "invalid token signature"},
		{"cookie is not for publishers", "/v1/topics/orders:1/events", "", orders, `{"data":"x"}`, http.StatusUnauthorized, "bearer token"},
		{"static token, any topic", "/v1/topics/other/events", "Bearer " + testToken, "", `{"data":"x"}`, http.StatusCreated, ""},
		{"static token, any batch", "/v1/events", "Bearer " + testToken, "", `[{"topic":"other","data":"a"}]`, http.StatusCreated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "application/json"}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			if tt.cookie != "" {
				h["Cookie"] = testCookie + "=" + tt.cookie
			}
			reason := "publish failed unauthorized"
			if tt.status == http.StatusForbidden {
				reason = "publish failed forbidden"
			}
			before := ts.metrics.count(reason)
			r := ts.do(t, http.MethodPost, tt.path, h, tt.body)
			if tt.status == http.StatusCreated {
				if r.status != tt.status {
					t.Fatalf("status %d, want %d (body %q)", r.status, tt.status, r.body)
				}
				return
			}
			if msg := wantJSONError(t, "publish", r, tt.status); !strings.Contains(msg, tt.msg) {
				t.Fatalf("error %q does not say %q", msg, tt.msg)
			}
			if got, want := ts.metrics.count(reason), before+1; got != want {
				t.Fatalf("publish failures counted %d times, want %d", got, want)
			}
		})
	}
}

func TestWithoutAVerifierAJWTDoesNotPublish(t *testing.T) {
	ts := startServer(t, Options{})
	tok := mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), publishGrant("*"))
	r := ts.do(t, http.MethodPost, "/v1/topics/orders/events", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + tok}, `{"data":"x"}`)
	wantJSONError(t, "JWT without a verifier", r, http.StatusUnauthorized)
	if got, want := r.header.Get("WWW-Authenticate"), `Bearer realm="sse-service"`; got != want {
		t.Fatalf("WWW-Authenticate %q, want %q", got, want)
	}
	if strings.Contains(r.body, tok) {
		t.Fatalf("refusal repeats the token: %q", r.body)
	}
}

func TestCORSAllowsOnlyTheConfiguredOrigins(t *testing.T) {
	v := newTestVerifier(t, auth.Config{Secret: []byte(testJWTSecret)})
	tok := mint(t, jwt.SigningMethodHS256, []byte(testJWTSecret), subscribeGrant("orders"))
	preflight := func(origin, method, headers string) map[string]string {
		return map[string]string{"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
	}
	withCookie := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Cookie": testCookie + "=" + tok}
	}
	const evil = "https://evil.example"

	tests := []struct {
		name        string
		origins     []string
		method      string
		path        string
		header      map[string]string
		status      int
		acao        string // Access-Control-Allow-Origin; "" means none
		credentials bool
	}{
		{"preflight of a publish", []string{testOrigin}, http.MethodOptions, "/v1/topics/t/events", preflight(testOrigin, "POST", "authorization,content-type"), http.StatusNoContent, testOrigin, true},
		{"preflight of a stream", []string{testOrigin}, http.MethodOptions, "/v1/events?topic=orders", preflight(testOrigin, "GET", "last-event-id"), http.StatusNoContent, testOrigin, true},
		{"stream with a cookie", []string{testOrigin}, http.MethodGet, "/v1/events?topic=orders", withCookie(testOrigin), http.StatusOK, testOrigin, true},
		{"refused stream", []string{testOrigin}, http.MethodGet, "/v1/events?topic=orders", map[string]string{"Origin": testOrigin}, http.StatusUnauthorized, testOrigin, true},
		{"preflight from another origin", []string{testOrigin}, http.MethodOptions, "/v1/topics/t/events", preflight(evil, "POST", "authorization"), http.StatusNoContent, "", false},
		{"stream from another origin", []string{testOrigin}, http.MethodGet, "/v1/events?topic=orders", withCookie(evil), http.StatusOK, "", false},
		{"not the API", []string{testOrigin}, http.MethodGet, "/", map[string]string{"Origin": testOrigin}, http.StatusOK, "", false},
		{"any origin: preflight", []string{"*"}, http.MethodOptions, "/v1/topics/t/events", preflight(evil, "POST", "authorization,content-type"), http.StatusNoContent, "*", false},
		{"any origin: stream", []string{"*"}, http.MethodGet, "/v1/events?topic=orders", withCookie(evil), http.StatusOK, "*", false},
		{"no origins: stream", nil, http.MethodGet, "/v1/events?topic=orders", withCookie(testOrigin), http.StatusOK, "", false},
		{"no origins: preflight", nil, http.MethodOptions, "/v1/topics/t/events", preflight(testOrigin, "POST", "authorization"), http.StatusNoContent, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, Options{Verifier: v, PrivateTopics: mustPatterns(t, "orders"), AuthCookie: testCookie, CORSOrigins: tt.origins})
			var r response
			if tt.method == http.MethodGet && strings.HasPrefix(tt.path, "/v1/events") {
				h := http.Header{}
				for k, v := range tt.header {
					h.Set(k, v)
				}
				var body *ssetest.Stream
				if r, body = ts.subscribe(t, tt.path, h); r.status == http.StatusOK {
					wantStream(t, "stream", r, body)
				}
			} else {
				r = ts.do(t, tt.method, tt.path, tt.header, "")
			}
			if r.status != tt.status {
				t.Fatalf("status %d, want %d (body %q)", r.status, tt.status, r.body)
			}
			if got := r.header.Get("Access-Control-Allow-Origin"); got != tt.acao {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tt.acao)
			}
			if got, want := r.header.Get("Access-Control-Allow-Credentials") == "true", tt.credentials; got != want {
				t.Fatalf("Access-Control-Allow-Credentials %q, want it %v", r.header.Get("Access-Control-Allow-Credentials"), want)
			}
			if tt.acao == "" {
				return
			}
			if tt.method == http.MethodOptions {
				allowed := strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
				for _, h := range strings.Split(tt.header["Access-Control-Request-Headers"], ",") {
					if !strings.Contains(allowed, h) {
						t.Fatalf("Access-Control-Allow-Headers %q lacks %s", allowed, h)
					}
				}
				if got := r.header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, tt.header["Access-Control-Request-Method"]) {
					t.Fatalf("Access-Control-Allow-Methods %q lacks %s", got, tt.header["Access-Control-Request-Method"])
				}
				return
			}
			// A page may read why it was refused.
			if got := r.header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "WWW-Authenticate") {
				t.Fatalf("Access-Control-Expose-Headers %q lacks WWW-Authenticate", got)
			}
		})
	}
}

func TestStripQueryTokenTakesTheTokenOutOfTheURL(t *testing.T) {
	const tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
	tests := []struct {
		name, query string
		want        string // the token the stream handler gets
	}{
		{"token last", "topic=orders&access_token=" + tok, tok},
		{"token first", "access_token=" + tok + "&topic=orders", tok},
		{"token twice", "access_token=" + tok + "&topic=orders&access_token=" + tok, tok},
		{"percent-encoded token", "topic=orders&access_token=" + strings.ReplaceAll(tok, ".", "%2E"), tok},
		// A badly escaped other parameter, or a percent-encoded name, must
		// not leave the token in RawQuery and RequestURI (the handler reads
		// the query leniently, so the subscriber expects its token to count).
		{"another parameter badly escaped", "topic=orders&access_token=" + tok + "&x=%zz", tok},
		{"a semicolon in another parameter", "topic=orders&x=a;b&access_token=" + tok, tok},
		{"percent-encoded name", "topic=orders&access%5Ftoken=" + tok, tok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := echo.New()
			req := httptest.NewRequest(http.MethodGet, "/v1/events?"+tt.query, nil)
			c := e.NewContext(req, httptest.NewRecorder())
			var got string
			err := stripQueryToken(func(c echo.Context) error {
				r := c.Request()
				for what, s := range map[string]string{"RawQuery": r.URL.RawQuery, "RequestURI": r.RequestURI, "URL": r.URL.String()} {
					if strings.Contains(s, tok) || strings.Contains(s, "access") {
						t.Errorf("%s %q still holds the token", what, s)
					}
				}
				if topics := r.URL.Query()["topic"]; !slices.Equal(topics, []string{"orders"}) {
					t.Errorf("topics %q, want [orders]", topics)
				}
				got, _ = r.Context().Value(queryTokenKey{}).(string)
				return nil
			})(c)
			if err != nil {
				t.Fatalf("stripQueryToken: %v", err)
			}
			if got != tt.want {
				t.Fatalf("handler got token %q, want %q", got, tt.want)
			}
		})
	}
}
