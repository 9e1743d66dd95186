package config

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sse-service/sse-service/internal/auth"
)

// authProblems checks the private-topic, JWT and CORS settings.
func (c Config) authProblems() []problem {
	var errs []problem
	bad := func(name, format string, args ...any) {
		errs = append(errs, problem{Prefix + "_" + name, fmt.Sprintf(format, args...)})
	}
	if _, err := c.PrivatePatterns(); err != nil {
		bad("PRIVATE_TOPICS", "%v (patterns are topic names where * matches any run of characters, comma separated)", err)
	}
	if c.JWTSecret != "" && c.JWTSecretFile != "" {
		bad("JWT_SECRET", "set SSE_JWT_SECRET or SSE_JWT_SECRET_FILE, not both")
	} else if secret, err := c.JWTSecretBytes(); err != nil {
		bad("JWT_SECRET_FILE", "%v", err)
	} else if len(secret) > 0 && len(secret) < auth.MinSecretLen {
		name := "JWT_SECRET"
		if c.JWTSecretFile != "" {
			name = "JWT_SECRET_FILE"
		}
		bad(name, "the HS256 secret must be at least %d bytes (got %d)", auth.MinSecretLen, len(secret))
	}
	if c.JWTPublicKeyFile != "" {
		if _, err := os.ReadFile(c.JWTPublicKeyFile); err != nil {
			bad("JWT_PUBLIC_KEY_FILE", "%v", err)
		}
	}
	if c.JWTJWKSURL != "" {
		u, err := url.Parse(c.JWTJWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("JWT_JWKS_URL", "%q is not an http(s) URL such as https://idp.example.com/realms/app/protocol/openid-connect/certs", c.JWTJWKSURL)
		}
	}
	if c.JWTJWKSRefresh < time.Second {
		bad("JWT_JWKS_REFRESH", "must be a duration of at least 1s, such as 5m (got %s)", c.JWTJWKSRefresh)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		bad("JWT_LEEWAY", "must be a duration from 0 to 5m, such as 30s (got %s)", c.JWTLeeway)
	}
	if len(c.privateEntries()) > 0 && !c.JWTConfigured() {
		bad("PRIVATE_TOPICS", "private topics need a key to verify tokens: set SSE_JWT_SECRET, SSE_JWT_SECRET_FILE, SSE_JWT_PUBLIC_KEY_FILE or SSE_JWT_JWKS_URL")
	}
	if (&http.Cookie{Name: c.AuthCookie}).Valid() != nil {
		bad("AUTH_COOKIE", "%q is not a cookie name (letters, digits and !#$%%&'*+-.^_`|~)", c.AuthCookie)
	}
	if _, err := c.Origins(); err != nil {
		bad("CORS_ORIGINS", "%v", err)
	}
	return errs
}

func (c Config) privateEntries() []string {
	var out []string
	for _, p := range c.PrivateTopics {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// PrivatePatterns parses PRIVATE_TOPICS.
func (c Config) PrivatePatterns() (auth.Patterns, error) {
	return auth.ParsePatterns(c.privateEntries())
}

// JWTConfigured reports whether any JWT key source is set.
func (c Config) JWTConfigured() bool {
	return c.JWTSecret != "" || c.JWTSecretFile != "" || c.JWTPublicKeyFile != "" || c.JWTJWKSURL != ""
}

// JWTSecretBytes returns the HS256 secret from JWT_SECRET or the file of
// JWT_SECRET_FILE (without its trailing newline); nil when neither is set.
func (c Config) JWTSecretBytes() ([]byte, error) {
	if c.JWTSecret != "" {
		return []byte(c.JWTSecret), nil
	}
	if c.JWTSecretFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.JWTSecretFile)
	if err != nil {
		return nil, err
	}
	return []byte(strings.TrimRight(string(b), "\r\n")), nil
}

// JWTPublicKeyPEM returns the content of JWT_PUBLIC_KEY_FILE, nil when unset.
func (c Config) JWTPublicKeyPEM() ([]byte, error) {
	if c.JWTPublicKeyFile == "" {
		return nil, nil
	}
	return os.ReadFile(c.JWTPublicKeyFile)
}

// Origins parses CORS_ORIGINS into origins as browsers send them
// (scheme://host[:port], lower case), or "*".
func (c Config) Origins() ([]string, error) {
	var out []string
	for _, o := range c.CORSOrigins {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
			continue
		case o == "*":
			out = append(out, o)
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("%q is not an origin such as https://app.example.com or http://localhost:3000 (or *)", o)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}
