package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestTokenSetValid(t *testing.T) {
	const tok1, tok2 = "s3cret-token-0001", "another-token-0002"
	tests := []struct {
		name   string
		tokens []string
		token  string
		want   bool
	}{
		{"first of several", []string{tok1, tok2}, tok1, true},
		{"second of several", []string{tok1, tok2}, tok2, true},
		{"only one", []string{tok1}, tok1, true},
		{"unknown", []string{tok1, tok2}, "some-other-token-1", false},
		{"prefix", []string{tok1}, tok1[:len(tok1)-1], false},
		{"longer", []string{tok1}, tok1 + "x", false},
		{"other case", []string{tok1}, "S3CRET-TOKEN-0001", false},
		{"with spaces", []string{tok1}, " " + tok1, false},
		{"empty", []string{tok1}, "", false},
		{"empty even when configured", []string{"", tok1}, "", false},
		{"no tokens configured", nil, tok1, false},
		{"no tokens configured, empty token", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newTokenSet(tt.tokens).valid(tt.token); got != tt.want {
				t.Fatalf("valid(%q) with %q = %v, want %v", tt.token, tt.tokens, got, tt.want)
			}
		})
	}
}

func TestBearer(t *testing.T) {
	tests := []struct {
		name   string
		header []string // Authorization values; nil means none
		want   string
		wantOK bool
	}{
		{"bearer", []string{"Bearer abc"}, "abc", true},
		{"lower case scheme", []string{"bearer abc"}, "abc", true},
		{"upper case scheme", []string{"BEARER abc"}, "abc", true},
		{"spaces around the token", []string{"Bearer   abc  "}, "abc", true},
		{"missing", nil, "", false},
		{"empty", []string{""}, "", false},
		{"scheme only", []string{"Bearer"}, "", false},
		{"scheme and space only", []string{"Bearer "}, "", false},
		{"no space", []string{"Bearerabc"}, "", false},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", false},
		{"token without scheme", []string{"abc"}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/events", nil)
			for _, v := range tt.header {
				r.Header.Add("Authorization", v)
			}
			got, ok := bearer(r)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("bearer(%q) = %q, %v; want %q, %v", tt.header, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// publisher accepts a configured publish token (case-insensitive "Bearer")
// and answers anything else with 401 and a WWW-Authenticate challenge.
func TestPublisherAcceptsOnlyAConfiguredToken(t *testing.T) {
	const tok = "s3cret-token-0001"
	s := &server{tokens: newTokenSet([]string{tok})}
	tests := []struct {
		header string
		ok     bool
	}{
		{"Bearer " + tok, true},
		{"bearer " + tok, true},
		{"Bearer wrong-token-00001", false},
		{"Basic " + tok, false},
		{"", false},
		{"Bearer  ", false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/events", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			claims, err := s.publisher(r)
			if tt.ok {
				if err != nil || claims != nil {
					t.Fatalf("publisher: %v %v, want a static token (nil claims, nil error)", claims, err)
				}
				return
			}
			ae := toAPIError(err, 0)
			if got, want := ae.status, http.StatusUnauthorized; got != want {
				t.Fatalf("status = %d, want %d (err %v)", got, want, err)
			}
			if got, want := ae.header, [2]string{"WWW-Authenticate", `Bearer realm="sse-service"`}; got != want {
				t.Fatalf("extra header = %q, want %q", got, want)
			}
		})
	}
}
