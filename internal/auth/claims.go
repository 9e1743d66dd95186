package auth

import (
	"encoding/json"
	"time"
)

// Claims is what a verified token says about its bearer.
type Claims struct {
	// Subject is the token's sub; empty when absent.
	Subject string
	// ExpiresAt is the token's exp; zero when the token has none (it then
	// never expires).
	ExpiresAt time.Time
	// Subscribe and Publish are the patterns of the claim
	// "sse": {"subscribe": [...], "publish": [...]}; nil when absent.
	Subscribe Patterns
	Publish   Patterns
}

// CanSubscribe reports whether the token allows subscribing to topic. A nil
// *Claims allows nothing.
func (c *Claims) CanSubscribe(topic string) bool {
	return c != nil && c.Subscribe.Match(topic)
}

// CanPublish reports whether the token allows publishing to topic. A nil
// *Claims allows nothing.
func (c *Claims) CanPublish(topic string) bool {
	return c != nil && c.Publish.Match(topic)
}

// sseClaim is the shape of the `sse` claim. A missing or null claim, or a
// missing list, grants nothing; unknown members are ignored so that issuers
// can add some later.
type sseClaim struct {
	Subscribe []string `json:"subscribe"`
	Publish   []string `json:"publish"`
}

// newClaims builds the Claims of a verified token.
func newClaims(tc *tokenClaims) (*Claims, error) {
	c := &Claims{Subject: tc.Subject}
	if tc.ExpiresAt != nil {
		c.ExpiresAt = tc.ExpiresAt.Time
	}
	if len(tc.SSE) == 0 {
		return c, nil
	}
	var sc sseClaim
	if err := json.Unmarshal(tc.SSE, &sc); err != nil {
		return nil, fail(ErrClaims, "sse: want {\"subscribe\": [strings], \"publish\": [strings]}: %v", err)
	}
	var err error
	if c.Subscribe, err = ParsePatterns(sc.Subscribe); err != nil {
		return nil, fail(ErrClaims, "sse.subscribe: %v", err)
	}
	if c.Publish, err = ParsePatterns(sc.Publish); err != nil {
		return nil, fail(ErrClaims, "sse.publish: %v", err)
	}
	return c, nil
}
