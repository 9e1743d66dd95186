package httpapi

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestIPExtractor(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     []string // one X-Forwarded-For header line each
		want    string
	}{
		{"no trusted proxies: the peer", nil, "192.0.2.1:1234", nil, "192.0.2.1"},
		{"no trusted proxies: XFF ignored", nil, "192.0.2.1:1234", []string{"203.0.113.7"}, "192.0.2.1"},
		{"no trusted proxies: XFF from a private peer ignored", nil, "10.1.2.3:1234", []string{"203.0.113.7"}, "10.1.2.3"},
		{"no trusted proxies: XFF from loopback ignored", nil, "127.0.0.1:1234", []string{"203.0.113.7"}, "127.0.0.1"},
		{"trusted proxy: XFF believed", trusted, "10.1.2.3:1234", []string{"203.0.113.7"}, "203.0.113.7"},
		{"trusted proxy, no XFF: the peer", trusted, "10.1.2.3:1234", nil, "10.1.2.3"},
		{"trusted chain: the nearest untrusted address", trusted, "10.1.2.3:1234", []string{"198.51.100.9, 203.0.113.7, 10.9.9.9"}, "203.0.113.7"},
		{"client-forged XFF entry is not believed", trusted, "10.1.2.3:1234", []string{"1.1.1.1, 203.0.113.7"}, "203.0.113.7"},
		{"client forging a trusted address left of itself", trusted, "10.1.2.3:1234", []string{"10.0.0.1, 203.0.113.7"}, "203.0.113.7"},
		{"forged garbage left of the client is never read", trusted, "10.1.2.3:1234", []string{"not-an-ip, 203.0.113.7"}, "203.0.113.7"},
		{"several header lines are one list, in order", trusted, "10.1.2.3:1234", []string{"1.1.1.1, 198.51.100.9", "203.0.113.7", "10.9.9.9"}, "203.0.113.7"},
		{"forged entry in an earlier header line", trusted, "10.1.2.3:1234", []string{"1.1.1.1", "203.0.113.7"}, "203.0.113.7"},
		{"empty list elements are skipped", trusted, "10.1.2.3:1234", []string{"1.1.1.1,, 203.0.113.7 ,,10.9.9.9,"}, "203.0.113.7"},
		{"entry with a port", trusted, "10.1.2.3:1234", []string{"203.0.113.7:51234"}, "203.0.113.7"},
		{"bracketed IPv6 entry with a port", trusted, "10.1.2.3:1234", []string{"[2001:db8:9::1]:443"}, "2001:db8:9::1"},
		{"bracketed IPv6 entry", trusted, "10.1.2.3:1234", []string{"[2001:db8:9::1]"}, "2001:db8:9::1"},
		{"IPv4-mapped entry", trusted, "10.1.2.3:1234", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"unparseable entry next to the proxy: the peer", trusted, "10.1.2.3:1234", []string{"203.0.113.7, unknown"}, "10.1.2.3"},
		{"every address trusted: the left-most", trusted, "10.1.2.3:1234", []string{"10.7.7.7, 10.8.8.8"}, "10.7.7.7"},
		{"trusted IPv6 proxy", trusted, "[2001:db8:1::5]:1234", []string{"2001:db8:9::1"}, "2001:db8:9::1"},
		{"IPv4-mapped peer of a dual-stack listener is trusted", trusted, "[::ffff:10.1.2.3]:1234", []string{"203.0.113.7"}, "203.0.113.7"},
		{"untrusted peer with XFF: the peer", trusted, "192.0.2.1:1234", []string{"203.0.113.7"}, "192.0.2.1"},
		{"loopback is not trusted unless listed", trusted, "127.0.0.1:1234", []string{"203.0.113.7"}, "127.0.0.1"},
		{"private ranges are not trusted unless listed", trusted, "192.168.1.1:1234", []string{"203.0.113.7"}, "192.168.1.1"},
		{"link-local is not trusted unless listed", trusted, "169.254.1.1:1234", []string{"203.0.113.7"}, "169.254.1.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/v1/events?topic=a", nil)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ipExtractor(tt.trusted)(r); got != tt.want {
				t.Fatalf("client IP of peer %s with X-Forwarded-For %q = %q, want %q", tt.peer, tt.xff, got, tt.want)
			}
		})
	}
}

func TestLimitKeyCountsIPv6ByItsSlash64(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2:ffff::1", "2001:db8:1:2::"},
		{"fe80::1%eth0", "fe80::"},
	}
	for _, tt := range tests {
		if got := limitKey(netip.MustParseAddr(tt.addr)).String(); got != tt.want {
			t.Errorf("limitKey(%s) = %s, want %s", tt.addr, got, tt.want)
		}
	}
	a, b := limitKey(netip.MustParseAddr("2001:db8:1:2::1")), limitKey(netip.MustParseAddr("2001:db8:1:3::1"))
	if a == b {
		t.Errorf("two /64s share the key %s", a)
	}
}
