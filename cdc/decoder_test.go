package cdc

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// Raw pgoutput v1 messages, built the way the walsender sends them.

type relCol struct {
	name string
	oid  uint32
	key  bool
}

func relationMsg(id uint32, schema, table string, ident byte, cols []relCol) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, schema...), 0)
	b = append(append(b, table...), 0)
	b = append(b, ident)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for _, c := range cols {
		var flags byte
		if c.key {
			flags = 1
		}
		b = append(b, flags)
		b = append(append(b, c.name...), 0)
		b = binary.BigEndian.AppendUint32(b, c.oid)
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

func beginMsg(finalLSN uint64) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, finalLSN)
	b = binary.BigEndian.AppendUint64(b, 1_000_000)
	return binary.BigEndian.AppendUint32(b, 42)
}

func commitMsg(commitLSN, endLSN uint64) []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, commitLSN)
	b = binary.BigEndian.AppendUint64(b, endLSN)
	return binary.BigEndian.AppendUint64(b, 1_000_000)
}

// insertMsg encodes values in text format; a nil value is NULL.
func insertMsg(rel uint32, values ...[]byte) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, rel)
	b = append(b, 'N')
	b = binary.BigEndian.AppendUint16(b, uint16(len(values)))
	for _, v := range values {
		if v == nil {
			b = append(b, 'n')
			continue
		}
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

var benchCols = []relCol{
	{"id", 20, true}, {"email", 25, false}, {"name", 1043, false}, {"salary", 1700, false},
	{"active", 16, false}, {"created_at", 1184, false}, {"profile", 3802, false}, {"manager_id", 23, false},
}

var benchValues = [][]byte{
	[]byte("130333"), []byte("john.doe@example.com"), []byte("John Doe"), []byte("5120.50"),
	[]byte("t"), []byte("2026-11-29 01:02:03.456789+00"), []byte(`{"team": "core", "level": 3}`), nil,
}

func mustDecode(tb testing.TB, d *decoder, msg []byte) *Tx {
	tb.Helper()
	tx, err := d.decode(msg)
	if err != nil {
		tb.Fatal(err)
	}
	return tx
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestDecodeTransaction(t *testing.T) {
	d := newDecoder(discardLogger())
	mustDecode(t, d, relationMsg(16384, "public", "employees", 'd', benchCols))
	mustDecode(t, d, beginMsg(0x16B3A80))
	mustDecode(t, d, insertMsg(16384, benchValues...))
	mustDecode(t, d, insertMsg(16384, benchValues...))
	tx := mustDecode(t, d, commitMsg(0x16B3A80, 0x16B3AB0))
	if tx == nil || len(tx.Events) != 2 {
		t.Fatalf("tx = %+v, want 2 events", tx)
	}
	if got, want := tx.Events[1].ID, "00000000016B3A80-00000001"; got != want {
		t.Errorf("ID = %s, want %s", got, want)
	}
	if tx.EndLSN != 0x16B3AB0 || d.inTx {
		t.Errorf("EndLSN %X, inTx %v", tx.EndLSN, d.inTx)
	}
	if got := tx.Events[0].Data["created_at"]; got != "2026-11-29T01:02:03.456789Z" {
		t.Errorf("created_at = %#v", got)
	}
}

func TestDecodeInvalidUTF8KeptAsText(t *testing.T) {
	d := newDecoder(discardLogger())
	mustDecode(t, d, relationMsg(1, "public", "t", 'd', []relCol{{"id", 23, true}, {"s", 25, false}, {"n", 23, false}}))
	mustDecode(t, d, beginMsg(100))
	mustDecode(t, d, insertMsg(1, []byte("1"), []byte("ab\xffc"), []byte("not a number")))
	tx := mustDecode(t, d, commitMsg(100, 200))
	got := tx.Events[0].Data
	want := map[string]any{"id": int64(1), "s": "ab\uFFFDc", "n": "not a number"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Data = %#v, want %#v", got, want)
	}
}

func TestParseArray(t *testing.T) {
	tests := []struct {
		in   string
		elem converter
		want any
	}{
		{`{}`, convInt, []any{}},
		{`{1,NULL,-3}`, convInt, []any{int64(1), nil, int64(-3)}},
		{`[0:1]={7,8}`, convInt, []any{int64(7), int64(8)}},
		{`{{1,2},{3,4}}`, convInt, []any{[]any{int64(1), int64(2)}, []any{int64(3), int64(4)}}},
		{`{"a,b","c\\d","e\"f",null,""}`, convText, []any{"a,b", `c\d`, `e"f`, nil, ""}},
		{`{"\\x01ff"}`, convBytea, []any{"Af8="}},
		{`{NaN,1.5}`, convFloat, []any{"NaN", 1.5}},
	}
	for _, tt := range tests {
		got, err := parseArray([]byte(tt.in), ',', tt.elem)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseArray(%s) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{`{1,2`, `1,2}`, `{"a}`, `{1}x`} {
		if _, err := parseArray([]byte(bad), ',', convInt); err == nil {
			t.Errorf("parseArray(%s) accepted", bad)
		}
	}
}

// BenchmarkDecodeInsert measures the hot path: one Insert message of a
// typical row into an Event.
func BenchmarkDecodeInsert(b *testing.B) {
	d := newDecoder(discardLogger())
	mustDecode(b, d, relationMsg(16384, "public", "employees", 'd', benchCols))
	mustDecode(b, d, beginMsg(0x16B3A80))
	msg := insertMsg(16384, benchValues...)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		d.tx.Events = d.tx.Events[:0]
		if _, err := d.decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// EventID is formatted by hand: it must read as %016X-%08X does.
func TestEventIDFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := [][2]uint64{{0, 0}, {math.MaxUint64, math.MaxUint32}, {0x16B3A80, 3}, {0xABCDEF, 0x10}}
	for range 1000 {
		cases = append(cases, [2]uint64{rng.Uint64() >> rng.UintN(64), uint64(rng.Uint32() >> rng.UintN(32))})
	}
	for _, c := range cases {
		got := EventID(c[0], uint32(c[1]))
		if want := fmt.Sprintf("%016X-%08X", c[0], c[1]); got != want {
			t.Fatalf("EventID(%#x, %#x) = %q, want %q", c[0], c[1], got, want)
		}
		if FromSnapshot(got) != (c[1] >= SnapshotIndex) {
			t.Fatalf("FromSnapshot(%q) = %v", got, FromSnapshot(got))
		}
	}
}
