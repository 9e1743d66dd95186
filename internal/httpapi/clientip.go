package httpapi

import (
	"net/http"
	"net/netip"
	"strings"
)

// proxies are the peers whose X-Forwarded-For is believed (SSE_TRUSTED_PROXIES).
// Empty: nobody's, so the client is always the peer.
type proxies []netip.Prefix

func (p proxies) trusts(a netip.Addr) bool {
	for _, pre := range p {
		if pre.Contains(a) {
			return true
		}
	}
	return false
}

// client is the address limits count against. Each proxy appends the
// address it got the request from to X-Forwarded-For, so the header is
// read from the right: the peer, then each entry leftwards, while the
// address just read is a trusted proxy. The first address that is not one
// is the client; whatever a client wrote further left (a forged entry) is
// never read. An entry that does not parse ends the walk with the peer,
// as does a peer that is not trusted. When every address is trusted, the
// left-most one is the client. Empty list elements are skipped (RFC 9110,
// section 5.6.1); entries may carry a port ("192.0.2.1:443",
// "[2001:db8::1]:443", as some load balancers write them).
//
// Echo's ExtractIPFromXFFHeader walks the same way; this one adds the
// ports, the empty elements and IPv4-mapped IPv6 peers (a dual-stack
// listener's view of an IPv4 proxy).
func (p proxies) client(r *http.Request) netip.Addr {
	peer := peerAddr(r.RemoteAddr)
	if !peer.IsValid() || !p.trusts(peer) {
		return peer
	}
	values := r.Header.Values("X-Forwarded-For")
	addr := peer
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			e := strings.TrimSpace(entries[j])
			if e == "" {
				continue
			}
			a, ok := parseForwarded(e)
			if !ok {
				return peer
			}
			if !p.trusts(a) {
				return a
			}
			addr = a
		}
	}
	return addr
}

// peerAddr parses a request's RemoteAddr ("ip:port").
func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		a, err := netip.ParseAddr(remote)
		if err != nil {
			return netip.Addr{}
		}
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// parseForwarded parses one X-Forwarded-For entry: an address, bracketed
// or not, with or without a port.
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if t, ok := strings.CutPrefix(s, "["); ok {
		if t, ok := strings.CutSuffix(t, "]"); ok {
			if a, err := netip.ParseAddr(t); err == nil {
				return a.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// limitKey is what per-address limits count: the address itself, or for
// IPv6 its /64. One IPv6 host usually holds a whole /64 (a phone, a home
// network, a cloud VM) and can pick any address in it, so counting single
// IPv6 addresses would let one host take every slot.
func limitKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, err := a.WithZone("").Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return a
}
