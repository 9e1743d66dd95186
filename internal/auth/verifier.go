// Package auth verifies the JWTs that open private topics and checks which
// topics a token covers.
//
// The model: a token is a JWT signed by someone the operator trusts, through
// one or more key sources given in Config: an HS256 shared secret, one PEM
// public key (RS256 or ES256), and a JWKS endpoint whose key set is fetched at
// start and kept fresh in the background, so the identity provider can rotate
// keys without a restart. The key is always chosen by the token's alg and must
// be of that alg's type (the secret only for HS256, RSA keys only for RS256,
// EC P-256 keys only for ES256), which rules out `none` and algorithm
// confusion. exp and nbf are checked with a leeway, iss and aud when
// configured.
//
// What a token allows is in its claim `sse`: {"subscribe": [patterns],
// "publish": [patterns]}, where `*` in a pattern matches any run of
// characters and everything else is literal. Verify returns the claims;
// Claims.CanSubscribe and Claims.CanPublish answer per topic.
package auth

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Why Verify refused a token. Every error of Verify wraps exactly one of them;
// map them with errors.Is. Their messages never contain the token.
var (
	// ErrMalformed: not a JWT (segments, base64, JSON), empty, or longer
	// than MaxTokenLen.
	ErrMalformed = errors.New("malformed token")
	// ErrExpired: exp is past, leeway included.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid: nbf is in the future, leeway included.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrSignature: the signature does not verify with the key for its alg,
	// or the JWKS has no key with the token's kid.
	ErrSignature = errors.New("invalid token signature")
	// ErrAlgorithm: the alg is not one the configured keys allow (`none`,
	// HS256 without a secret, an alg that does not fit the key's type).
	ErrAlgorithm = errors.New("token algorithm not allowed")
	// ErrIssuer: Config.Issuer is set and iss is missing or different.
	ErrIssuer = errors.New("wrong token issuer")
	// ErrAudience: Config.Audience is set and aud is missing or lacks it.
	ErrAudience = errors.New("wrong token audience")
	// ErrClaims: a claim has the wrong shape, e.g. an `sse` claim that is not
	// an object of string lists, or holds a bad pattern, or a time (exp,
	// nbf, iat) that is not a JSON number.
	ErrClaims = errors.New("invalid token claims")
	// ErrNoExpiry: the token has no exp, and Config.AllowNoExpiry is off: a
	// token that never expires would keep its streams open forever.
	ErrNoExpiry = errors.New("token has no expiry")
)

// MaxTokenLen is the longest token Verify parses, in bytes; longer ones are
// refused as malformed before any decoding.
const MaxTokenLen = 8 << 10

// DefaultJWKSRefresh is what a zero Config.JWKSRefresh means (and the
// service's SSE_JWT_JWKS_REFRESH default).
const DefaultJWKSRefresh = 5 * time.Minute

// Limits for the JWKS source.
const (
	// jwksFetchTimeout bounds one JWKS request, and is the timeout of the
	// HTTP client made when Config.HTTPClient is nil.
	jwksFetchTimeout = 10 * time.Second
	// unknownKIDEvery is the most often a token with an unknown kid makes
	// the JWKS be fetched again (or Config.JWKSRefresh if shorter). It is
	// how a rotated key is picked up at once, without letting forged kids
	// hammer the identity provider.
	unknownKIDEvery = 30 * time.Second
	// unknownKIDWait is the longest Verify waits for such a fetch; when the
	// rate limit would make it wait longer it fails at once instead.
	unknownKIDWait = 5 * time.Second
)

// verifyError is what Verify returns: one of the sentinels and a detail.
type verifyError struct {
	kind   error
	detail string
}

func (e *verifyError) Error() string { return e.kind.Error() + ": " + e.detail }
func (e *verifyError) Unwrap() error { return e.kind }

// fail builds a verifyError. The detail is capped: it may quote values from
// the token (an alg, a kid, a claim), and a log line should stay a line.
func fail(kind error, format string, args ...any) *verifyError {
	const maxDetail = 512
	detail := fmt.Sprintf(format, args...)
	if len(detail) > maxDetail {
		detail = detail[:maxDetail] + "..."
	}
	return &verifyError{kind: kind, detail: detail}
}

