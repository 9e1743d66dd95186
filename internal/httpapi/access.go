package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sse-service/sse-service/internal/auth"
	"github.com/sse-service/sse-service/internal/stream"
)

// accessTokenParam is the query parameter that may carry a subscriber's
// token, for clients that can neither set a header nor send a cookie.
const accessTokenParam = "access_token"

type queryTokenKey struct{}

// stripQueryToken takes access_token out of the request URL before anything
// else sees it (router, tracing, logs), and keeps it in the request context
// for the stream handler: the token never appears in url.full, url.query, a
// log line or an error body.
func stripQueryToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		rest, tok, found := cutQueryParam(r.URL.RawQuery, accessTokenParam)
		if !found {
			return next(c)
		}
		r.URL.RawQuery = rest
		r.RequestURI = r.URL.RequestURI()
		c.SetRequest(r.WithContext(context.WithValue(r.Context(), queryTokenKey{}, tok)))
		return next(c)
	}
}

// cutQueryParam removes every occurrence of the parameter name from a raw
// query and returns the first value. It works part by part, like
// url.Values does, but never gives up on the whole query because another
// parameter is badly escaped, and it matches a percent-encoded name too:
// the token must go whatever the rest looks like. Other parts are kept
// byte for byte.
func cutQueryParam(raw, name string) (rest, value string, found bool) {
	if raw == "" {
		return raw, "", false
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, part := range parts {
		k, v, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if k != name {
			kept = append(kept, part)
			continue
		}
		if !found {
			if uv, err := url.QueryUnescape(v); err == nil {
				v = uv
			}
			value, found = v, true
		}
	}
	return strings.Join(kept, "&"), value, found
}

// subscriberToken finds a subscriber's token: the Authorization header,
// then the cookie, then the access_token query parameter.
func (s *server) subscriberToken(r *http.Request) string {
	if tok, ok := bearer(r); ok && tok != "" {
		return tok
	}
	if s.opts.AuthCookie != "" {
		if ck, err := r.Cookie(s.opts.AuthCookie); err == nil && ck.Value != "" {
			return ck.Value
		}
	}
	tok, _ := r.Context().Value(queryTokenKey{}).(string)
	return tok
}

// private reports whether subscribing to topic needs a token. The clock
// topic is public even when every other topic is private
// (PRIVATE_TOPICS=*), unless listed by name.
func (s *server) private(topic string) bool {
	if topic == stream.ClockTopic {
		return s.clockPrivate
	}
	return s.opts.PrivateTopics.Match(topic)
}

// authorizeSubscribe checks that the request may subscribe to every topic.
// It returns when the stream's access expires (zero: never, e.g. all its
// topics are public), or a 401/403 error and the sse_connections_total
// result for it.
func (s *server) authorizeSubscribe(r *http.Request, topics []string) (time.Time, stream.ConnResult, error) {
	var private []string
	for _, t := range topics {
		if s.private(t) {
			private = append(private, t)
		}
	}
	if len(private) == 0 {
		return time.Time{}, "", nil
	}
	tok := s.subscriberToken(r)
	if tok == "" {
		return time.Time{}, stream.ConnUnauthorized, unauthorizedError("a token is required for topic %q: send Authorization: Bearer, the %s cookie or ?%s=", private[0], s.opts.AuthCookie, accessTokenParam)
	}
	claims, err := s.opts.Verifier.Verify(tok)
	if err != nil {
		return time.Time{}, stream.ConnUnauthorized, invalidTokenError(err)
	}
	for _, t := range private {
		if !claims.CanSubscribe(t) {
			return time.Time{}, stream.ConnForbidden, newError(http.StatusForbidden, fmt.Sprintf("token does not allow subscribing to topic %q", t))
		}
	}
	if claims.ExpiresAt.IsZero() {
		return time.Time{}, "", nil
	}
	return claims.ExpiresAt.Add(s.opts.JWTLeeway), "", nil
}

// publisher authenticates a publish request. A static publish token may
// publish to any topic (nil claims); a JWT, when configured, to the topics
// of its publish claim (see mayPublish). Publishers send the token in the
// Authorization header only: accepting the cookie would let other sites
// publish through a visitor's browser.
func (s *server) publisher(r *http.Request) (*auth.Claims, error) {
	tok, ok := bearer(r)
	if !ok || tok == "" {
		return nil, errUnauthorized
	}
	if s.tokens.valid(tok) {
		return nil, nil
	}
	if s.opts.Verifier == nil || strings.Count(tok, ".") != 2 {
		return nil, errUnauthorized
	}
	claims, err := s.opts.Verifier.Verify(tok)
	if err != nil {
		return nil, invalidTokenError(err)
	}
	return claims, nil
}

// mayPublish checks the topics against a publisher's claims (nil: a static
// token, every topic).
func mayPublish(claims *auth.Claims, topics ...string) error {
	if claims == nil {
		return nil
	}
	for _, t := range topics {
		if !claims.CanPublish(t) {
			return newError(http.StatusForbidden, fmt.Sprintf("token does not allow publishing to topic %q", t))
		}
	}
	return nil
}

func unauthorizedError(format string, args ...any) *apiError {
	return &apiError{
		status: http.StatusUnauthorized,
		msg:    fmt.Sprintf(format, args...),
		header: [2]string{"WWW-Authenticate", `Bearer realm="sse-service"`},
	}
}

// invalidTokenError says why a token was refused, never what it was. The
// reason is the auth package's sentinel: its message names the kind of
// failure only.
func invalidTokenError(err error) *apiError {
	reason := "invalid token"
	for _, e := range []error{auth.ErrMalformed, auth.ErrExpired, auth.ErrNotYetValid, auth.ErrSignature,
		auth.ErrAlgorithm, auth.ErrIssuer, auth.ErrAudience, auth.ErrClaims, auth.ErrNoExpiry} {
		if errors.Is(err, e) {
			reason = e.Error()
			break
		}
	}
	return &apiError{
		status: http.StatusUnauthorized,
		msg:    reason,
		header: [2]string{"WWW-Authenticate", fmt.Sprintf(`Bearer realm="sse-service", error="invalid_token", error_description=%q`, reason)},
	}
}
