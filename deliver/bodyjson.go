package deliver

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendJSONBody writes jb as json.Marshal does, without reflection: the
// body is built for every attempt. ok is false when a value has a type
// this does not write (json, arrays, numbers from an old store); the
// caller then uses json.Marshal. The webhook's name, quoted, is
// b[nameAt:nameEnd].
func appendJSONBody(b []byte, jb *jsonBody) (_ []byte, nameAt, nameEnd int, ok bool) {
	b = appendJSONField(b, `{"id":`, jb.ID)
	b = appendJSONField(b, `,"event":`, jb.Event)
	b = appendJSONField(b, `,"entity":`, jb.Entity)
	b = appendJSONField(b, `,"action":`, jb.Action)
	b = appendJSONField(b, `,"entity_id":`, jb.EntityID)
	if jb.EntityURL != "" {
		b = appendJSONField(b, `,"entity_url":`, jb.EntityURL)
	}
	b = appendJSONField(b, `,"table":`, jb.Table)
	b = appendJSONField(b, `,"occurred_at":`, jb.OccurredAt)
	b = append(b, `,"webhook":`...)
	nameAt = len(b)
	b = appendJSONString(b, jb.Webhook)
	nameEnd = len(b)
	if len(jb.Data) > 0 {
		if b, ok = appendJSONValues(append(b, `,"data":`...), jb.Data); !ok {
			return nil, 0, 0, false
		}
	}
	if len(jb.Old) > 0 {
		if b, ok = appendJSONValues(append(b, `,"old":`...), jb.Old); !ok {
			return nil, 0, 0, false
		}
	}
	if len(jb.Changed) > 0 {
		b = append(b, `,"changed":[`...)
		for i, c := range jb.Changed {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, c)
		}
		b = append(b, ']')
	}
	return append(b, '}'), nameAt, nameEnd, true
}

// appendJSONValues writes a row, its keys sorted as encoding/json sorts
// map keys.
func appendJSONValues(b []byte, m map[string]any) ([]byte, bool) {
	var buf [32]string // most rows: no allocation for the keys
	keys := slices.AppendSeq(buf[:0], maps.Keys(m))
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, k), ':')
		switch v := m[k].(type) {
		case nil:
			b = append(b, "null"...)
		case string:
			b = appendJSONString(b, v)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case bool:
			b = strconv.AppendBool(b, v)
		case float64:
			var ok bool
			if b, ok = appendJSONFloat(b, v); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return append(b, '}'), true
}

// appendJSONFloat formats f as encoding/json does; NaN and ±Inf are not
// JSON.
func appendJSONFloat(b []byte, f float64) ([]byte, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, false
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 → e-9, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, true
}

const hexDigits = "0123456789abcdef"

// appendJSONField writes a member's name (with its comma and colon, as
// `,"name":`) and its string value.
func appendJSONField(b []byte, name, s string) []byte {
	return appendJSONString(append(b, name...), s)
}

// jsonPlain holds the bytes a JSON string holds as they are: ASCII but
// for control characters, the quote, the backslash and <, > and &. One
// lookup per byte: the text columns of a batch's rows are most of its
// body.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString quotes s as encoding/json does: invalid UTF-8 becomes
// U+FFFD, and <, >, &, U+2028 and U+2029 are escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonPlain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
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