// Config says which keys sign tokens and which claims a token must have. At
// least one of Secret, PublicKeyPEM and JWKSURL must be set; several may be,
// and each token is checked against the source its alg belongs to.
type Config struct {
	// Secret is the HS256 shared secret, at least 32 bytes (RFC 7518 §3.2),
	// used as is. Nil or empty: HS256 tokens are refused.
	Secret []byte
	// PublicKeyPEM is one PEM public key: RSA (RS256, at least 2048 bits)
	// or EC P-256 (ES256), as a "PUBLIC KEY", "RSA PUBLIC KEY" or
	// "CERTIFICATE" block. Empty: no static public key.
	PublicKeyPEM []byte
	// JWKSURL is the http(s) URL of a JWK Set (Keycloak, Auth0, Dex). Its
	// RSA and EC P-256 keys verify RS256 and ES256 tokens. Empty: no JWKS.
	JWKSURL string
	// JWKSRefresh is how often the JWKS is fetched again in the background;
	// zero means 5 minutes. A token with an unknown kid also triggers a
	// fetch, at most every 30 s (or every JWKSRefresh if shorter).
	JWKSRefresh time.Duration
	// Issuer, when not empty, must equal the token's iss.
	Issuer string
	// Audience, when not empty, must be the token's aud or one of its
	// entries (aud may be a string or an array).
	Audience string
	// Leeway is the clock skew allowed when checking exp and nbf; zero
	// allows none.
	Leeway time.Duration
	// AllowNoExpiry accepts tokens without exp (they never expire, and
	// neither do the streams opened with them). Off: they are refused
	// with ErrNoExpiry.
	AllowNoExpiry bool
	// HTTPClient fetches the JWKS; nil means a client of this package with
	// a 10 s timeout, whose idle connections Close closes.
	HTTPClient *http.Client
	// Logger receives JWKS refresh failures; nil discards them.
	Logger *slog.Logger
}

// FieldError is a problem with one field of a Config: Field is the
// field's name (such as "Secret"), so a caller can name its own setting.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string {
	return fieldLabels[e.Field] + ": " + e.Err.Error()
}
func (e *FieldError) Unwrap() error { return e.Err }

// fieldLabels name Config's fields in FieldError messages.
var fieldLabels = map[string]string{
	"": "config", "Secret": "HS256 secret", "PublicKeyPEM": "public key",
	"JWKSURL": "JWKS URL", "JWKSRefresh": "JWKS refresh interval", "Leeway": "leeway",
}

// Check returns every problem of c, in field order; NewVerifier refuses a
// Config with any. It parses the public key but reads and fetches nothing.
// A problem that is about no single field (no key source at all) has an
// empty Field.
func (c Config) Check() []*FieldError {
	var out []*FieldError
	bad := func(field string, err error) { out = append(out, &FieldError{Field: field, Err: err}) }
	if len(c.Secret) == 0 && len(c.PublicKeyPEM) == 0 && c.JWKSURL == "" {
		bad("", errors.New("no key source: set a secret, a public key or a JWKS URL"))
	}
	if n := len(c.Secret); n > 0 && n < MinSecretLen {
		bad("Secret", fmt.Errorf("must be at least %d bytes (got %d bytes)", MinSecretLen, n))
	}
	if len(c.PublicKeyPEM) > 0 {
		if _, _, err := parsePublicKeyPEM(c.PublicKeyPEM); err != nil {
			bad("PublicKeyPEM", err)
		}
	}
	if c.JWKSURL != "" {
		if u, err := url.Parse(c.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("JWKSURL", fmt.Errorf("%q is not an absolute http or https URL", c.JWKSURL))
		}
	}
	if c.JWKSRefresh < 0 {
		bad("JWKSRefresh", fmt.Errorf("%s must not be negative", c.JWKSRefresh))
	}
	if c.Leeway < 0 {
		bad("Leeway", fmt.Errorf("%s must not be negative", c.Leeway))
	}
	return out
}

