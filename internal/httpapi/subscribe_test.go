package httpapi

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/sse-service/sse-service/internal/stream"
)

func TestParseSubscription(t *testing.T) {
	const maxTopics = 3
	tests := []struct {
		name       string
		target     string
		lastID     string // Last-Event-ID header; "" means none
		wantTopics []string
		wantLastID string
	}{
		{"one topic", "/v1/events?topic=news", "", []string{"news"}, ""},
		{"every allowed character", "/v1/events?topic=A-z0.9_~:/@", "", []string{"A-z0.9_~:/@"}, ""},
		{"repeated topics count once", "/v1/events?topic=b&topic=a&topic=b&topic=a&topic=c", "", []string{"a", "b", "c"}, ""},
		{"query resume id", "/v1/events?topic=a&lastEventId=x-3", "", []string{"a"}, "x-3"},
		{"header resume id", "/v1/events?topic=a", "x-4", []string{"a"}, "x-4"},
		{"header wins over query", "/v1/events?topic=a&lastEventId=x-3", "x-4", []string{"a"}, "x-4"},
		{"empty query id means no resume", "/v1/events?topic=a&lastEventId=", "", []string{"a"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			if tt.lastID != "" {
				r.Header.Set("Last-Event-ID", tt.lastID)
			}
			sub, err := parseSubscription(r, maxTopics)
			if err != nil {
				t.Fatalf("parseSubscription(%s): %v", tt.target, err)
			}
			if !slices.Equal(sub.Topics, tt.wantTopics) {
				t.Fatalf("topics = %q, want %q", sub.Topics, tt.wantTopics)
			}
			if got := sub.LastEventID; got != tt.wantLastID {
				t.Fatalf("LastEventID = %q, want %q", got, tt.wantLastID)
			}
		})
	}
}

func TestParseSubscriptionRejects(t *testing.T) {
	const maxTopics = 3
	tests := []struct {
		name    string
		target  string
		wantMsg string
	}{
		{"no topic", "/v1/events", "missing topic"},
		{"other parameter only", "/v1/events?topics=a", "missing topic"},
		{"too many topics", "/v1/events?topic=a&topic=b&topic=c&topic=d", "at most 3"},
		{"empty topic", "/v1/events?topic=", "topic"},
		{"invalid character", "/v1/events?topic=a%20b", `"a b"`},
		{"one invalid among valid", "/v1/events?topic=a&topic=b%0Ac", "topic"},
		{"too long", "/v1/events?topic=" + strings.Repeat("x", stream.MaxTopicLen+1), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			_, err := parseSubscription(r, maxTopics)
			if err == nil {
				t.Fatalf("parseSubscription(%s) succeeded, want an error", tt.target)
			}
			ae := toAPIError(err, 0)
			if got, want := ae.status, http.StatusBadRequest; got != want {
				t.Fatalf("status = %d, want %d (err %v)", got, want, err)
			}
			if !strings.Contains(ae.msg, tt.wantMsg) {
				t.Fatalf("message %q does not mention %q", ae.msg, tt.wantMsg)
			}
		})
	}
}

func TestParseSubscriptionAtTheTopicLimit(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/v1/events?topic=a&topic=b&topic=c&topic=a", nil)
	sub, err := parseSubscription(r, 3)
	if err != nil {
		t.Fatalf("3 distinct topics with a limit of 3: %v", err)
	}
	if got, want := len(sub.Topics), 3; got != want {
		t.Fatalf("%d topics, want %d", got, want)
	}
}
