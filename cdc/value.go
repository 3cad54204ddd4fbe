package cdc

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
)

// A converter turns one column value in PostgreSQL's text format into the
// JSON-ready Go value the contract promises. An error makes the caller fall
// back to the text form, so a surprising value never stops the stream.
type converter func(src []byte) (any, error)

var errInvalidUTF8 = errors.New("invalid UTF-8")

// The replication session is started with these settings so that the text
// forms the converters parse do not depend on the server's defaults.
var sessionParams = map[string]string{
	"DateStyle":          "ISO, MDY",
	"IntervalStyle":      "postgres",
	"TimeZone":           "UTC",
	"extra_float_digits": "1",
	"bytea_output":       "hex",
}

// typeCatalog is what a session read from pg_type about types pgoutput
// names by OID alone.
type typeCatalog struct {
	// bases maps a domain to the type it is ultimately based on: a domain
	// over int still gives a number.
	bases map[uint32]uint32
	// arrays maps every array type to its element type and delimiter,
	// including arrays of enums, domains and extension types pgx does not
	// know.
	arrays map[uint32]arrayType
	// known holds every type past the built-in ones (OID 10000 and up)
	// that the catalog had: pgoutput announces such a type with a Type
	// message, and one not known here was made after the catalog was
	// read.
	known map[uint32]bool
}

type arrayType struct {
	elem  uint32
	delim byte
}

// converterFor picks the converter for a column type. Types without one
// (numeric, uuid, enums, ranges, composites) keep their text form.
func converterFor(m *pgtype.Map, cat typeCatalog, oid uint32) converter {
	if base, ok := cat.bases[oid]; ok {
		oid = base
	}
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		return convInt
	case pgtype.Float4OID, pgtype.Float8OID:
		return convFloat
	case pgtype.BoolOID:
		return convBool
	case pgtype.JSONOID, pgtype.JSONBOID:
		return convJSON
	case pgtype.ByteaOID:
		return convBytea
	case pgtype.DateOID:
		return convDate
	case pgtype.TimestampOID:
		return convTimestamp
	case pgtype.TimestamptzOID:
		return convTimestamptz
	}
	a, ok := cat.arrays[oid]
	if !ok {
		// Without a catalog (a decoder on its own), pgx's built-in arrays.
		if t, known := m.TypeForOID(oid); known {
			if ac, isArray := t.Codec.(*pgtype.ArrayCodec); isArray && ac.ElementType != nil {
				a, ok = arrayType{elem: ac.ElementType.OID, delim: ac.Delimiter}, true
			}
		}
	}
	if ok {
		if a.delim == 0 {
			a.delim = ','
		}
		elem := converterFor(m, cat, a.elem)
		return func(src []byte) (any, error) { return parseArray(src, a.delim, elem) }
	}
	return convText
}

// textType is what an Event's Types says of a column of type oid: the
// values of numeric and timestamptz are text, a filter reads them as a
// number or a time; "" for any other type.
func textType(cat typeCatalog, oid uint32) string {
	if base, ok := cat.bases[oid]; ok {
		oid = base
	}
	switch oid {
	case pgtype.NumericOID:
		return TypeNumeric
	case pgtype.TimestamptzOID:
		return TypeTimestamptz
	}
	return ""
}

func convText(src []byte) (any, error) {
	if !utf8.Valid(src) {
		return nil, errInvalidUTF8
	}
	return string(src), nil
}

// safeText is the fallback: the text form with invalid bytes replaced.
func safeText(src []byte) string {
	if utf8.Valid(src) {
		return string(src)
	}
	return strings.ToValidUTF8(string(src), "\uFFFD")
}

func convInt(src []byte) (any, error) {
	return strconv.ParseInt(string(src), 10, 64)
}

func convFloat(src []byte) (any, error) {
	switch s := string(src); s {
	case "NaN", "Infinity", "-Infinity":
		return s, nil
	default:
		return strconv.ParseFloat(s, 64)
	}
}

func convBool(src []byte) (any, error) {
	switch string(src) {
	case "t":
		return true, nil
	case "f":
		return false, nil
	}
	return nil, fmt.Errorf("bool %q", src)
}