// Verifier verifies tokens against the keys of its Config. It is safe for
// concurrent use. Whoever calls NewVerifier must call Close.
type Verifier struct {
	parser *jwt.Parser
	algs   []string // algs the configured keys allow, for jwt.WithValidMethods
	secret []byte   // HS256 key; nil when not configured
	pubKey any      // *rsa.PublicKey or *ecdsa.PublicKey from PublicKeyPEM; nil when not configured
	pubAlg string   // the alg pubKey verifies
	jwks   keyfunc.Keyfunc
	issuer string
	// allowNoExp accepts tokens without exp (Config.AllowNoExpiry).
	allowNoExp bool
	aud        string

	ctx       context.Context // ends the JWKS refresh goroutine; cancelled by Close
	cancel    context.CancelFunc
	transport *http.Transport // made by NewVerifier when Config.HTTPClient is nil; nil otherwise
}

// NewVerifier checks cfg and builds a Verifier. With a JWKS URL it fetches
// the key set before returning, bounded by ctx and by a 10 s timeout, and
// fails with an error naming the URL when it cannot: a service that starts
// without its keys would refuse every token. It then refreshes the set in the
// background until Close. Every configuration problem is reported at once.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	if problems := cfg.Check(); len(problems) > 0 {
		errs := make([]error, len(problems))
		for i, p := range problems {
			errs[i] = p
		}
		return nil, fmt.Errorf("jwt verifier: %w", errors.Join(errs...))
	}
	v := &Verifier{issuer: cfg.Issuer, aud: cfg.Audience, allowNoExp: cfg.AllowNoExpiry}
	if len(cfg.Secret) > 0 {
		v.secret = slices.Clone(cfg.Secret)
		v.algs = append(v.algs, algHS256)
	}
	if len(cfg.PublicKeyPEM) > 0 {
		v.pubKey, v.pubAlg, _ = parsePublicKeyPEM(cfg.PublicKeyPEM) // Check parsed it
		v.algs = append(v.algs, v.pubAlg)
	}
	if cfg.JWKSURL != "" {
		v.algs = append(v.algs, algRS256, algES256)
	}
	slices.Sort(v.algs)
	v.algs = slices.Compact(v.algs)

	opts := []jwt.ParserOption{jwt.WithValidMethods(v.algs), jwt.WithLeeway(cfg.Leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)

	v.ctx, v.cancel = context.WithCancel(context.Background())
	if cfg.JWKSURL != "" {
		if err := v.startJWKS(ctx, cfg); err != nil {
			v.Close()
			return nil, err
		}
	}
	return v, nil
}

// startJWKS fetches the JWKS once and starts its refresh goroutine, which
// lives until v.ctx is cancelled.
func (v *Verifier) startJWKS(ctx context.Context, cfg Config) error {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	client := cfg.HTTPClient
	if client == nil {
		v.transport = http.DefaultTransport.(*http.Transport).Clone()
		client = &http.Client{Timeout: jwksFetchTimeout, Transport: v.transport}
	}
	refresh := cfg.JWKSRefresh
	if refresh == 0 {
		refresh = DefaultJWKSRefresh
	}
	failFirst := false
	override := keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               jwksFetchTimeout,
		NoErrorReturnFirstHTTPReq: &failFirst,
		RateLimitWaitMax:          unknownKIDWait,
		RefreshInterval:           refresh,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(min(unknownKIDEvery, refresh)), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				if v.ctx.Err() != nil {
					return // closing: the failure is our own cancellation
				}
				logger.Warn("jwks refresh failed", "url", u, "error", err)
			}
		},
	}

	// The library fetches with v.ctx, which must outlive NewVerifier for the
	// refresh goroutine, so the caller's ctx bounds the first fetch by
	// cancelling v.ctx if it ends first.
	stop := context.AfterFunc(ctx, v.cancel)
	kf, err := keyfunc.NewDefaultOverrideCtx(v.ctx, []string{cfg.JWKSURL}, override)
	if !stop() {
		return fmt.Errorf("fetch JWKS %s: %w", cfg.JWKSURL, context.Cause(ctx))
	}
	if err != nil {
		return fmt.Errorf("fetch JWKS %s: %w", cfg.JWKSURL, err)
	}
	v.jwks = kf
	if keys, err := kf.Storage().KeyReadAll(v.ctx); err == nil {
		logger.Info("jwks loaded", "url", cfg.JWKSURL, "keys", len(keys))
	}
	return nil
}

