package httpapi

// Publish tokens: the configured set, checked in constant time, and the
// bearer token of a request.

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// tokenSet checks bearer tokens in constant time. Tokens are kept as
// SHA-256 digests so every comparison has the same length, and every
// configured token is compared so timing does not tell which one matched.
type tokenSet struct {
	digests [][sha256.Size]byte
}

func newTokenSet(tokens []string) *tokenSet {
	ts := &tokenSet{}
	for _, t := range tokens {
		ts.digests = append(ts.digests, sha256.Sum256([]byte(t)))
	}
	return ts
}

func (ts *tokenSet) valid(token string) bool {
	d := sha256.Sum256([]byte(token))
	ok := 0
	for i := range ts.digests {
		ok |= subtle.ConstantTimeCompare(d[:], ts.digests[i][:])
	}
	return ok == 1 && token != ""
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

var errUnauthorized = &apiError{
	status: http.StatusUnauthorized,
	msg:    "missing or invalid bearer token",
	header: [2]string{"WWW-Authenticate", `Bearer realm="sse-service"`},
}
