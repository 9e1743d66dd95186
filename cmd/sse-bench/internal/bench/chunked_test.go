package bench

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// chunk frames s as one HTTP/1.1 chunk.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

func TestChunkDecoder(t *testing.T) {
	body := preamble + ": heartbeat\n\n" + ev(1, 0, 64) + ev(2, 0, 300) + ev(3, 1, 64)
	// The same body framed in different ways.
	var perEvent, oneChunk strings.Builder
	perEvent.WriteString(chunk(preamble) + chunk(": heartbeat\n\n"))
	for _, e := range []string{ev(1, 0, 64), ev(2, 0, 300), ev(3, 1, 64)} {
		perEvent.WriteString(chunk(e))
	}
	oneChunk.WriteString(chunk(body))
	want := parseChunks(body).Stats

	tests := []struct {
		name    string
		raw     string
		chunked bool
		wantErr error
	}{
		{"identity", body, false, nil},
		{"chunk per event", perEvent.String(), true, nil},
		{"one chunk", oneChunk.String(), true, nil},
		{"upper-case size and extension", strings.Replace(oneChunk.String(), "\r\n", ";ext=1\r\n", 1), true, nil},
		{"byte-sized chunks", byteChunks(body), true, nil},
		{"last chunk ends the stream", perEvent.String() + "0\r\n\r\n", true, errStreamEnded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range len(tt.raw) + 1 {
				d := chunkDecoder{chunked: tt.chunked}
				p := NewParser(NewLatencySink())
				err1 := d.feed([]byte(tt.raw[:i]), p, testNow)
				err2 := d.feed([]byte(tt.raw[i:]), p, testNow)
				err := err1
				if err == nil {
					err = err2
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("split at %d: err %v, want %v", i, err, tt.wantErr)
				}
				if p.Stats != want {
					t.Fatalf("split at %d: %+v, want %+v", i, p.Stats, want)
				}
			}
		})
	}
}

// byteChunks frames every byte of s as its own chunk.
func byteChunks(s string) string {
	var b strings.Builder
	for i := range len(s) {
		b.WriteString(chunk(s[i : i+1]))
	}
	return b.String()
}

func TestChunkDecoderRejectsBadFraming(t *testing.T) {
	for _, raw := range []string{
		"x\r\nabc\r\n",     // not hex
		"\r\nabc\r\n",      // no size
		"3\rXabc\r\n",      // CR not followed by LF
		"3\r\nabcd\r\n",    // data longer than size
		"3\r\nabc\rX",      // CR after data not followed by LF
		"ffffffffffff\r\n", // too large
	} {
		d := chunkDecoder{chunked: true}
		if err := d.feed([]byte(raw), NewParser(nil), testNow); err == nil || errors.Is(err, errStreamEnded) {
			t.Errorf("feed(%q) = %v, want a framing error", raw, err)
		}
	}
}