// Close stops the JWKS refresh goroutine and closes the idle connections of
// the HTTP client NewVerifier made. It is safe to call more than once. A
// closed Verifier still verifies with the keys it has, but fetches no more.
func (v *Verifier) Close() {
	v.cancel()
	if v.transport != nil {
		v.transport.CloseIdleConnections()
	}
}

// tokenClaims is the payload Verify decodes: the registered claims jwt checks
// and the raw `sse` claim, decoded once the token is known to be genuine.
type tokenClaims struct {
	jwt.RegisteredClaims
	SSE json.RawMessage `json:"sse"`
}

// Verify checks token (the compact JWT, without "Bearer ") and returns its
// claims. The error wraps one of ErrMalformed, ErrExpired, ErrNotYetValid,
// ErrSignature, ErrAlgorithm, ErrIssuer, ErrAudience or ErrClaims.
//
// A token with a kid the JWKS does not have makes Verify fetch the JWKS again
// (rate limited, see Config.JWKSRefresh), so it may block for up to 5 s.
func (v *Verifier) Verify(token string) (*Claims, error) {
	switch {
	case token == "":
		return nil, fail(ErrMalformed, "empty")
	case len(token) > MaxTokenLen:
		return nil, fail(ErrMalformed, "%d bytes, longer than %d", len(token), MaxTokenLen)
	}
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, v.keyFor)
	if err != nil {
		return nil, v.classify(t, &tc, err)
	}
	if err := numericTimes(token); err != nil {
		return nil, err
	}
	if tc.ExpiresAt == nil && !v.allowNoExp {
		return nil, fail(ErrNoExpiry, "no exp (SSE_JWT_ALLOW_NO_EXP is off)")
	}
	return newClaims(&tc)
}

// numericTimes checks that the token's exp, nbf and iat, when present, are
// JSON numbers, as RFC 7519 says: the jwt package also takes "1700000000"
// as a string. The token is already verified, so its payload decodes.
func numericTimes(token string) error {
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return fail(ErrMalformed, "payload: %v", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil {
		return fail(ErrMalformed, "payload: %v", err)
	}
	for _, name := range []string{"exp", "nbf", "iat"} {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			continue
		}
		if c := v[0]; c != '-' && (c < '0' || c > '9') {
			return fail(ErrClaims, "%s: want a number of seconds, got %.20s", name, v)
		}
	}
	return nil
}

// classify turns an error of jwt into one wrapping our sentinels.
func (v *Verifier) classify(t *jwt.Token, tc *tokenClaims, err error) error {
	var ve *verifyError
	if errors.As(err, &ve) { // from keyFor
		return ve
	}
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed) || t == nil:
		return fail(ErrMalformed, "%v", err)
	case !slices.Contains(v.algs, headerAlg(t)):
		// jwt says "unverifiable" for an unknown alg and "signature
		// invalid" for one outside WithValidMethods (`none` included).
		return fail(ErrAlgorithm, "alg %q not allowed (allowed: %s)", short(headerAlg(t)), strings.Join(v.algs, ", "))
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return fail(ErrSignature, "%v", err)
	// A token can fail several claim checks; the first that applies wins,
	// most telling first: a token for another issuer or audience is the
	// wrong token, refreshing it would not help.
	case v.issuer != "" && tc.Issuer == "":
		return fail(ErrIssuer, "no iss, want %q", v.issuer)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return fail(ErrIssuer, "iss %q, want %q", short(tc.Issuer), v.issuer)
	case v.aud != "" && (len(tc.Audience) == 0 || len(tc.Audience) == 1 && tc.Audience[0] == ""): // as jwt sees a missing aud
		return fail(ErrAudience, "no aud, want %q", v.aud)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return fail(ErrAudience, "aud %q, want %q", shortAll(tc.Audience), v.aud)
	case errors.Is(err, jwt.ErrTokenExpired):
		return fail(ErrExpired, "exp %s", tc.ExpiresAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return fail(ErrNotYetValid, "nbf %s", tc.NotBefore.UTC().Format(time.RFC3339))
	default:
		return fail(ErrClaims, "%v", err)
	}
}

