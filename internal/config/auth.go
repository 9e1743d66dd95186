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

// resolveAuth checks the private-topic, JWT and CORS settings and fills
// r.PrivateTopics, r.CORSOrigins and r.JWT. The rules on keys themselves
// (secret length, key types, URL) are auth.Config.Check's; here they are
// only given their variables' names.
func (c Config) resolveAuth(r *Resolved) []problem {
	var errs []problem
	bad := func(name, format string, args ...any) {
		errs = append(errs, problem{Prefix + "_" + name, fmt.Sprintf(format, args...)})
	}
	var err error
	if r.PrivateTopics, err = auth.ParsePatterns(c.privateEntries()); err != nil {
		bad("PRIVATE_TOPICS", "%v (patterns are topic names where * matches any run of characters, comma separated)", err)
	}
	if r.CORSOrigins, err = parseOrigins(c.CORSOrigins); err != nil {
		bad("CORS_ORIGINS", "%v", err)
	}
	if (&http.Cookie{Name: c.AuthCookie}).Valid() != nil {
		bad("AUTH_COOKIE", "%q is not a cookie name (letters, digits and !#$%%&'*+-.^_`|~)", c.AuthCookie)
	}
	if c.JWTJWKSRefresh < time.Second {
		bad("JWT_JWKS_REFRESH", "must be a duration of at least 1s, such as 5m (got %s)", c.JWTJWKSRefresh)
	}
	if c.JWTLeeway < 0 || c.JWTLeeway > 5*time.Minute {
		bad("JWT_LEEWAY", "must be a duration from 0 to 5m, such as 30s (got %s)", c.JWTLeeway)
	}
	if c.JWTSecret == "" && c.JWTSecretFile == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSURL == "" {
		if len(r.PrivateTopics) > 0 {
			bad("PRIVATE_TOPICS", "private topics need a key to verify tokens: set SSE_JWT_SECRET, SSE_JWT_SECRET_FILE, SSE_JWT_PUBLIC_KEY_FILE or SSE_JWT_JWKS_URL")
		}
		return errs
	}
	jwt := auth.Config{
		JWKSURL:       c.JWTJWKSURL,
		JWKSRefresh:   c.JWTJWKSRefresh,
		Issuer:        c.JWTIssuer,
		Audience:      c.JWTAudience,
		Leeway:        c.JWTLeeway,
		AllowNoExpiry: c.JWTAllowNoExp,
	}
	secretVar := "JWT_SECRET"
	switch {
	case c.JWTSecret != "" && c.JWTSecretFile != "":
		bad("JWT_SECRET", "set SSE_JWT_SECRET or SSE_JWT_SECRET_FILE, not both")
	case c.JWTSecret != "":
		jwt.Secret = []byte(c.JWTSecret)
	case c.JWTSecretFile != "":
		secretVar = "JWT_SECRET_FILE"
		b, err := os.ReadFile(c.JWTSecretFile)
		if err != nil {
			bad(secretVar, "%v", err)
		}
		jwt.Secret = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	if c.JWTPublicKeyFile != "" {
		if jwt.PublicKeyPEM, err = os.ReadFile(c.JWTPublicKeyFile); err != nil {
			bad("JWT_PUBLIC_KEY_FILE", "%v", err)
		}
	}
	if len(errs) > 0 {
		return errs // a file that could not be read is not checked further
	}
	vars := map[string]string{
		"Secret": secretVar, "PublicKeyPEM": "JWT_PUBLIC_KEY_FILE", "JWKSURL": "JWT_JWKS_URL",
		"JWKSRefresh": "JWT_JWKS_REFRESH", "Leeway": "JWT_LEEWAY",
	}
	for _, p := range jwt.Check() {
		bad(vars[p.Field], "%v", p.Err)
	}
	if len(errs) == 0 {
		r.JWT = &jwt
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

// parseOrigins parses CORS_ORIGINS into origins as browsers send them
// (scheme://host[:port], lower case), or "*".
func parseOrigins(list []string) ([]string, error) {
	var out []string
	for _, o := range list {
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
