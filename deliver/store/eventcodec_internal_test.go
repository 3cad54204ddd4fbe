package store

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"reflect"
	"testing"
	"time"

	"walhook/cdc"
)

func codecEvent() *cdc.Event {
	return &cdc.Event{
		ID: cdc.EventID(0x16B3A80, 7), CommitLSN: 0x16B3A80, Index: 7,
		CommitTime: time.Date(2026, 11, 29, 1, 2, 3, 456789123, time.UTC),
		Schema:     "public", Table: "orders", Action: "modify",
		Data: map[string]any{
			"id": int64(math.MaxInt64), "neg": int64(-42), "price": 12.5, "nan": "NaN",
			"name": "Zoë \"quoted\"", "paid": true, "void": false, "note": nil,
			"doc":  json.RawMessage(`{"a":[1,2]}`),
			"tags": []any{"a", nil, []any{int64(1), 2.25}, []any{}},
			"num":  json.Number("123456789012345678901234567890"),
			"":     "",
		},
		Old:     map[string]any{},
		Changed: []string{"price", "paid"},
		Key:     []string{},
		Entity:  "order", EntityID: "9223372036854775807", EntityURL: "https://shop.example/orders/1",
	}
}

func TestEventCodecRoundTrip(t *testing.T) {
	for name, ev := range map[string]*cdc.Event{
		"every value type": codecEvent(),
		"empty":            {},
		"delete":           {ID: "X", Action: "delete", Old: map[string]any{"id": int64(1)}},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := encodeEvent(ev, 3)
			if err != nil {
				t.Fatal(err)
			}
			if v[4] != binaryEvent {
				t.Fatalf("stored as %q, not the binary form", v[4])
			}
			if refs := binary.BigEndian.Uint32(v); refs != 3 {
				t.Errorf("refs = %d, want 3", refs)
			}
			got, err := decodeEvent(v)
			if err != nil {
				t.Fatal(err)
			}
			want := *ev
			if want.CommitTime.IsZero() {
				want.CommitTime = time.Unix(0, want.CommitTime.UnixNano()).UTC()
			}
			if !reflect.DeepEqual(got, &want) {
				t.Errorf("round trip changed the event:\n got %#v\nwant %#v", got, &want)
			}
		})
	}
}

// TestEventCodecCoversEvent fails when cdc.Event gains a field: the binary
// form must learn it, or it would be lost on the way through the store.
// It leaves out PrevEntityID, which the delivery record keeps, and Types,
// which only a filter reads, before the event is stored.
func TestEventCodecCoversEvent(t *testing.T) {
	typ := reflect.TypeFor[cdc.Event]()
	n := typ.NumField()
	for _, left := range []string{"PrevEntityID", "Types"} {
		if _, ok := typ.FieldByName(left); ok {
			n--
		}
	}
	if n != 14 {
		t.Fatalf("cdc.Event has %d fields besides PrevEntityID and Types, the binary form writes 14: extend appendEvent and eventReader.event", n)
	}
}

func TestEventCodecReadsJSON(t *testing.T) {
	ev := codecEvent()
	js, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeEvent(append([]byte{0, 0, 0, 1}, js...))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != ev.ID || got.EntityURL != ev.EntityURL || !got.CommitTime.Equal(ev.CommitTime) {
		t.Errorf("JSON form read as %+v", got)
	}
	if n, ok := got.Data["id"].(json.Number); !ok || n.String() != "9223372036854775807" {
		t.Errorf("id = %#v, want the exact json.Number", got.Data["id"])
	}
}

func TestEventCodecFallsBackToJSON(t *testing.T) {
	ev := &cdc.Event{ID: "A", Data: map[string]any{"odd": int32(5)}}
	v, err := encodeEvent(ev, 1)
	if err != nil {
		t.Fatal(err)
	}
	if v[4] != '{' {
		t.Fatalf("an int32 value was stored in the binary form (%q)", v[4])
	}
	got, err := decodeEvent(v)
	if err != nil {
		t.Fatal(err)
	}
	if got.Data["odd"] != json.Number("5") {
		t.Errorf("odd = %#v", got.Data["odd"])
	}
}

