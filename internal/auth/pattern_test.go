package auth

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		topic   string
		want    bool
	}{
		{"*", "anything", true},
		{"*", "a", true},
		{"*", "", true},
		{"user:*", "user:42", true},
		{"user:*", "user:", true},
		{"user:*", "user", false},
		{"user:*", "admin:user:42", false},
		{"*:orders", "shop:orders", true},
		{"*:orders", ":orders", true},
		{"*:orders", "shop:orders:old", false},
		{"*:orders", "orders", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "abcbc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "abcd", false},
		{"a*b*c", "xabc", false},
		{"**", "x", true},
		{"a**b", "ab", true},
		{"news.sport", "news.sport", true},
		{"news.sport", "newsXsport", false}, // `.` is literal, not "any character"
		{"news.sport", "news.sports", false},
		{"a/b/c", "a/b/c", true},
		{"a/*/c", "a/b/x/c", true}, // `*` spans `/` too: a pattern is not a path glob
		{"a/*/c", "a/b/d", false},
		{"user@example.com", "user@example.com", true},
		{"v1~x_y-z", "v1~x_y-z", true},
		{"clock", "clock", true},
		{"clock", "Clock", false}, // case-sensitive
		{"*clock*", "my-clock-topic", true},
		{"*a*a*a*a*b", "aaaaaaaab", true},
		{"*a*a*a*a*b", "aaaaaaaaa", false},
	}
	for _, tt := range tests {
		p, err := ParsePattern(tt.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tt.pattern, err)
		}
		if got := p.Match(tt.topic); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.topic, got, tt.want)
		}
		if got := p.String(); got != tt.pattern {
			t.Errorf("String() = %q, want %q", got, tt.pattern)
		}
	}
}

func TestZeroPatternMatchesNothing(t *testing.T) {
	var p Pattern
	for _, topic := range []string{"", "a"} {
		if p.Match(topic) {
			t.Errorf("zero Pattern matches %q", topic)
		}
	}
	var ps Patterns
	if ps.Match("a") {
		t.Error("nil Patterns matches")
	}
}

func TestPathologicalPatternStaysFast(t *testing.T) {
	// A backtracking matcher takes exponential time on these; the greedy
	// one is linear in the topic for each `*`.
	topic := strings.Repeat("a", 100_000)
	for _, pattern := range []string{
		"*a*a*a*a*b",
		strings.Repeat("*a", 40) + "*b",
		strings.Repeat("a*", 40) + "b",
	} {
		p, err := ParsePattern(pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", pattern, err)
		}
		start := time.Now()
		if p.Match(topic) {
			t.Errorf("%q matches %d a's", pattern, len(topic))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%q took %s", pattern, d)
		}
	}
}

func TestParsePatternRefusesBadInput(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		want    string // in the error message
	}{
		{"empty", "", "empty"},
		{"space", "user 42", `' '`},
		{"comma", "a,b", `','`},
		{"question mark", "a?", `'?'`},
		{"newline", "a\nb", `'\n'`},
		{"non-ASCII", "café", `'é'`},
		{"too long", strings.Repeat("a", MaxPatternLen+1), "longer than 200 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePattern(tt.pattern)
			if !errors.Is(err, ErrPattern) {
				t.Fatalf("err = %v, want ErrPattern", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := ParsePattern(strings.Repeat("a", MaxPatternLen)); err != nil {
		t.Errorf("pattern of %d bytes: %v", MaxPatternLen, err)
	}
}

func TestParsePatternsNamesBadEntry(t *testing.T) {
	_, err := ParsePatterns([]string{"user:*", "clock", "bad topic"})
	if !errors.Is(err, ErrPattern) {
		t.Fatalf("err = %v, want ErrPattern", err)
	}
	for _, want := range []string{"pattern 3", `"bad topic"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %q, want it to contain %q", err, want)
		}
	}

	ps, err := ParsePatterns([]string{"user:*", "clock"})
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]bool{"user:1": true, "clock": true, "clocks": false, "admin": false} {
		if got := ps.Match(topic); got != want {
			t.Errorf("Match(%q) = %v, want %v", topic, got, want)
		}
	}
	if got, want := ps.String(), "user:*,clock"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if ps, err := ParsePatterns(nil); err != nil || ps != nil {
		t.Errorf("ParsePatterns(nil) = %v, %v; want nil, nil", ps, err)
	}
}

// FuzzPatternMatch checks Match against regexp as an oracle: `*` is `.*`,
// every other byte is literal.
func FuzzPatternMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"*", ""}, {"user:*", "user:1"}, {"a*b*c", "aabbcc"}, {"*a*a*b", "aaab"},
		{"a.b", "aXb"}, {"**x", "x"}, {"x*", "y"}, {"*:orders", "a:orders"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		re := regexp.MustCompile(`^(?s:` + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, `.*`) + `)$`)
		if got, want := p.Match(topic), re.MatchString(topic); got != want {
			t.Fatalf("%q.Match(%q) = %v, regexp says %v", pattern, topic, got, want)
		}
	})
}
