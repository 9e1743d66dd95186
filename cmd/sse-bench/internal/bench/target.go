package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Target is one instance of the service.
type Target struct {
	// Base is the base URL as given, without a trailing slash.
	Base string
	// Host is the Host header value (host[:port] as given).
	Host string
	// Addr is the loopback ip:port the bench dials.
	Addr *net.TCPAddr
	// Path is the URL path prefix, without a trailing slash.
	Path string
}

// ParseTargets parses a comma-separated list of base URLs. It refuses any
// host that is not a loopback address or "localhost" (resolving only to
// loopback addresses): the bench only ever loads this machine.
func ParseTargets(ctx context.Context, list string) ([]Target, error) {
	var targets []Target
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		t, err := parseTarget(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("url %q: %w", raw, err)
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		return nil, errors.New("no url given")
	}
	return targets, nil
}

func parseTarget(ctx context.Context, raw string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Target{}, err
	}
	if u.Scheme != "http" {
		return Target{}, fmt.Errorf("scheme %q not supported: use http://", u.Scheme)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Target{}, errors.New("a base url takes no query, fragment or user info")
	}
	port := 80
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return Target{}, fmt.Errorf("bad port %q", p)
		}
	}
	ip, err := loopbackIP(ctx, u.Hostname())
	if err != nil {
		return Target{}, err
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	return Target{
		Base: strings.TrimSuffix(raw, "/"),
		Host: u.Host,
		Addr: &net.TCPAddr{IP: ip, Port: port},
		Path: path,
	}, nil
}

// loopbackIP returns the address to dial for host, refusing anything that is
// not loopback. For localhost it prefers IPv4, to match the default sources.
func loopbackIP(ctx context.Context, host string) (net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("host %s is not a loopback address: sse-bench only loads this machine", host)
		}
		return ip, nil
	}
	if !strings.EqualFold(host, "localhost") {
		return nil, fmt.Errorf("host %q is not a loopback address or localhost: sse-bench only loads this machine", host)
	}
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	var pick net.IP
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return nil, fmt.Errorf("%s resolves to %s, which is not loopback", host, a.IP)
		}
		if pick == nil || pick.To4() == nil && a.IP.To4() != nil {
			pick = a.IP
		}
	}
	if pick == nil {
		return nil, fmt.Errorf("%s resolves to nothing", host)
	}
	return pick, nil
}

// maxSources bounds the size of a source address range.
const maxSources = 1 << 16

// ParseSources parses a comma-separated list of loopback addresses and IPv4
// ranges such as "127.0.0.1-127.0.0.8". An empty list means "let the kernel
// choose".
func ParseSources(list string) ([]net.IP, error) {
	var ips []net.IP
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		first, err := parseLoopback(lo)
		if err != nil {
			return nil, err
		}
		if !isRange {
			ips = append(ips, first)
			continue
		}
		last, err := parseLoopback(hi)
		if err != nil {
			return nil, err
		}
		a, b := first.To4(), last.To4()
		if a == nil || b == nil {
			return nil, fmt.Errorf("source range %q: ranges are IPv4 only", item)
		}
		from, to := ipv4ToUint(a), ipv4ToUint(b)
		if from > to {
			return nil, fmt.Errorf("source range %q: start after end", item)
		}
		if to-from >= maxSources {
			return nil, fmt.Errorf("source range %q: more than %d addresses", item, maxSources)
		}
		for v := from; v <= to; v++ {
			ips = append(ips, uintToIPv4(v))
		}
	}
	return ips, nil
}

func parseLoopback(s string) (net.IP, error) {
	ip := net.ParseIP(strings.TrimSpace(s))
	if ip == nil {
		return nil, fmt.Errorf("source %q is not an IP address", s)
	}
	if !ip.IsLoopback() {
		return nil, fmt.Errorf("source %s is not a loopback address", ip)
	}
	return ip, nil
}

func ipv4ToUint(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

func uintToIPv4(v uint32) net.IP {
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// ParsePIDs parses a comma-separated list of process ids.
func ParsePIDs(list string) ([]int, error) {
	var pids []int
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		pid, err := strconv.Atoi(item)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("bad pid %q", item)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
