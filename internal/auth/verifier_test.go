package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testIssuer   = "https://idp.example.com/realms/sse"
	testAudience = "sse-service"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef") // 32 bytes

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newECKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// publicPEM encodes the public half of key as a PKIX "PUBLIC KEY" block.
func publicPEM(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// claims returns a valid payload for the test issuer and audience; with
// applies changes (nil deletes a claim).
func claims(with map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"sub": "alice",
		"iss": testIssuer,
		"aud": testAudience,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"sse": map[string]any{
			"subscribe": []string{"user:alice", "news.*"},
			"publish":   []string{"user:alice:*"},
		},
	}
	for k, v := range with {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// sign makes a token of method over c with key, and a kid header when kid
// is not empty.
func sign(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// forge makes a token whose header says alg but whose signature is made by
// signer with key: what an attacker sends in an algorithm confusion attack.
func forge(t *testing.T, alg string, signer jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(signer, c)
	tok.Header["alg"] = alg
	input, err := tok.SigningString()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signer.Sign(input, key)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func newVerifier(t *testing.T, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// checkErr fails t unless err wraps want (nil: no error) and leaves no part
// of token in its message.
func checkErr(t *testing.T, err, want error, token string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	t.Logf("err = %v", err)
	for _, part := range strings.Split(token, ".") {
		if len(part) >= 8 && strings.Contains(err.Error(), part) {
			t.Fatalf("error message %q contains part of the token", err)
		}
	}
}

func TestVerify(t *testing.T) {
	rsaKey, otherRSA := newRSAKey(t), newRSAKey(t)
	ecKey := newECKey(t, elliptic.P256())
	rsaPEM, ecPEM := publicPEM(t, &rsaKey.PublicKey), publicPEM(t, &ecKey.PublicKey)

	// hsRSA has two key sources and checks iss and aud; the others have one.
	hsRSA := newVerifier(t, Config{
		Secret: testSecret, PublicKeyPEM: rsaPEM,
		Issuer: testIssuer, Audience: testAudience, Leeway: 30 * time.Second,
	})
	rsaOnly := newVerifier(t, Config{PublicKeyPEM: rsaPEM})
	ecOnly := newVerifier(t, Config{PublicKeyPEM: ecPEM})
	hsOnly := newVerifier(t, Config{Secret: testSecret})
	noExpOK := newVerifier(t, Config{Secret: testSecret, AllowNoExpiry: true})

	now := time.Now()
	long := claims(map[string]any{"pad": strings.Repeat("x", MaxTokenLen)})
	tests := []struct {
		name  string
		v     *Verifier
		token string
		want  error
	}{
		{"HS256", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), ""), nil},
		{"RS256", hsRSA, sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), ""), nil},
		{"ES256", ecOnly, sign(t, jwt.SigningMethodES256, ecKey, claims(nil), ""), nil},
		{"RS256 with a kid the PEM key ignores", rsaOnly, sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "any"), nil},
		{"aud as an array", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": []string{"other", testAudience}}), ""), nil},
		{"iss and aud not checked when not configured", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": nil, "aud": nil}), ""), nil},
		{"expired within leeway", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": now.Add(-10 * time.Second).Unix()}), ""), nil},
		{"no exp", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": nil}), ""), ErrNoExpiry},
		{"no exp, allowed", noExpOK, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": nil}), ""), nil},
		{"exp as a string of digits", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": strconv.FormatInt(now.Add(time.Hour).Unix(), 10)}), ""), ErrClaims},
		{"nbf as a string of digits", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"nbf": strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)}), ""), ErrClaims},

		{"expired", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": now.Add(-time.Minute).Unix()}), ""), ErrExpired},
		{"expired without leeway", hsOnly, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": now.Add(-2 * time.Second).Unix()}), ""), ErrExpired},
		{"not yet valid", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"nbf": now.Add(time.Minute).Unix()}), ""), ErrNotYetValid},

		{"HS256 wrong secret", hsRSA, sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes"), claims(nil), ""), ErrSignature},
		{"RS256 wrong key", hsRSA, sign(t, jwt.SigningMethodRS256, otherRSA, claims(nil), ""), ErrSignature},
		{"tampered payload", hsRSA, tamper(t, sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), "")), ErrSignature},

		{"none", hsRSA, sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil), ""), ErrAlgorithm},
		{"HS384", hsRSA, sign(t, jwt.SigningMethodHS384, testSecret, claims(nil), ""), ErrAlgorithm},
		{"RS512", hsRSA, sign(t, jwt.SigningMethodRS512, rsaKey, claims(nil), ""), ErrAlgorithm},
		{"PS256 with the RSA key", rsaOnly, sign(t, jwt.SigningMethodPS256, rsaKey, claims(nil), ""), ErrAlgorithm},
		{"unknown alg", hsRSA, forge(t, "XX999", jwt.SigningMethodHS256, testSecret, claims(nil)), ErrAlgorithm},
		{"ES256 to an RSA key", rsaOnly, sign(t, jwt.SigningMethodES256, ecKey, claims(nil), ""), ErrAlgorithm},
		{"RS256 to an EC key", ecOnly, sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), ""), ErrAlgorithm},
		{"RS256 with only a secret", hsOnly, sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), ""), ErrAlgorithm},
		{"HS256 with only a public key", rsaOnly, sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), ""), ErrAlgorithm},

		// Algorithm confusion: the public key is public, so an attacker can
		// HMAC with it; a verifier that fed it to HS256 would accept.
		{"HS256 signed with the RSA public key PEM", rsaOnly, sign(t, jwt.SigningMethodHS256, rsaPEM, claims(nil), ""), ErrAlgorithm},
		{"HS256 signed with the EC public key PEM", ecOnly, sign(t, jwt.SigningMethodHS256, ecPEM, claims(nil), ""), ErrAlgorithm},
		{"HS256 signed with the RSA public key PEM, secret also set", hsRSA, sign(t, jwt.SigningMethodHS256, rsaPEM, claims(nil), ""), ErrSignature},
		{"HS256 signed with the RSA public key DER, secret also set", hsRSA, sign(t, jwt.SigningMethodHS256, x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey), claims(nil), ""), ErrSignature},
		{"RS256 header with an HMAC by the secret", hsRSA, forge(t, "RS256", jwt.SigningMethodHS256, testSecret, claims(nil)), ErrSignature},
		{"ES256 header with an HMAC by the secret", hsRSA, forge(t, "ES256", jwt.SigningMethodHS256, testSecret, claims(nil)), ErrAlgorithm},

		{"wrong audience", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": "other"}), ""), ErrAudience},
		{"wrong audiences", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": []string{"a", "b"}}), ""), ErrAudience},
		{"empty audience", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": ""}), ""), ErrAudience},
		{"no audience", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"aud": nil}), ""), ErrAudience},
		{"wrong issuer", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "https://evil.example.com"}), ""), ErrIssuer},
		{"no issuer", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": nil}), ""), ErrIssuer},
		{"wrong issuer and expired", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"iss": "x", "exp": now.Add(-time.Hour).Unix()}), ""), ErrIssuer},

		{"empty", hsRSA, "", ErrMalformed},
		{"garbage", hsRSA, "not a token at all", ErrMalformed},
		{"two segments", hsRSA, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9", ErrMalformed},
		{"four segments", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), "") + ".x", ErrMalformed},
		{"bad base64", hsRSA, "eyJhbGciOiJIUzI1NiJ9.!!!!.c2ln", ErrMalformed},
		{"header not JSON", hsRSA, b64("not json") + "." + b64(`{"sub":"a"}`) + ".c2ln", ErrMalformed},
		{"exp not a number", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": "tomorrow"}), ""), ErrMalformed},
		{"longer than 8 KiB, though validly signed", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, long, ""), ErrMalformed},

		{"sse claim not an object", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sse": "user:*"}), ""), ErrClaims},
		{"sse.subscribe a string", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sse": map[string]any{"subscribe": "user:*"}}), ""), ErrClaims},
		{"sse.subscribe holds a number", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sse": map[string]any{"subscribe": []any{"a", 1}}}), ""), ErrClaims},
		{"sse.subscribe holds a bad pattern", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sse": map[string]any{"subscribe": []string{"user 1"}}}), ""), ErrClaims},
		{"sse.publish holds an empty pattern", hsRSA, sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sse": map[string]any{"publish": []string{""}}}), ""), ErrClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.v.Verify(tt.token)
			checkErr(t, err, tt.want, tt.token)
			if tt.want == nil && c == nil {
				t.Fatal("no claims")
			}
			if tt.want != nil && c != nil {
				t.Fatalf("claims %+v with an error", c)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// tamper gives token another payload but keeps its signature.
func tamper(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	parts[1] = b64(`{"sub":"mallory","sse":{"subscribe":["*"]}}`)
	return strings.Join(parts, ".")
}

func TestVerifyReturnsClaims(t *testing.T) {
	v := newVerifier(t, Config{Secret: testSecret})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	c, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"exp": exp.Unix()}), ""))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Subject, "alice"; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}
	if !c.ExpiresAt.Equal(exp) {
		t.Errorf("ExpiresAt = %v, want %v", c.ExpiresAt, exp)
	}
	if got, want := c.Subscribe.String(), "user:alice,news.*"; got != want {
		t.Errorf("Subscribe = %q, want %q", got, want)
	}
	if got, want := c.Publish.String(), "user:alice:*"; got != want {
		t.Errorf("Publish = %q, want %q", got, want)
	}
	for _, tt := range []struct {
		topic    string
		sub, pub bool
	}{
		{topic: "user:alice", sub: true},
		{topic: "news.sport", sub: true},
		{topic: "user:alice:inbox", pub: true},
		{topic: "user:bob"},
		{topic: "news"},
		{topic: "clock"},
	} {
		if got := c.CanSubscribe(tt.topic); got != tt.sub {
			t.Errorf("CanSubscribe(%q) = %v, want %v", tt.topic, got, tt.sub)
		}
		if got := c.CanPublish(tt.topic); got != tt.pub {
			t.Errorf("CanPublish(%q) = %v, want %v", tt.topic, got, tt.pub)
		}
	}
}

func TestTokenWithoutSSEClaimAllowsNothing(t *testing.T) {
	v := newVerifier(t, Config{Secret: testSecret, AllowNoExpiry: true})
	for name, sse := range map[string]any{"absent": nil, "empty object": map[string]any{}, "unknown members": map[string]any{"admin": true}} {
		c, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, claims(map[string]any{"sse": sse, "exp": nil}), ""))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.CanSubscribe("clock") || c.CanPublish("clock") {
			t.Errorf("%s: a token without patterns allows clock", name)
		}
		if !c.ExpiresAt.IsZero() {
			t.Errorf("%s: ExpiresAt = %v for a token without exp", name, c.ExpiresAt)
		}
	}
	var nilClaims *Claims
	if nilClaims.CanSubscribe("x") || nilClaims.CanPublish("x") {
		t.Error("nil *Claims allows a topic")
	}
}

