package stream

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// EncodedLen is the exact length of AppendEvent's output.
func EncodedLen(id, typ, data string) int {
	n := 1 // closing blank line
	if id != "" {
		n += len("id: ") + len(id) + 1
	}
	if typ != "" && typ != "message" {
		n += len("event: ") + len(typ) + 1
	}
	lines := 1
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			lines++
		case '\r':
			lines++
			if i+1 < len(data) && data[i+1] == '\n' {
				i++
				n-- // the LF of CRLF is dropped
			}
		}
	}
	// Each line gets "data: " and "\n"; the line breaks themselves (one byte
	// each after the CRLF adjustment) are replaced by those "\n".
	return n + len(data) + lines*len("data: \n") - (lines - 1)
}

// AppendEvent appends the wire form of one event to b: an id: line (when id
// is not empty), an event: line (omitted for "" and "message"), one data:
// line per line of data, and a blank line. CR, LF and CRLF in data all end a
// line, so no payload can start a new field or event.
func AppendEvent(b []byte, id, typ, data string) []byte {
	if id != "" {
		b = append(b, "id: "...)
		b = append(b, id...)
		b = append(b, '\n')
	}
	if typ != "" && typ != "message" {
		b = append(b, "event: "...)
		b = append(b, typ...)
		b = append(b, '\n')
	}
	for {
		i := strings.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			b = append(b, '\n')
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n')
}

// AppendRetry appends a retry: field telling the client how long to wait
// before reconnecting.
func AppendRetry(b []byte, d time.Duration) []byte {
	b = append(b, "retry: "...)
	b = strconv.AppendInt(b, d.Milliseconds(), 10)
	return append(b, '\n')
}

// AppendPosition appends the sse-position event naming id as the stream's
// position.
func AppendPosition(b []byte, id string) []byte {
	data, _ := json.Marshal(struct {
		LastEventID string `json:"lastEventId"`
	}{id}) // cannot fail
	return AppendEvent(b, id, TypePosition, string(data))
}

// echoableID reports whether a client's resume id can be sent back in an
// id: field as is: what this service issues, nothing that could end the
// line or be dropped by a parser (NUL).
func echoableID(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// heartbeatFrame is the comment line sent on an idle stream. No blank line
// follows it: several client libraries dispatch an empty message for a
// blank line after a comment; alone, the line is ignored by every parser
// (it joins the next event's block, where comments are skipped).
const heartbeatFrame = ": heartbeat\n"

// AppendReconnect appends the last frame of a stream the client should open
// again after delay: the retry: field and one sse-reconnect event, a
// complete named event with JSON data that no client library takes for a
// message.
func AppendReconnect(b []byte, delay time.Duration, reason string) []byte {
	b = AppendRetry(b, delay)
	data, _ := json.Marshal(struct {
		Reason  string `json:"reason"`
		RetryMs int64  `json:"retryMs"`
	}{reason, delay.Milliseconds()}) // cannot fail
	return AppendEvent(b, "", TypeReconnect, string(data))
}

// authExpiredFrame is the last frame of a stream whose token expired. It has
// no id, so the client's last event id stays that of the last real event
// and a reconnect resumes right after it.
func authExpiredFrame(at time.Time) string {
	data, _ := json.Marshal(struct {
		Reason    string `json:"reason"`
		ExpiredAt string `json:"expiredAt"`
	}{"token expired", at.UTC().Format(time.RFC3339)})
	return string(AppendEvent(nil, "", TypeAuthExpired, string(data)))
}

// appendGap appends the sse-gap event. Its id is the newest event's, so a
// client that reconnects later resumes from here instead of hitting the
// same gap again.
func appendGap(b []byte, id string, gap *GapError) []byte {
	data, _ := json.Marshal(struct {
		LastEventID string `json:"lastEventId"`
		Reason      string `json:"reason"`
	}{gap.LastEventID, gap.Reason}) // cannot fail: two strings
	return AppendEvent(b, id, TypeGap, string(data))
}
