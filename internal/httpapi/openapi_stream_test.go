package httpapi

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/sse-service/sse-service/internal/testutil/ssetest"
)

// openStream validates a subscribe request, opens it and checks the head of
// the 200 answer against the document. ValidateResponse is not used here:
// with a schema on the media type it reads the whole, endless body.
func (c *oaConformance) openStream(path string, header map[string]string) *ssetest.Stream {
	c.t.Helper()
	h := http.Header{"Accept": {"text/event-stream"}}
	for k, v := range header {
		h.Set(k, v)
	}
	in := c.validateRequest(oaExchange{name: "subscribe " + path, method: http.MethodGet, path: path, header: oaWithHeader(header, "Accept", "text/event-stream"), status: http.StatusOK})
	sc := ssetest.Dial(c.t, c.ts.addr, path, h)
	if sc.Response.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s = %d, want 200", path, sc.Response.StatusCode)
	}
	ok := in.Route.Operation.Responses.Status(http.StatusOK)
	if ok == nil {
		c.t.Fatal("the document has no 200 answer for subscribe")
	}
	ct, _, err := mime.ParseMediaType(sc.Response.Header.Get("Content-Type"))
	if err != nil || ct != "text/event-stream" {
		c.t.Errorf("Content-Type = %q, want text/event-stream", sc.Response.Header.Get("Content-Type"))
	}
	if ok.Value.Content.Get(ct) == nil {
		c.t.Errorf("the document's 200 answer has no %s content", ct)
	}
	for name, hdr := range ok.Value.Headers {
		v := sc.Response.Header.Get(name)
		if v == "" {
			if hdr.Value.Required {
				c.t.Errorf("stream answer lacks the documented header %s", name)
			}
			continue
		}
		if err := hdr.Value.Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
			c.t.Errorf("stream header %s: %q does not match the document: %v", name, v, err)
		}
	}
	return sc
}

// oaFrame is one frame of the stream as written: its lines, without the
// blank line. The document describes the wire form, so frames are read raw
// and their events parsed by ssetest's parser (see event).
type oaFrame []string

// readFrame reads the next frame off sc.
func (c *oaConformance) readFrame(sc *ssetest.Stream) oaFrame {
	c.t.Helper()
	for {
		f, err := sc.ReadFrame()
		if err != nil {
			c.t.Fatalf("read frame %q: %v", f, err)
		}
		if f != "\n" {
			return strings.Split(strings.TrimSuffix(f, "\n\n"), "\n")
		}
	}
}

// event is the event f dispatches, parsed as an EventSource parses it; ok is
// false when it dispatches none (comment lines alone: a heartbeat).
func (f oaFrame) event() (ev ssetest.Event, ok bool) {
	var p ssetest.Parser
	p.Feed([]byte(strings.Join(f, "\n")+"\n\n"), func(e ssetest.Event) { ev, ok = e, true })
	return ev, ok
}

// field splits a line into its field name and value as EventSource does
// ("" for a comment line).
func oaField(line string) (name, value string) {
	name, value, _ = strings.Cut(line, ":")
	return name, strings.TrimPrefix(value, " ")
}