func convJSON(src []byte) (any, error) {
	if !utf8.Valid(src) {
		return nil, errInvalidUTF8
	}
	// The tuple's bytes are freshly allocated per column, so they can be
	// kept without a copy.
	return json.RawMessage(src), nil
}

func convBytea(src []byte) (any, error) {
	if len(src) < 2 || src[0] != '\\' || src[1] != 'x' {
		return nil, fmt.Errorf("bytea not in hex format")
	}
	raw := make([]byte, hex.DecodedLen(len(src)-2))
	if _, err := hex.Decode(raw, src[2:]); err != nil {
		return nil, err
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

func convDate(src []byte) (any, error) {
	// ISO DateStyle gives YYYY-MM-DD already; anything else (infinity,
	// BC dates, years past 9999) keeps its text form too.
	return convText(src)
}

const timestampLayout = "2006-01-02T15:04:05.999999"

func convTimestamp(src []byte) (any, error) {
	t, err := time.Parse("2006-01-02 15:04:05.999999999", string(src))
	if err != nil {
		return nil, err
	}
	return t.Format(timestampLayout), nil
}

var timestamptzLayouts = []string{
	"2006-01-02 15:04:05.999999999-07",
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999-07:00:00",
}

func convTimestamptz(src []byte) (any, error) {
	var err error
	for _, layout := range timestamptzLayouts {
		var t time.Time
		if t, err = time.Parse(layout, string(src)); err == nil {
			return t.UTC().Format(time.RFC3339Nano), nil
		}
	}
	return nil, err
}

// parseArray reads PostgreSQL's array text form ({1,2,NULL}, nested
// {{..},{..}}, optional [lo:hi]= bounds) into nested []any, each element
// through elem.
func parseArray(src []byte, delim byte, elem converter) (any, error) {
	s := string(src)
	if strings.HasPrefix(s, "[") {
		i := strings.IndexByte(s, '=')
		if i < 0 {
			return nil, fmt.Errorf("array bounds without '='")
		}
		s = s[i+1:]
	}
	p := arrayParser{s: s, delim: delim, elem: elem}
	v, err := p.array()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("array: trailing data at %d", p.i)
	}
	return v, nil
}

type arrayParser struct {
	s     string
	i     int
	delim byte
	elem  converter
	buf   []byte
}

func (p *arrayParser) array() ([]any, error) {
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, fmt.Errorf("array: expected '{' at %d", p.i)
	}
	p.i++
	out := []any{}
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return out, nil
	}
	for {
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("array: unexpected end")
		}
		switch p.s[p.i] {
		case '{':
			sub, err := p.array()
			if err != nil {
				return nil, err
			}
			out = append(out, sub)
		case '"':
			b, err := p.quoted()
			if err != nil {
				return nil, err
			}
			out = append(out, p.value(b))
		default:
			start := p.i
			for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
				p.i++
			}
			tok := p.s[start:p.i]
			if strings.EqualFold(tok, "NULL") {
				out = append(out, nil)
				break
			}
			out = append(out, p.value([]byte(tok)))
		}
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("array: unexpected end")
		}
		switch p.s[p.i] {
		case p.delim:
			p.i++
		case '}':
			p.i++
			return out, nil
		default:
			return nil, fmt.Errorf("array: unexpected %q at %d", p.s[p.i], p.i)
		}
	}
}

// value converts one element; one the converter refuses (a timestamp
// 'infinity', invalid UTF-8) keeps its text form, as a column's value does,
// and the rest of the array is still converted.
func (p *arrayParser) value(src []byte) any {
	v, err := p.elem(src)
	if err != nil {
		return safeText(src)
	}
	return v
}

// quoted reads a double-quoted element with backslash escapes.
func (p *arrayParser) quoted() ([]byte, error) {
	p.i++ // opening quote
	b := p.buf[:0]
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch c {
		case '\\':
			p.i++
			if p.i >= len(p.s) {
				return nil, fmt.Errorf("array: dangling escape")
			}
			b = append(b, p.s[p.i])
		case '"':
			p.i++
			p.buf = b
			// The element converter may keep the slice (json), so hand
			// it a copy.
			return append([]byte(nil), b...), nil
		default:
			b = append(b, c)
		}
		p.i++
	}
	return nil, fmt.Errorf("array: unterminated quoted element")
}
