package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sse-service/sse-service/internal/testutil"
)

// jwksServer is an identity provider's JWKS endpoint whose keys the test
// rotates.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    map[string]*rsa.PrivateKey
	fetches atomic.Int64
}

func startJWKS(t *testing.T) *jwksServer {
	t.Helper()
	j := &jwksServer{keys: map[string]*rsa.PrivateKey{}}
	j.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.fetches.Add(1)
		j.mu.Lock()
		defer j.mu.Unlock()
		type jwk struct {
			Kty, Kid, Use, Alg, N, E string
		}
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range j.keys {
			set.Keys = append(set.Keys, map[string]string{
				"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
			})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(j.Close)
	return j
}

// rotate makes the endpoint serve exactly the given key ids (new ones get a
// fresh key).
func (j *jwksServer) rotate(t *testing.T, kids ...string) {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	next := map[string]*rsa.PrivateKey{}
	for _, kid := range kids {
		if k, ok := j.keys[kid]; ok {
			next[kid] = k
			continue
		}
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		next[kid] = k
	}
	j.keys = next
}

// sign mints an RS256 token with the key kid, valid for an hour.
func (j *jwksServer) sign(t *testing.T, kid string, key *rsa.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	if key == nil {
		j.mu.Lock()
		key = j.keys[kid]
		j.mu.Unlock()
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (j *jwksServer) key(kid string) *rsa.PrivateKey {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.keys[kid]
}

func idpClaims(subscribe ...string) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "https://idp.test/realms/app", "aud": "sse-service", "sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(),
		"sse": map[string]any{"subscribe": subscribe},
	}
}

// The identity provider rotates its signing key: tokens with the new key
// work at once (an unknown kid makes the service fetch the JWKS again),
// and tokens with the retired key stop working once a refresh no longer
// finds it. No restart.
func TestJWKSKeyRotationWithoutRestart(t *testing.T) {
	idp := startJWKS(t)
	idp.rotate(t, "key-1")
	s := startService(t, map[string]string{
		"SSE_PRIVATE_TOPICS":   "*",
		"SSE_JWT_JWKS_URL":     idp.URL,
		"SSE_JWT_JWKS_REFRESH": "1s",
		"SSE_JWT_ISSUER":       "https://idp.test/realms/app",
		"SSE_JWT_AUDIENCE":     "sse-service",
	})
	subscribeWith := func(tok string) (int, string) {
		c := s.subscribe("/v1/events?topic=user:alice", "Authorization: Bearer "+tok)
		if c.Response.StatusCode == http.StatusOK {
			return c.Response.StatusCode, ""
		}
		body, _ := c.ReadRest()
		return c.Response.StatusCode, body
	}

	old := idp.sign(t, "key-1", nil, idpClaims("user:*"))
	if code, body := subscribeWith(old); code != http.StatusOK {
		t.Fatalf("token of the first key: %d %s", code, body)
	}
	retired := idp.key("key-1")
	idp.rotate(t, "key-2")
	fresh := idp.sign(t, "key-2", nil, idpClaims("user:*"))
	if code, body := subscribeWith(fresh); code != http.StatusOK {
		t.Fatalf("token of the new key, right after the rotation: %d %s", code, body)
	}
	// The retired key is gone from the endpoint; the service's copy goes at
	// its next refresh (SSE_JWT_JWKS_REFRESH=1s). Poll, bounded.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := subscribeWith(idp.sign(t, "key-1", retired, idpClaims("user:*")))
		if code == http.StatusUnauthorized {
			if !strings.Contains(body, "invalid token signature") {
				t.Fatalf("retired key refused with %s, want the signature reason", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token of the retired key still works (%d) after %d JWKS fetches", code, idp.fetches.Load())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := subscribeWith(fresh); code != http.StatusOK {
		t.Fatalf("new key after the refresh: %d %s", code, body)
	}
	if n := s.metric(`sse_connections_total{result="unauthorized"}`); n < 1 {
		t.Fatalf("unauthorized counted %v times", n)
	}
}

// A stream ends when its token expires, with one sse-auth-expired event
// that has no id; the client comes back with a new token and its last id
// and gets what was published in between: nothing lost, nothing repeated.
func TestTokenExpiryEndsTheStreamWithoutLoss(t *testing.T) {
	const secret = "a-shared-secret-of-at-least-32-bytes"
	s := startService(t, map[string]string{
		"SSE_PRIVATE_TOPICS": "orders:*",
		"SSE_JWT_SECRET":     secret,
	})
	mint := func(exp time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"exp": exp.Unix(), "sse": map[string]any{"subscribe": []string{"orders:*"}},
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	c := s.subscribe("/v1/events?topic=orders:42", "Authorization: Bearer "+mint(exp))
	if c.Response.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %d", c.Response.StatusCode)
	}
	first := s.publish("orders:42", "paid")
	if ev := c.Next(t); ev.ID != first {
		t.Fatalf("got %+v, want %s", ev, first)
	}
	ev := c.Next(t)
	if ev.Type != "sse-auth-expired" || ev.ID != "" {
		t.Fatalf("got %+v, want an sse-auth-expired event without an id", ev)
	}
	var info struct{ Reason, ExpiredAt string }
	if err := json.Unmarshal([]byte(ev.Data), &info); err != nil || info.Reason != "token expired" || info.ExpiredAt != exp.UTC().Format(time.RFC3339) {
		t.Fatalf("sse-auth-expired data %q: want reason and expiredAt %s", ev.Data, exp.UTC().Format(time.RFC3339))
	}
	if rest, err := c.ReadRest(); err != nil || rest != "" {
		t.Fatalf("after sse-auth-expired: %q %v, want the end of the stream", rest, err)
	}

	// Meanwhile, and with the expired token: refused.
	second := s.publish("orders:42", "shipped")
	if again := s.subscribe("/v1/events?topic=orders:42", "Authorization: Bearer "+mint(exp)); again.Response.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired token: %d, want 401", again.Response.StatusCode)
	}
	c = s.subscribe("/v1/events?topic=orders:42&lastEventId="+first, "Authorization: Bearer "+mint(time.Now().Add(time.Hour)))
	if ev := c.Next(t); ev.ID != second || ev.Data != "shipped" {
		t.Fatalf("after renewing: %+v, want %s", ev, second)
	}
	for _, reason := range []string{"slow", "write_error", "shutdown"} {
		if n := s.metric(`sse_clients_dropped_total{reason="` + reason + `"}`); n != 0 {
			t.Errorf("an expiry counted as a %s drop", reason)
		}
	}
}

// Bad private-topic settings stop the service at start, naming the
// variable.
func TestBadAuthConfigIsRefusedAtStart(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"private topics without a key", map[string]string{"SSE_PRIVATE_TOPICS": "user:*"}, "SSE_PRIVATE_TOPICS"},
		{"short secret", map[string]string{"SSE_JWT_SECRET": "short"}, "SSE_JWT_SECRET"},
		{"bad pattern", map[string]string{"SSE_PRIVATE_TOPICS": "a b", "SSE_JWT_SECRET": strings.Repeat("k", 32)}, "SSE_PRIVATE_TOPICS"},
		{"JWKS unreachable", map[string]string{"SSE_JWT_JWKS_URL": down.URL}, "JWKS"},
		{"bad origin", map[string]string{"SSE_CORS_ORIGINS": "app.example.com"}, "SSE_CORS_ORIGINS"},
		{"bad cookie name", map[string]string{"SSE_AUTH_COOKIE": "a b"}, "SSE_AUTH_COOKIE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SSE_ADDR", "127.0.0.1:0")
			t.Setenv("SSE_ADMIN_ADDR", "127.0.0.1:0")
			t.Setenv("SSE_PUBLISH_TOKENS", testToken)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var logs testutil.SyncBuffer
			err := run(t.Context(), nil, &logs, &logs, func(addrs) { t.Error("the service started") })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