// checkFirstFrame checks the frame that opens every stream: a retry field
// and a comment, then the sse-position event (or, for a stream with no
// position to give, the first event).
func (c *oaConformance) checkFirstFrame(sc *ssetest.Stream) {
	c.t.Helper()
	f := c.readFrame(sc)
	var retry, comment bool
	i := 0
	for ; i < len(f); i++ {
		name, v := oaField(f[i])
		if name != "retry" && name != "" {
			break
		}
		if name == "" {
			comment = true
			continue
		}
		var ms int
		if _, err := fmt.Sscanf(v, "%d", &ms); err != nil || ms <= 0 || fmt.Sprint(ms) != v {
			c.t.Errorf("first frame: retry %q is not a number of milliseconds", v)
		}
		retry = true
	}
	if !retry || !comment {
		c.t.Errorf("first frame %q: want a retry field and a comment", f)
	}
	rest := f[i:]
	if len(rest) == 0 {
		return
	}
	pos, _ := rest.event()
	if pos.Type != "sse-position" {
		// No position (an id the stream cannot echo): the event after the
		// comment is the next one.
		if c.pending == nil {
			c.pending = map[*ssetest.Stream]oaFrame{}
		}
		c.pending[sc] = rest
		return
	}
	for _, l := range rest {
		if name, _ := oaField(l); name != "id" && name != "event" && name != "data" {
			c.t.Errorf("sse-position event has field %q: %q", name, f)
		}
	}
	var data any
	if strings.Contains(pos.Data, "\n") || json.Unmarshal([]byte(pos.Data), &data) != nil {
		c.t.Fatalf("sse-position data %q: want one line of JSON", pos.Data)
	}
	if err := c.schema("PositionEventData").VisitJSON(data, openapi3.EnableJSONSchema2020()); err != nil {
		c.t.Errorf("sse-position data %q does not match PositionEventData: %v", pos.Data, err)
	}
	if m, _ := data.(map[string]any); pos.ID == "" || m["lastEventId"] != pos.ID {
		c.t.Errorf("sse-position %q: want its id and data.lastEventId equal", f)
	}
}

// nextEvent reads frames until an event (comment-only frames, heartbeats,
// are skipped), checks its wire form and validates it as an SseEvent, and
// the data of the service's own events against their schemas.
func (c *oaConformance) nextEvent(sc *ssetest.Stream) ssetest.Event {
	c.t.Helper()
	for {
		f, ok := c.pending[sc]
		delete(c.pending, sc)
		if !ok {
			f = c.readFrame(sc)
		}
		ev, ok := f.event()
		if !ok {
			continue // a comment frame: heartbeat
		}
		retry := c.checkEventLines(f)
		obj := map[string]any{"data": ev.Data, "event": ev.Type}
		if ev.ID != "" {
			obj["id"] = ev.ID
		}
		if err := c.schema("SseEvent").VisitJSON(obj, openapi3.EnableJSONSchema2020()); err != nil {
			c.t.Errorf("event %q does not match SseEvent: %v", f, err)
		}
		if retry != "" && ev.Type != "sse-reconnect" {
			c.t.Errorf("frame %q: a retry field in an event other than sse-reconnect", f)
		}
		if schema, ok := map[string]string{
			"sse-auth-expired": "AuthExpiredEventData",
			"sse-reconnect":    "ReconnectEventData",
			"sse-gap":          "GapEventData",
		}[ev.Type]; ok {
			var info any
			if err := json.Unmarshal([]byte(ev.Data), &info); err != nil {
				c.t.Errorf("%s data %q is not JSON: %v", ev.Type, ev.Data, err)
			} else if err := c.schema(schema).VisitJSON(info, openapi3.EnableJSONSchema2020()); err != nil {
				c.t.Errorf("%s data %q does not match %s: %v", ev.Type, ev.Data, schema, err)
			}
		}
		if ev.Type == "sse-reconnect" {
			var rc struct {
				RetryMs int `json:"retryMs"`
			}
			if json.Unmarshal([]byte(ev.Data), &rc) == nil && strconv.Itoa(rc.RetryMs) != retry {
				c.t.Errorf("sse-reconnect frame %q: retryMs is not the retry field", f)
			}
		}
		return ev
	}
}

// checkEventLines checks the order and the names of an event's fields as
// written (id first, event before data, "event: message" left out), and
// returns the value of its retry field, if any.
func (c *oaConformance) checkEventLines(f oaFrame) (retry string) {
	c.t.Helper()
	sawData := false
	for i, l := range f {
		switch name, v := oaField(l); name {
		case "":
		case "id":
			if i != 0 {
				c.t.Errorf("frame %q: id is not the first line", f)
			}
		case "event":
			if sawData {
				c.t.Errorf("frame %q: event after data", f)
			}
			if v == "message" {
				c.t.Errorf("frame %q: event: message should be omitted", f)
			}
		case "data":
			sawData = true
		case "retry":
			retry = v
		default:
			c.t.Errorf("frame %q: unexpected field %q", f, name)
		}
	}
	return retry
}
