package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"walhook/cdc"
)

// A stored event is its reference count (4 bytes, big-endian) and then
// either binaryEvent and the fields below, or (stores written before the
// binary form, and events holding a value type the binary form does not
// know) the event as JSON, which starts with '{'.
//
// The binary form exists because every event a webhook cannot hold in
// memory is read back once: decoding JSON into map[string]any was a tenth
// of walhook's CPU in the end-to-end bench, and it turned integers into
// json.Number. The binary form gives back exactly the Go values cdc made.
const binaryEvent = 0x01

// Value tags of the binary form.
const (
	tagNil = iota
	tagInt
	tagFloat
	tagString
	tagTrue
	tagFalse
	tagRaw   // json.RawMessage (json and jsonb columns)
	tagArray // []any
	tagNumber
)

// errUnencodable makes encodeEvent fall back to JSON.
var errUnencodable = errors.New("value type without a binary form")

func encodeEvent(ev *cdc.Event, refs uint32) ([]byte, error) {
	return appendStoredEvent(make([]byte, 0, 96+ev.SizeHint()), ev, refs)
}

// appendStoredEvent appends ev's stored form, with refs references, to
// dst.
func appendStoredEvent(dst []byte, ev *cdc.Event, refs uint32) ([]byte, error) {
	out := binary.BigEndian.AppendUint32(dst, refs)
	if b, err := appendEvent(append(out, binaryEvent), ev); err == nil {
		return b, nil
	}
	js, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	return append(out, js...), nil
}

func decodeEvent(v []byte) (*cdc.Event, error) {
	if len(v) < 5 {
		return nil, fmt.Errorf("decode event: %d bytes", len(v))
	}
	if v[4] == binaryEvent {
		// The event's strings are cut from one copy of it: one allocation
		// rather than one per string (its id, entity id, each text value).
		// They live and die with the event.
		r := eventReader{b: v[5:], s: string(v[5:])}
		ev := r.event()
		if r.err != nil {
			return nil, fmt.Errorf("decode event: %w", r.err)
		}
		return ev, nil
	}
	return decodeJSONEvent(v[4:])
}

func appendEvent(b []byte, ev *cdc.Event) ([]byte, error) {
	for _, s := range []string{ev.ID, ev.Schema, ev.Table, ev.Action, ev.Entity, ev.EntityID, ev.EntityURL} {
		b = appendString(b, s)
	}
	b = binary.AppendUvarint(b, ev.CommitLSN)
	b = binary.AppendUvarint(b, uint64(ev.Index))
	b = binary.AppendVarint(b, ev.CommitTime.UnixNano())
	var err error
	for _, m := range []map[string]any{ev.Data, ev.Old} {
		if b, err = appendMap(b, m); err != nil {
			return nil, err
		}
	}
	b = appendStrings(b, ev.Changed)
	return appendStrings(b, ev.Key), nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// appendStrings writes len+1, so that nil (0) and empty (1) stay apart.
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(ss))+1)
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendMap(b []byte, m map[string]any) ([]byte, error) {
	if m == nil {
		return append(b, 0), nil
	}
	b = binary.AppendUvarint(b, uint64(len(m))+1)
	var err error
	for k, v := range m {
		b = appendString(b, k)
		if b, err = appendValue(b, v); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendValue(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, tagNil), nil
	case int64:
		return binary.AppendVarint(append(b, tagInt), x), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, tagFloat), math.Float64bits(x)), nil
	case string:
		return appendString(append(b, tagString), x), nil
	case bool:
		if x {
			return append(b, tagTrue), nil
		}
		return append(b, tagFalse), nil
	case json.RawMessage:
		return appendString(append(b, tagRaw), string(x)), nil
	case json.Number:
		return appendString(append(b, tagNumber), string(x)), nil
	case []any:
		b = binary.AppendUvarint(append(b, tagArray), uint64(len(x)))
		var err error
		for _, e := range x {
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: %T", errUnencodable, v)
}

// eventReader decodes the binary form; the first error sticks.
type eventReader struct {
	b   []byte
	s   string // if set, b's bytes from the start as a string, which string() cuts from
	err error
}