// TestKeyIsChosenByAlgorithm checks the keyfunc itself, below the checks of
// the jwt library: with both a secret and a public key configured, HS256 gets
// the secret only and RS256 the RSA key only.
func TestKeyIsChosenByAlgorithm(t *testing.T) {
	rsaKey := newRSAKey(t)
	v := newVerifier(t, Config{Secret: testSecret, PublicKeyPEM: publicPEM(t, &rsaKey.PublicKey)})
	token := func(m jwt.SigningMethod) *jwt.Token {
		return &jwt.Token{Method: m, Header: map[string]any{"alg": m.Alg()}}
	}

	key, err := v.keyFor(token(jwt.SigningMethodHS256))
	if b, ok := key.([]byte); err != nil || !ok || string(b) != string(testSecret) {
		t.Errorf("HS256 key = %T, %v; want the secret", key, err)
	}
	key, err = v.keyFor(token(jwt.SigningMethodRS256))
	if k, ok := key.(*rsa.PublicKey); err != nil || !ok || !k.Equal(&rsaKey.PublicKey) {
		t.Errorf("RS256 key = %T, %v; want the RSA public key", key, err)
	}
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodES256, jwt.SigningMethodHS384, jwt.SigningMethodPS256, jwt.SigningMethodNone} {
		if key, err := v.keyFor(token(m)); !errors.Is(err, ErrAlgorithm) || key != nil {
			t.Errorf("%s key = %T, %v; want none and ErrAlgorithm", m.Alg(), key, err)
		}
	}
}

