package stream

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTopic(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		ok    bool
	}{
		{"single letter", "a", true},
		{"every allowed character", "AZaz09._~:/@-", true},
		{"path-like", "orders/eu-west/1@v2", true},
		{"200 characters", strings.Repeat("t", MaxTopicLen), true},
		{"empty", "", false},
		{"201 characters", strings.Repeat("t", MaxTopicLen+1), false},
		{"space", "a b", false},
		{"comma", "a,b", false},
		{"hash", "a#b", false},
		{"question mark", "a?b", false},
		{"percent", "a%20b", false},
		{"plus", "a+b", false},
		{"star", "*", false},
		{"NUL", "a\x00", false},
		{"newline", "a\n", false},
		{"non-ASCII letter", "caf\u00e9", false},
		{"invalid UTF-8", "a\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertValid(t, "ValidateTopic", tt.topic, ValidateTopic(tt.topic), tt.ok)
		})
	}
}

// TestTopicAlphabetSpellsOutTopicByte: error messages quote TopicAlphabet,
// so it must name exactly the bytes TopicByte accepts.
func TestTopicAlphabetSpellsOutTopicByte(t *testing.T) {
	var want [256]bool
	for _, tok := range strings.Fields(TopicAlphabet) {
		if len(tok) == 3 && tok[1] == '-' {
			for c := tok[0]; c <= tok[2]; c++ {
				want[c] = true
			}
			continue
		}
		want[tok[0]] = true
	}
	for c := range 256 {
		if got := TopicByte(byte(c)); got != want[c] {
			t.Errorf("TopicByte(%q) = %v, but TopicAlphabet %q says %v", rune(c), got, TopicAlphabet, want[c])
		}
	}
}

func TestValidateEventType(t *testing.T) {
	tests := []struct {
		name string
		typ  string
		ok   bool
	}{
		{"empty means message", "", true},
		{"message", "message", true},
		{"simple", "update", true},
		{"spaces and punctuation", " a b:c ", true},
		{"non-ASCII UTF-8", "\u00e9v\u00e9nement \U0001F600", true},
		{"BOM", "\uFEFF", true},
		{"sse without dash", "sse", true},
		{"sse- not at the start", "x-sse-gap", true},
		{"200 bytes", strings.Repeat("e", MaxEventTypeLen), true},
		{"200 bytes multi-byte", strings.Repeat("\u00e9", MaxEventTypeLen/2), true},
		{"201 bytes", strings.Repeat("e", MaxEventTypeLen+1), false},
		{"201 bytes multi-byte", "e" + strings.Repeat("\u00e9", MaxEventTypeLen/2), false},
		{"CR", "a\rb", false},
		{"LF", "a\nb", false},
		{"CRLF", "a\r\n", false},
		{"NUL", "a\x00b", false},
		{"invalid UTF-8 byte", "a\xffb", false},
		{"truncated UTF-8", "a\xe2\x82", false},
		{"UTF-8 surrogate", "\xed\xa0\x80", false},
		{"reserved prefix alone", "sse-", false},
		{"reserved gap type", TypeGap, false},
		{"reserved auth type", "sse-auth-expired", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertValid(t, "ValidateEventType", tt.typ, ValidateEventType(tt.typ), tt.ok)
		})
	}
}

// assertValid checks a validator's verdict; refusals must wrap ErrInvalid.
func assertValid(t *testing.T, fn, in string, err error, ok bool) {
	t.Helper()
	switch {
	case ok && err != nil:
		t.Fatalf("%s(%q) = %v, want nil", fn, in, err)
	case !ok && err == nil:
		t.Fatalf("%s(%q) = nil, want an error", fn, in)
	case !ok && !errors.Is(err, ErrInvalid):
		t.Fatalf("%s(%q) = %v, want an error wrapping ErrInvalid", fn, in, err)
	}
}
