package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkVerify measures what a subscribe to a private topic costs: one
// Verify per stream, never per event.
func BenchmarkVerify(b *testing.B) {
	claims := jwt.MapClaims{
		"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"sse": map[string]any{"subscribe": []string{"user:alice", "team:*"}},
	}
	secret := []byte("benchmark-secret-of-at-least-32-bytes")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			b.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	for _, bc := range []struct {
		name   string
		cfg    Config
		method jwt.SigningMethod
		key    any
	}{
		{"HS256", Config{Secret: secret}, jwt.SigningMethodHS256, secret},
		{"RS256", Config{PublicKeyPEM: pemOf(&rsaKey.PublicKey)}, jwt.SigningMethodRS256, rsaKey},
		{"ES256", Config{PublicKeyPEM: pemOf(&ecKey.PublicKey)}, jwt.SigningMethodES256, ecKey},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v, err := NewVerifier(context.Background(), bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer v.Close()
			tok, err := jwt.NewWithClaims(bc.method, claims).SignedString(bc.key)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := v.Verify(tok)
				if err != nil || !c.CanSubscribe("team:ops") {
					b.Fatalf("verify: %v", err)
				}
			}
		})
	}
}
