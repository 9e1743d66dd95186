package httpapi

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
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

func TestIPExtractor(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     string
		want    string
	}{
		{"no trusted proxies: the peer", nil, "192.0.2.1:1234", "", "192.0.2.1"},
		{"no trusted proxies: XFF ignored", nil, "192.0.2.1:1234", "203.0.113.7", "192.0.2.1"},
		{"no trusted proxies: XFF from a private peer ignored", nil, "10.1.2.3:1234", "203.0.113.7", "10.1.2.3"},
		{"no trusted proxies: XFF from loopback ignored", nil, "127.0.0.1:1234", "203.0.113.7", "127.0.0.1"},
		{"trusted proxy: XFF believed", trusted, "10.1.2.3:1234", "203.0.113.7", "203.0.113.7"},
		{"trusted proxy, no XFF: the peer", trusted, "10.1.2.3:1234", "", "10.1.2.3"},
		{"trusted chain: the nearest untrusted address", trusted, "10.1.2.3:1234", "198.51.100.9, 203.0.113.7, 10.9.9.9", "203.0.113.7"},
		{"client-forged XFF entry is not believed", trusted, "10.1.2.3:1234", "1.1.1.1, 203.0.113.7", "203.0.113.7"},
		{"trusted IPv6 proxy", trusted, "[2001:db8:1::5]:1234", "2001:db8:9::1", "2001:db8:9::1"},
		{"untrusted peer with XFF: the peer", trusted, "192.0.2.1:1234", "203.0.113.7", "192.0.2.1"},
		{"loopback is not trusted unless listed", trusted, "127.0.0.1:1234", "203.0.113.7", "127.0.0.1"},
		{"private ranges are not trusted unless listed", trusted, "192.168.1.1:1234", "203.0.113.7", "192.168.1.1"},
		{"link-local is not trusted unless listed", trusted, "169.254.1.1:1234", "203.0.113.7", "169.254.1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/events?topic=a", nil)
			r.RemoteAddr = tt.peer
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			if got := ipExtractor(tt.trusted)(r); got != tt.want {
				t.Fatalf("client IP of peer %s with X-Forwarded-For %q = %q, want %q", tt.peer, tt.xff, got, tt.want)
			}
		})
	}
}
