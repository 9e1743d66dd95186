package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/sse-service/sse-service/internal/testutil"
)

// jwksServer serves a JWK Set that a test can change, as an identity
// provider rotating its keys would.
type jwksServer struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	status  atomic.Int32 // answered instead of the set when not 0
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T, keys ...map[string]any) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if code := s.status.Load(); code != 0 {
			http.Error(w, "unavailable", int(code))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

// set makes the server serve exactly keys from now on.
func (s *jwksServer) set(t *testing.T, keys ...map[string]any) {
	t.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store(&b)
}

// jwk is the public JWK of pub as identity providers publish it. alg may be
// empty: the "alg" member is optional.
func jwk(t *testing.T, kid, alg string, pub any) map[string]any {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	m := map[string]any{"kid": kid, "use": "sig"}
	if alg != "" {
		m["alg"] = alg
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", enc(k.N.Bytes()), enc(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			t.Fatal(err)
		}
		m["kty"], m["crv"], m["x"], m["y"] = "EC", "P-256", enc(point[1:33]), enc(point[33:65])
	default:
		t.Fatalf("jwk: key type %T", pub)
	}
	return m
}

func TestJWKSVerifiesByKid(t *testing.T) {
	rsaKey, ecKey := newRSAKey(t), newECKey(t, elliptic.P256())
	noAlgRSA := newRSAKey(t)
	srv := newJWKSServer(t,
		jwk(t, "r1", "RS256", &rsaKey.PublicKey),
		jwk(t, "e1", "ES256", &ecKey.PublicKey),
		jwk(t, "r0", "", &noAlgRSA.PublicKey),
	)
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour, Issuer: testIssuer, Audience: testAudience})

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"RS256 by kid", sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "r1"), nil},
		{"ES256 by kid", sign(t, jwt.SigningMethodES256, ecKey, claims(nil), "e1"), nil},
		{"RS256 by a kid whose JWK has no alg", sign(t, jwt.SigningMethodRS256, noAlgRSA, claims(nil), "r0"), nil},
		{"RS256 without kid", sign(t, jwt.SigningMethodRS256, noAlgRSA, claims(nil), ""), nil},
		{"ES256 without kid", sign(t, jwt.SigningMethodES256, ecKey, claims(nil), ""), nil},

		{"RS256 signed by another key", sign(t, jwt.SigningMethodRS256, newRSAKey(t), claims(nil), "r1"), ErrSignature},
		{"RS256 signed by another key without kid", sign(t, jwt.SigningMethodRS256, newRSAKey(t), claims(nil), ""), ErrSignature},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "nope"), ErrSignature},
		{"kid not a string", sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), ""), nil}, // replaced below
		{"ES256 by the kid of an RS256 key", sign(t, jwt.SigningMethodES256, ecKey, claims(nil), "r1"), ErrAlgorithm},
		{"ES256 by the kid of an RSA key without alg", sign(t, jwt.SigningMethodES256, ecKey, claims(nil), "r0"), ErrAlgorithm},
		{"RS256 by the kid of an EC key", sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "e1"), ErrAlgorithm},
		{"HS256 without a secret", sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), "r1"), ErrAlgorithm},
		{"HS256 signed with the JWK's modulus", sign(t, jwt.SigningMethodHS256, rsaKey.N.Bytes(), claims(nil), "r1"), ErrAlgorithm},
		{"wrong audience", sign(t, jwt.SigningMethodRS256, rsaKey, claims(map[string]any{"aud": "other"}), "r1"), ErrAudience},
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims(nil))
	tok.Header["kid"] = 7
	kidNumber, err := tok.SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests[8].token, tests[8].want = kidNumber, ErrMalformed

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(tt.token)
			checkErr(t, err, tt.want, tt.token)
		})
	}
}

// TestJWKSKeyRotationWithoutRestart: the provider starts signing with a new
// key and drops the old one; a token with the new kid makes the verifier
// fetch the set at once, which also forgets the old key.
func TestJWKSKeyRotationWithoutRestart(t *testing.T) {
	oldKey, newKey := newRSAKey(t), newRSAKey(t)
	srv := newJWKSServer(t, jwk(t, "2025", "RS256", &oldKey.PublicKey))
	// A background refresh this rare never happens during the test: what
	// it shows is the refresh on an unknown kid.
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefresh: time.Hour})
	oldToken := sign(t, jwt.SigningMethodRS256, oldKey, claims(nil), "2025")
	newToken := sign(t, jwt.SigningMethodRS256, newKey, claims(nil), "2026")

	if _, err := v.Verify(oldToken); err != nil {
		t.Fatalf("old token before rotation: %v", err)
	}
	if got, want := srv.fetches.Load(), int64(1); got != want {
		t.Fatalf("fetches = %d, want %d", got, want)
	}

	srv.set(t, jwk(t, "2026", "RS256", &newKey.PublicKey))
	if _, err := v.Verify(newToken); err != nil {
		t.Fatalf("new token after rotation: %v", err)
	}
	if got, want := srv.fetches.Load(), int64(2); got != want {
		t.Fatalf("fetches = %d, want %d (one for the unknown kid)", got, want)
	}
	_, err := v.Verify(oldToken)
	checkErr(t, err, ErrSignature, oldToken)

	// The refresh on unknown kids is rate limited: a burst of forged kids
	// fails fast and does not reach the provider.
	start := time.Now()
	for i := range 20 {
		forged := sign(t, jwt.SigningMethodRS256, newKey, claims(nil), "forged-"+string(rune('a'+i)))
		_, err := v.Verify(forged)
		checkErr(t, err, ErrSignature, forged)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("20 unknown kids took %s", d)
	}
	if got, want := srv.fetches.Load(), int64(2); got > want+1 {
		t.Errorf("fetches = %d after a burst of unknown kids, want at most %d", got, want+1)
	}
	if _, err := v.Verify(newToken); err != nil {
		t.Errorf("new token after the burst: %v", err)
	}
}