// keyFor is the jwt.Keyfunc: it returns the key for the token's alg and
// nothing else, so a key never meets an algorithm of another type (the HMAC
// secret is never tried as an RSA/EC key, nor a public key as an HMAC secret).
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	switch alg {
	case algHS256:
		if v.secret == nil {
			return nil, fail(ErrAlgorithm, "HS256 token but no secret configured")
		}
		return v.secret, nil
	case algRS256, algES256:
	default:
		return nil, fail(ErrAlgorithm, "alg %q not allowed", short(alg))
	}
	var keys []jwt.VerificationKey
	if v.pubKey != nil && v.pubAlg == alg {
		keys = append(keys, v.pubKey)
	}
	if v.jwks != nil {
		found, err := v.jwksKeys(t, alg)
		if err != nil && len(keys) == 0 {
			return nil, err
		}
		keys = append(keys, found...)
	}
	switch len(keys) {
	case 0:
		return nil, fail(ErrAlgorithm, "%s token but no %s key configured", alg, alg)
	case 1:
		return keys[0], nil
	}
	return jwt.VerificationKeySet{Keys: keys}, nil
}

// jwksKeys returns the JWKS keys that may verify t: the one with t's kid, or
// without a kid every key of alg's type. The JWKS is fetched again (rate
// limited) when the kid is unknown, which is how key rotation is picked up.
func (v *Verifier) jwksKeys(t *jwt.Token, alg string) ([]jwt.VerificationKey, error) {
	store := v.jwks.Storage()
	kidValue, hasKid := t.Header["kid"]
	if !hasKid {
		all, err := store.KeyReadAll(v.ctx)
		if err != nil {
			return nil, fail(ErrSignature, "read JWKS: %v", err)
		}
		var keys []jwt.VerificationKey
		for _, jwk := range all {
			m := jwk.Marshal()
			if key := publicOf(jwk.Key()); jwkUsable(string(m.USE), string(m.ALG), alg) && fitsAlg(key, alg) {
				keys = append(keys, key)
			}
		}
		if len(keys) == 0 {
			return nil, fail(ErrSignature, "token has no kid and the JWKS has no %s key", alg)
		}
		return keys, nil
	}
	kid, ok := kidValue.(string)
	if !ok {
		return nil, fail(ErrMalformed, "kid is not a string")
	}
	jwk, err := store.KeyRead(v.ctx, kid)
	if err != nil {
		return nil, fail(ErrSignature, "no JWKS key with kid %q: %v", short(kid), err)
	}
	m := jwk.Marshal()
	key := publicOf(jwk.Key())
	if !jwkUsable(string(m.USE), string(m.ALG), alg) || !fitsAlg(key, alg) {
		return nil, fail(ErrAlgorithm, "%s token but JWKS key %q is %s (alg %q, use %q)", alg, short(kid), m.KTY, m.ALG, m.USE)
	}
	return []jwt.VerificationKey{key}, nil
}

// jwkUsable reports whether a JWK whose "use" and "alg" are as given (empty
// when absent) may verify a token signed with alg.
func jwkUsable(use, jwkAlg, alg string) bool {
	return (use == "" || use == "sig") && (jwkAlg == "" || jwkAlg == alg)
}

// publicOf returns the public half of a private key, and any other key as is:
// a JWKS should only hold public keys, but a careless one may not.
func publicOf(key any) any {
	if k, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		return k.Public()
	}
	return key
}

// headerAlg is the alg of the token's header, or "" when absent.
func headerAlg(t *jwt.Token) string {
	alg, _ := t.Header["alg"].(string)
	return alg
}

// short cuts a value taken from a token to a length fit for a log line.
func short(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return s
	}
	return s[:maxLen] + "..."
}

func shortAll(list []string) string {
	return short(strings.Join(list, ","))
}
