package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/sse-service/sse-service/internal/stream"
)

// MaxPatternLen is the longest pattern ParsePattern accepts, in bytes: the
// longest topic name, so a pattern is never longer than what it names.
const MaxPatternLen = stream.MaxTopicLen

// ErrPattern marks a pattern that ParsePattern refuses.
var ErrPattern = errors.New("invalid topic pattern")

// Pattern is a topic pattern: `*` matches any run of characters (including
// none), every other character matches itself. The zero Pattern matches
// nothing; build one with ParsePattern.
type Pattern struct {
	s string
}

// ParsePattern checks s and returns it as a Pattern. s must be 1 to
// MaxPatternLen bytes of the topic alphabet (stream.TopicByte) and `*`.
func ParsePattern(s string) (Pattern, error) {
	switch {
	case s == "":
		return Pattern{}, fmt.Errorf("%w: empty", ErrPattern)
	case len(s) > MaxPatternLen:
		return Pattern{}, fmt.Errorf("%w %q...: longer than %d bytes", ErrPattern, s[:32], MaxPatternLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '*' && !stream.TopicByte(c) {
			r, _ := utf8.DecodeRuneInString(s[i:])
			return Pattern{}, fmt.Errorf("%w %q: character %q not allowed (allowed: %s and *)", ErrPattern, s, r, stream.TopicAlphabet)
		}
	}
	return Pattern{s: s}, nil
}

// String returns the pattern as it was parsed.
func (p Pattern) String() string { return p.s }

// Match reports whether topic matches p as a whole.
//
// It is the greedy wildcard algorithm: on a mismatch it only ever goes back
// to the last `*` seen, so it runs in O(len(p)·len(topic)) at worst and never
// backtracks exponentially, whatever the pattern.
func (p Pattern) Match(topic string) bool {
	pat := p.s
	if pat == "" {
		return false
	}
	pi, ti := 0, 0
	star, resume := -1, 0 // index of the last `*` in pat, and where in topic its run ends
	for ti < len(topic) {
		switch {
		case pi < len(pat) && pat[pi] == '*':
			star, resume = pi, ti
			pi++
		case pi < len(pat) && pat[pi] == topic[ti]:
			pi++
			ti++
		case star >= 0:
			// Let the last `*` swallow one more character and retry from there.
			resume++
			pi, ti = star+1, resume
		default:
			return false
		}
	}
	for pi < len(pat) && pat[pi] == '*' {
		pi++
	}
	return pi == len(pat)
}

// Patterns is a list of patterns; a topic matches when any of them does. A
// nil or empty list matches nothing.
type Patterns []Pattern

// ParsePatterns parses every entry of list with ParsePattern. The error names
// the first bad entry by position and value. An empty list gives nil.
func ParsePatterns(list []string) (Patterns, error) {
	if len(list) == 0 {
		return nil, nil
	}
	ps := make(Patterns, 0, len(list))
	for i, s := range list {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("pattern %d: %w", i+1, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// Match reports whether any pattern of ps matches topic.
func (ps Patterns) Match(topic string) bool {
	for _, p := range ps {
		if p.Match(topic) {
			return true
		}
	}
	return false
}

// String returns the patterns comma-separated, as SSE_PRIVATE_TOPICS takes them.
func (ps Patterns) String() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.s
	}
	return strings.Join(s, ",")
}