var errTruncated = errors.New("truncated")

func (r *eventReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *eventReader) uvarint() uint64 { return readVarint(r, binary.Uvarint) }
func (r *eventReader) varint() int64   { return readVarint(r, binary.Varint) }

// readVarint reads one varint with read (binary.Uvarint or binary.Varint).
func readVarint[T uint64 | int64](r *eventReader, read func([]byte) (T, int)) T {
	v, n := read(r.b)
	if n <= 0 {
		r.fail(errTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *eventReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail(errTruncated)
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

func (r *eventReader) string() string {
	b := r.bytes()
	if r.s == "" {
		return string(b)
	}
	at := len(r.s) - len(r.b) - len(b) // r.b is what follows b
	return r.s[at : at+len(b)]
}

// name is a string that repeats across events: see interner.
func (r *eventReader) name() string { return interned.intern(r.bytes()) }

func (r *eventReader) byte() byte {
	if len(r.b) == 0 {
		r.fail(errTruncated)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *eventReader) event() *cdc.Event {
	ev := &cdc.Event{}
	ev.ID = r.string()
	for _, s := range []*string{&ev.Schema, &ev.Table, &ev.Action, &ev.Entity} {
		*s = r.name()
	}
	ev.EntityID, ev.EntityURL = r.string(), r.string()
	ev.CommitLSN = r.uvarint()
	ev.Index = uint32(r.uvarint())
	ev.CommitTime = time.Unix(0, r.varint()).UTC()
	ev.Data = r.valueMap()
	ev.Old = r.valueMap()
	ev.Changed = r.strings()
	ev.Key = r.strings()
	r.end("event")
	return ev
}

// end fails when bytes are left after the value (what) read.
func (r *eventReader) end(what string) {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d bytes after the %s", len(r.b), what))
	}
}

// count reads the length of a list or map, written plus one so that nil
// (0) and empty (1) stay apart; ok is false for nil and after an error.
// Every item takes a byte at least, so a count beyond the bytes left fails.
func (r *eventReader) count() (n int, ok bool) {
	v := r.uvarint()
	if v == 0 || r.err != nil {
		return 0, false
	}
	if v-1 > uint64(len(r.b)) {
		r.fail(errTruncated)
		return 0, false
	}
	return int(v - 1), true
}

func (r *eventReader) strings() []string {
	n, ok := r.count()
	if !ok {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.name()
	}
	return ss
}

func (r *eventReader) valueMap() map[string]any {
	n, ok := r.count()
	if !ok {
		return nil
	}
	m := make(map[string]any, n)
	for range n {
		k := r.name()
		m[k] = r.value()
		if r.err != nil {
			return nil
		}
	}
	return m
}

func (r *eventReader) value() any {
	switch tag := r.byte(); tag {
	case tagNil:
		return nil
	case tagInt:
		return r.varint()
	case tagFloat:
		if len(r.b) < 8 {
			r.fail(errTruncated)
			return nil
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(r.b))
		r.b = r.b[8:]
		return f
	case tagString:
		return r.string()
	case tagTrue:
		return true
	case tagFalse:
		return false
	case tagRaw:
		return json.RawMessage(bytes.Clone(r.bytes()))
	case tagNumber:
		return json.Number(r.string())
	case tagArray:
		n := r.uvarint()
		if n > uint64(len(r.b)) {
			r.fail(errTruncated)
			return nil
		}
		a := make([]any, n)
		for i := range a {
			a[i] = r.value()
		}
		return a
	default:
		r.fail(fmt.Errorf("unknown value tag %d", tag))
		return nil
	}
}

// appendTime writes t's Unix nanoseconds, or nothing but a zero for the
// zero time (whose nanoseconds overflow).
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	return binary.AppendVarint(append(b, 1), t.UnixNano())
}

func (r *eventReader) time() time.Time {
	if r.byte() == 0 {
		return time.Time{}
	}
	return time.Unix(0, r.varint()).UTC()
}