func TestPublicKeyFormats(t *testing.T) {
	rsaKey := newRSAKey(t)
	ecKey := newECKey(t, elliptic.P256())
	cert := func(pub, priv any) []byte {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "idp"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	rsaToken := sign(t, jwt.SigningMethodRS256, rsaKey, claims(nil), "")
	ecToken := sign(t, jwt.SigningMethodES256, ecKey, claims(nil), "")
	tests := []struct {
		name  string
		pem   []byte
		token string
	}{
		{"RSA PKIX PUBLIC KEY", publicPEM(t, &rsaKey.PublicKey), rsaToken},
		{"PKCS #1 RSA PUBLIC KEY", pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), rsaToken},
		{"RSA CERTIFICATE", cert(&rsaKey.PublicKey, rsaKey), rsaToken},
		{"RSA CERTIFICATE followed by its chain", append(cert(&rsaKey.PublicKey, rsaKey), cert(&ecKey.PublicKey, ecKey)...), rsaToken},
		{"EC PKIX PUBLIC KEY", publicPEM(t, &ecKey.PublicKey), ecToken},
		{"EC CERTIFICATE", cert(&ecKey.PublicKey, ecKey), ecToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newVerifier(t, Config{PublicKeyPEM: tt.pem})
			if _, err := v.Verify(tt.token); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	rsaKey := newRSAKey(t)
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // all in the error message
	}{
		{"no key source", Config{Issuer: testIssuer}, []string{"no key source"}},
		{"short secret", Config{Secret: []byte("secret")}, []string{"HS256 secret", "got 6 bytes", "at least 32"}},
		{"not PEM", Config{PublicKeyPEM: []byte("ssh-rsa AAAA")}, []string{"no PEM block"}},
		{"private key", Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})}, []string{"PRIVATE KEY", "public key only"}},
		{"corrupt key", Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}, []string{"parse PUBLIC KEY"}},
		{"two keys", Config{PublicKeyPEM: append(publicPEM(t, &rsaKey.PublicKey), publicPEM(t, &rsaKey.PublicKey)...)}, []string{"more than one PEM block"}},
		{"small RSA key", Config{PublicKeyPEM: publicPEM(t, &smallRSA.PublicKey)}, []string{"1024 bits"}},
		{"P-384 key", Config{PublicKeyPEM: publicPEM(t, &newECKey(t, elliptic.P384()).PublicKey)}, []string{"P-384", "only P-256"}},
		{"Ed25519 key", Config{PublicKeyPEM: publicPEM(t, edPub)}, []string{"ed25519", "not supported"}},
		{"JWKS URL not http", Config{JWKSURL: "file:///etc/jwks.json"}, []string{"file:///etc/jwks.json", "http or https"}},
		{"JWKS URL relative", Config{JWKSURL: "/jwks"}, []string{`"/jwks"`}},
		{"negative durations", Config{Secret: testSecret, Leeway: -time.Second, JWKSRefresh: -time.Minute}, []string{"leeway: -1s", "refresh interval: -1m0s"}},
		{"every problem at once", Config{Secret: []byte("x"), JWKSURL: "ftp://idp"}, []string{"1 bytes", "ftp://idp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(context.Background(), tt.cfg)
			if err == nil {
				v.Close()
				t.Fatal("no error")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("err = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	v, err := NewVerifier(context.Background(), Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	v.Close()
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, claims(nil), "")); err != nil {
		t.Errorf("Verify after Close: %v", err)
	}
}
