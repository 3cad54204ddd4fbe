package deliver

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord writes r as the JSON that encoding/json writes for it (what
// decodeRecord reads), without reflection: every delivery's record is
// written at least twice, and a successful one carries its request and
// response headers, whose maps encoding/json walks slowly.
func appendRecord(b []byte, r *record) []byte {
	b = appendJSONField(b, `{"event_id":`, r.EventID)
	b = appendJSONField(b, `,"event":`, r.Event)
	if r.Entity != "" {
		b = appendJSONField(b, `,"entity":`, r.Entity)
	}
	if r.EntityID != "" {
		b = appendJSONField(b, `,"entity_id":`, r.EntityID)
	}
	b = append(b, `,"created_at":`...)
	b = appendJSONTime(b, r.CreatedAt)
	if !r.Due.IsZero() {
		b = append(b, `,"due":`...)
		b = appendJSONTime(b, r.Due)
	}
	if len(r.Attempts) > 0 {
		b = append(b, `,"attempts":[`...)
		for i := range r.Attempts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAttempt(b, &r.Attempts[i])
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func appendAttempt(b []byte, a *Attempt) []byte {
	b = append(b, `{"n":`...)
	b = strconv.AppendInt(b, int64(a.N), 10)
	b = append(b, `,"at":`...)
	b = appendJSONTime(b, a.At)
	b = append(b, `,"request_headers":`...)
	b = appendJSONHeader(b, a.RequestHeaders)
	b = appendJSONField(b, `,"request_body":`, a.RequestBody)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(a.Status), 10)
	if len(a.ResponseHeaders) > 0 {
		b = append(b, `,"response_headers":`...)
		b = appendJSONHeader(b, a.ResponseHeaders)
	}
	if a.ResponseBody != "" {
		b = appendJSONField(b, `,"response_body":`, a.ResponseBody)
	}
	b = append(b, `,"duration":`...)
	b = strconv.AppendInt(b, int64(a.Duration), 10)
	if a.Error != "" {
		b = appendJSONField(b, `,"error":`, a.Error)
	}
	return append(b, '}')
}

// appendJSONHeader writes h with sorted keys, null when nil, as
// encoding/json does.
func appendJSONHeader(b []byte, h http.Header) []byte {
	if h == nil {
		return append(b, "null"...)
	}
	keys := slices.Sorted(maps.Keys(h))
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		vs := h[k]
		if vs == nil {
			b = append(b, "null"...)
			continue
		}
		b = append(b, '[')
		for j, v := range vs {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendJSONTime writes t as time.Time's MarshalJSON does.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONField writes a member's name (with its comma and colon, as
// `,"name":`) and its string value.
func appendJSONField(b []byte, name, s string) []byte {
	return appendJSONString(append(b, name...), s)
}

// appendJSONString quotes s as encoding/json does: invalid UTF-8 becomes
// U+FFFD, and <, >, &, U+2028 and U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
