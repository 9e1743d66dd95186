package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Algorithms this package accepts, and which key each one needs.
const (
	algHS256 = "HS256" // Config.Secret
	algRS256 = "RS256" // *rsa.PublicKey
	algES256 = "ES256" // *ecdsa.PublicKey on P-256
)

// MinSecretLen is the shortest HS256 secret: RFC 7518 §3.2 requires a key at
// least as long as the hash output, 256 bits.
const MinSecretLen = 32

// minRSABits is the smallest RSA modulus accepted in a configured PEM key.
const minRSABits = 2048

// parsePublicKeyPEM returns the public key of the first PEM block of data and
// the algorithm it verifies: an RSA key (RS256) or an EC P-256 key (ES256), as
// a PKIX "PUBLIC KEY", a PKCS #1 "RSA PUBLIC KEY" or a "CERTIFICATE" (further
// blocks after a certificate, its chain, are ignored).
func parsePublicKeyPEM(data []byte) (any, string, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
		return nil, "", fmt.Errorf("PEM block is a %s: give the public key only", block.Type)
	default:
		return nil, "", fmt.Errorf("PEM block type %q not supported (want PUBLIC KEY or CERTIFICATE)", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("parse %s: %w", block.Type, err)
	}
	if block.Type != "CERTIFICATE" {
		if next, _ := pem.Decode(rest); next != nil {
			return nil, "", errors.New("more than one PEM block: give exactly one public key")
		}
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, "", fmt.Errorf("RSA key of %d bits: at least %d required", k.N.BitLen(), minRSABits)
		}
		return k, algRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", fmt.Errorf("EC key on curve %s: only P-256 (ES256) is supported", k.Curve.Params().Name)
		}
		return k, algES256, nil
	default:
		return nil, "", fmt.Errorf("key type %T not supported (want RSA or EC P-256)", key)
	}
}

// fitsAlg reports whether key is the kind of public key alg verifies with.
// It is the one place that ties a token's alg to a key type, so that a key is
// never handed to the wrong algorithm.
func fitsAlg(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return alg == algRS256
	case *ecdsa.PublicKey:
		return alg == algES256 && k.Curve == elliptic.P256()
	}
	return false
}
