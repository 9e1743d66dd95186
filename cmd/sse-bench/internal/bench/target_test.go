package bench

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseTargets(t *testing.T) {
	tests := []struct {
		in      string
		want    []string // dial addresses
		wantErr string
	}{
		{in: "http://127.0.0.1:8080", want: []string{"127.0.0.1:8080"}},
		{in: "http://127.0.0.1:8080/, http://127.9.9.9:8081", want: []string{"127.0.0.1:8080", "127.9.9.9:8081"}},
		{in: "http://[::1]:8080", want: []string{"[::1]:8080"}},
		{in: "http://127.0.0.1", want: []string{"127.0.0.1:80"}},
		{in: "http://localhost:9000", want: []string{"127.0.0.1:9000"}},
		{in: "http://10.0.0.1:8080", wantErr: "not a loopback"},
		{in: "http://0.0.0.0:8080", wantErr: "not a loopback"},
		{in: "http://[::]:8080", wantErr: "not a loopback"},
		{in: "http://example.com", wantErr: "not a loopback"},
		{in: "http://127.0.0.1:8080,http://192.168.1.1:8080", wantErr: "not a loopback"},
		{in: "https://127.0.0.1:8443", wantErr: "use http://"},
		{in: "http://127.0.0.1:0", wantErr: "bad port"},
		{in: "http://127.0.0.1:8080/?topic=x", wantErr: "no query"},
		{in: " , ", wantErr: "no url"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			targets, err := ParseTargets(ctx, tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range targets {
				got = append(got, tg.Addr.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("addresses %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTargetPathAndRequest(t *testing.T) {
	targets, err := ParseTargets(context.Background(), "http://127.0.0.1:8080/prefix/")
	if err != nil {
		t.Fatal(err)
	}
	tg := targets[0]
	if tg.Base != "http://127.0.0.1:8080/prefix" || tg.Path != "/prefix" || tg.Host != "127.0.0.1:8080" {
		t.Fatalf("target %+v", tg)
	}
	req := string(subscribeRequest(tg, "a b&c", ""))
	if !strings.HasPrefix(req, "GET /prefix/v1/events?topic=a+b%26c HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n") ||
		!strings.HasSuffix(req, "\r\n\r\n") || strings.Contains(req, "Authorization") {
		t.Fatalf("request %q", req)
	}
	if req := string(subscribeRequest(tg, "t", "tok.en.x")); !strings.Contains(req, "\r\nAuthorization: Bearer tok.en.x\r\n") {
		t.Fatalf("request with a token %q", req)
	}
}

func TestParseSources(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "127.0.0.1-127.0.0.3", want: []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}},
		{in: "127.0.0.255-127.0.1.1", want: []string{"127.0.0.255", "127.0.1.0", "127.0.1.1"}},
		{in: "127.0.0.5, ::1,127.0.0.7-127.0.0.7", want: []string{"127.0.0.5", "::1", "127.0.0.7"}},
		{in: "10.0.0.1", wantErr: "not a loopback"},
		{in: "127.0.0.1-10.0.0.1", wantErr: "not a loopback"},
		{in: "127.0.0.3-127.0.0.1", wantErr: "start after end"},
		{in: "127.0.0.0-127.255.255.255", wantErr: "more than"},
		{in: "::1-::1", wantErr: "IPv4 only"},
		{in: "nope", wantErr: "not an IP"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ips, err := ParseSources(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ip := range ips {
				got = append(got, ip.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSourceMatchesFamily(t *testing.T) {
	s := &streamSet{sources: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("127.0.0.2")}}
	v4 := Target{Addr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}}
	v6 := Target{Addr: &net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}}
	if got := s.source(3, v4); got == nil || !got.IP.Equal(net.ParseIP("127.0.0.2")) {
		t.Errorf("source(3, v4) = %v", got)
	}
	if got := s.source(3, v6); got != nil {
		t.Errorf("source(3, v6) = %v, want nil", got)
	}
}

func TestParsePIDs(t *testing.T) {
	if got, err := ParsePIDs("12, 34,"); err != nil || !slices.Equal(got, []int{12, 34}) {
		t.Errorf("ParsePIDs = %v, %v", got, err)
	}
	for _, bad := range []string{"x", "-1", "0", "1.5"} {
		if _, err := ParsePIDs(bad); err == nil {
			t.Errorf("ParsePIDs(%q) accepted", bad)
		}
	}
}
