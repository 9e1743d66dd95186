package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// frame is one thing read off a stream: an event (with its fields), a
// comment (heartbeat or first frame), a retry, or the end of the stream.
type frame struct {
	comment bool
	retry   string
	id      string
	event   string
	data    string
	end     error // set on the last frame: the stream ended
}

// sseStream reads a text/event-stream response in the background.
type sseStream struct {
	resp   *http.Response
	frames chan frame
}

// openStream GETs url and returns the stream once the response head is in.
func openStream(t *testing.T, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{resp: resp, frames: make(chan frame, 1024)}
	done := make(chan struct{})
	go s.read(done)
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return s
}

func (s *sseStream) read(done chan<- struct{}) {
	defer close(done)
	defer close(s.frames)
	sc := bufio.NewScanner(s.resp.Body)
	var f frame
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if f.comment || f.retry != "" || data != nil {
				f.data = strings.Join(data, "\n")
				s.frames <- f
			}
			f, data = frame{}, nil
		case strings.HasPrefix(line, ":"):
			if f == (frame{}) && data == nil {
				// A comment alone (a heartbeat) has no blank line after
				// it: it is a frame of its own.
				s.frames <- frame{comment: true}
				continue
			}
			f.comment = true
		default:
			name, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch name {
			case "id":
				f.id = value
			case "event":
				f.event = value
			case "data":
				data = append(data, value)
			case "retry":
				f.retry = value
			}
		}
	}
	err := sc.Err()
	if err == nil {
		err = errStreamEnded
	}
	s.frames <- frame{end: err}
}

type streamEnded struct{}

func (streamEnded) Error() string { return "stream ended" }

var errStreamEnded error = streamEnded{}

// next returns the next frame, or fails after a generous guard timeout that
// only bounds a broken run.
func (s *sseStream) next(t *testing.T, what string) frame {
	t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			t.Fatalf("waiting for %s: stream already ended", what)
		}
		return f
	case <-time.After(30 * time.Second):
		t.Fatalf("no frame while waiting for %s", what)
	}
	return frame{}
}

// nextEvent skips comments and returns the next event.
func (s *sseStream) nextEvent(t *testing.T) frame {
	t.Helper()
	for {
		f := s.next(t, "an event")
		if f.end != nil {
			t.Fatalf("stream ended while waiting for an event: %v", f.end)
		}
		if !f.comment && f.retry == "" {
			return f
		}
	}
}