// TestJWKSBackgroundRefreshDropsRemovedKey: a key the provider removes stops
// verifying after the next background refresh, with no token to trigger it.
func TestJWKSBackgroundRefreshDropsRemovedKey(t *testing.T) {
	oldKey, newKey := newRSAKey(t), newRSAKey(t)
	srv := newJWKSServer(t, jwk(t, "old", "RS256", &oldKey.PublicKey), jwk(t, "new", "RS256", &newKey.PublicKey))
	v := newVerifier(t, Config{JWKSURL: srv.URL, JWKSRefresh: 20 * time.Millisecond})
	oldToken := sign(t, jwt.SigningMethodRS256, oldKey, claims(nil), "old")
	newToken := sign(t, jwt.SigningMethodRS256, newKey, claims(nil), "new")
	if _, err := v.Verify(oldToken); err != nil {
		t.Fatalf("old token: %v", err)
	}

	srv.set(t, jwk(t, "new", "RS256", &newKey.PublicKey))
	waitFor(t, 5*time.Second, "the removed key to be dropped", func() bool {
		_, err := v.Verify(oldToken)
		return errors.Is(err, ErrSignature)
	})
	if _, err := v.Verify(newToken); err != nil {
		t.Errorf("new token: %v", err)
	}
}

func TestJWKSRefreshFailureKeepsKeysAndIsLogged(t *testing.T) {
	key := newRSAKey(t)
	srv := newJWKSServer(t, jwk(t, "k", "RS256", &key.PublicKey))
	var logs testutil.SyncBuffer
	v := newVerifier(t, Config{
		JWKSURL: srv.URL, JWKSRefresh: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	srv.status.Store(http.StatusServiceUnavailable)
	waitFor(t, 5*time.Second, "a logged refresh failure", func() bool {
		return strings.Contains(logs.String(), "jwks refresh failed")
	})
	if !strings.Contains(logs.String(), srv.URL) {
		t.Errorf("log does not name the URL: %s", logs.String())
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, key, claims(nil), "k")); err != nil {
		t.Errorf("a failed refresh lost the keys: %v", err)
	}
}

func TestJWKSUnavailableAtStartFails(t *testing.T) {
	failing := newJWKSServer(t)
	failing.status.Store(http.StatusInternalServerError)
	closed := newJWKSServer(t)
	closed.Close()
	notJSON := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<html>login</html>"))
	}))
	defer notJSON.Close()

	for name, url := range map[string]string{"500": failing.URL, "connection refused": closed.URL, "not JSON": notJSON.URL} {
		t.Run(name, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), Config{JWKSURL: url, JWKSRefresh: 10 * time.Millisecond})
			if err == nil {
				v.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), url) {
				t.Errorf("err = %q, want it to name %s", err, url)
			}
		})
	}
}

func TestJWKSFirstFetchIsBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hanging.Close()
	defer close(release)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	v, err := NewVerifier(ctx, Config{JWKSURL: hanging.URL})
	if err == nil {
		v.Close()
		t.Fatal("no error")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), hanging.URL) {
		t.Errorf("err = %v, want the deadline and the URL", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("NewVerifier returned after %s", d)
	}
}

func TestCloseStopsJWKSRefresh(t *testing.T) {
	srv := newJWKSServer(t, jwk(t, "k", "RS256", &newRSAKey(t).PublicKey))
	before := goleak.IgnoreCurrent() // the test server's own goroutines
	v, err := NewVerifier(context.Background(), Config{JWKSURL: srv.URL, JWKSRefresh: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a background refresh", func() bool { return srv.fetches.Load() > 1 })
	v.Close()
	v.Close()
	// Find retries for a while: the refresh goroutine and the client's
	// connection goroutines must end, not just be told to.
	if err := goleak.Find(before); err != nil {
		t.Fatalf("goroutines left after Close: %v", err)
	}
	n := srv.fetches.Load()
	time.Sleep(50 * time.Millisecond) // ten refresh intervals
	if got := srv.fetches.Load(); got != n {
		t.Errorf("fetches went on after Close: %d, then %d", n, got)
	}
}

// waitFor polls cond until it holds, failing t after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s after %s", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
