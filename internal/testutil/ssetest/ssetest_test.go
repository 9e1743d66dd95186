package ssetest

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParserFollowsTheStandard(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []Event
		lastID string
	}{
		{"two events", "id: 1\ndata: a\n\nid: 2\nevent: t\ndata: b\n\n",
			[]Event{{"message", "a", "1", "1"}, {"t", "b", "2", "2"}}, "2"},
		{"data lines joined with LF, CR and CRLF end lines", "data: a\rdata: b\r\ndata: c\n\n",
			[]Event{{"message", "a\nb\nc", "", ""}}, ""},
		{"comments, retry and a blank line dispatch nothing", ": hi\nretry: 10\n\n: beat\n\n", nil, ""},
		{"an id without data sets the id, dispatches nothing", "id: 7\n\ndata: x\n\n",
			[]Event{{"message", "x", "7", ""}}, "7"},
		{"no space after the colon, empty data", "data:x\n\ndata\n\n",
			[]Event{{"message", "x", "", ""}, {"message", "", "", ""}}, ""},
		{"an id with NUL is ignored", "id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n",
			[]Event{{"message", "a", "1", "1"}, {"message", "b", "1", ""}}, "1"},
		{"an event left without its blank line is not dispatched", "data: a\n\ndata: b\n", []Event{{"message", "a", "", ""}}, ""},
		{"a byte order mark is skipped", "\xEF\xBB\xBFdata: a\n\n", []Event{{"message", "a", "", ""}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Byte by byte and at once: chunking must not matter.
			for _, chunk := range []int{1, len(tt.stream)} {
				var p Parser
				var got []Event
				for s := tt.stream; s != ""; {
					n := min(chunk, len(s))
					p.Feed([]byte(s[:n]), func(ev Event) { got = append(got, ev) })
					s = s[n:]
				}
				if !reflect.DeepEqual(got, tt.want) || p.LastEventID != tt.lastID {
					t.Fatalf("chunks of %d: events %+v, last id %q; want %+v, %q", chunk, got, p.LastEventID, tt.want, tt.lastID)
				}
			}
		})
	}
	var p Parser
	p.Feed([]byte("retry: 1500\nretry: 2s\n"), func(Event) {})
	if p.Retry != 1500*time.Millisecond {
		t.Fatalf("retry = %s, want 1.5s (a value that is not digits is ignored)", p.Retry)
	}
}

// The EventSource reconnects after the server's retry with Last-Event-ID,
// and stops for good on a status other than 200.
func TestEventSourceReconnectsAndGivesUpLikeABrowser(t *testing.T) {
	var mu sync.Mutex
	var seen []string // Last-Event-ID of each request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Last-Event-ID"))
		n := len(seen)
		mu.Unlock()
		if n == 3 {
			http.Error(w, "gone", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("retry: 10\nid: " + strings.Repeat("x", n) + "\ndata: d\n\n"))
	}))
	defer srv.Close()
	var evs []Event
	var evMu sync.Mutex
	es := Open(srv.URL, "", Options{OnEvent: func(ev Event) { evMu.Lock(); evs = append(evs, ev); evMu.Unlock() }})
	defer es.Close()
	for deadline := time.Now().Add(10 * time.Second); es.Err() == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the EventSource did not give up on a 503")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"", "x", "xx"}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("Last-Event-ID of the requests = %q, want %q", seen, want)
	}
	if es.Opens() != 2 || len(evs) != 2 {
		t.Fatalf("opens %d, events %+v; want 2 and 2", es.Opens(), evs)
	}
}