func TestEventCodecRejectsDamage(t *testing.T) {
	v, err := encodeEvent(codecEvent(), 1)
	if err != nil {
		t.Fatal(err)
	}
	for n := 5; n < len(v); n++ {
		if _, err := decodeEvent(v[:n]); err == nil {
			t.Fatalf("the first %d of %d bytes decoded without an error", n, len(v))
		}
	}
	if _, err := decodeEvent(append(v, 0)); err == nil {
		t.Error("a trailing byte decoded without an error")
	}
}

func BenchmarkDecodeStoredEvent(b *testing.B) {
	ev := codecEvent()
	bin, _ := encodeEvent(ev, 1)
	js, _ := json.Marshal(ev)
	js = append([]byte{0, 0, 0, 1}, js...)
	b.Run("binary", func(b *testing.B) {
		for b.Loop() {
			decodeEvent(bin)
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			decodeEvent(js)
		}
	})
}

func TestRecordForms(t *testing.T) {
	created := time.Date(2026, 11, 29, 1, 2, 3, 456789123, time.UTC)
	odd := "a\"b\\c\n\r\t\x00\x1f<>&\u2028\u2029é" + "z"
	pending := &Record{Status: StatusPending, EventID: cdc.EventID(5, 1), Event: "order.create", Entity: "order", EntityID: "42", CreatedAt: created}
	retried := *pending
	retried.Due = created.Add(time.Minute)
	done := *pending
	done.Status = StatusSuccess
	done.Attempts = []Attempt{{N: 1, At: created, Status: 200, RequestBody: `{"a":1}`, RequestHeaders: http.Header{"X-A": {"b"}}}}
	failed := Record{Status: StatusFailed, EventID: odd, Event: odd, Entity: odd, EntityID: odd, CreatedAt: created, Attempts: []Attempt{
		{N: 1, At: created, RequestHeaders: http.Header{"Content-Type": {"application/json"}, "B": {odd, ""}, "A": nil},
			RequestBody: `{"id":1}` + odd, Status: 503, ResponseHeaders: http.Header{"Retry-After": {"3"}},
			ResponseBody: odd, Duration: 1234567 * time.Nanosecond, Error: odd},
		{N: 2, At: created, RequestHeaders: http.Header{}, ResponseHeaders: http.Header{}, Duration: -1},
		{N: 3},
	}}
	rekeyed := failed
	rekeyed.PrevEntityID = "41" + odd // an UPDATE that changed the key
	batched := retried
	batched.Batch = "batch_0123456789abcdef0123456789abcdef"
	batched.Attempts = done.Attempts
	rekeyedBatch := rekeyed
	rekeyedBatch.Batch = odd
	for name, rec := range map[string]*Record{"pending": pending, "pending with a due time": &retried, "succeeded": &done, "failed": &failed, "rekeyed": &rekeyed,
		"batched": &batched, "rekeyed in a batch": &rekeyedBatch} {
		v := encodeRecord(rec)
		form := byte(binaryRecord)
		switch {
		case rec.Batch != "":
			form = binaryRecordBatch
		case rec.PrevEntityID != "":
			form = binaryRecordPrev
		}
		if v[0] != statusByte(rec.Status) || v[1] != form {
			t.Errorf("%s: starts % x", name, v[:2])
		}
		got, err := decodeRecord(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, rec) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", name, got, rec)
		}
		// A record cut short fails, except where a delivery without
		// attempts ends: that is the first binary form, still read.
		fields := *rec
		fields.Attempts = nil
		end := len(encodeRecord(&fields))
		for n := 2; n < len(v); n++ {
			if _, err := decodeRecord(v[:n]); err == nil && n != end {
				t.Errorf("%s: the first %d of %d bytes decoded", name, n, len(v))
			}
		}
		if _, err := decodeRecord(append(v, 0)); err == nil {
			t.Errorf("%s: a trailing byte decoded", name)
		}
		// As stored by walhooks before the binary form.
		js, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		old, err := decodeRecord(append([]byte{statusByte(rec.Status)}, js...))
		if err != nil {
			t.Fatalf("%s: JSON record: %v", name, err)
		}
		// JSON keeps no difference between an empty header and none.
		if again, _ := json.Marshal(old); old.Status != rec.Status || string(again) != string(js) {
			t.Errorf("%s: JSON record read as %+v", name, old)
		}
	}
}
