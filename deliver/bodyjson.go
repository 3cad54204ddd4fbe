package deliver

import (
	"maps"
	"math"
	"slices"
	"strconv"
)

// appendJSONBody writes jb as json.Marshal does, without reflection: the
// body is built for every attempt. ok is false when a value has a type
// this does not write (json, arrays, numbers from an old store); the
// caller then uses json.Marshal.
func appendJSONBody(b []byte, jb *jsonBody) (_ []byte, ok bool) {
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
	b = appendJSONField(b, `,"webhook":`, jb.Webhook)
	if len(jb.Data) > 0 {
		if b, ok = appendJSONValues(append(b, `,"data":`...), jb.Data); !ok {
			return nil, false
		}
	}
	if len(jb.Old) > 0 {
		if b, ok = appendJSONValues(append(b, `,"old":`...), jb.Old); !ok {
			return nil, false
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
	return append(b, '}'), true
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
