package deliver

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"walhook/cdc"
)

// TestBodyJSONMatchesEncodingJSON: the hand-written body must be byte for
// byte what json.Marshal writes, since receivers verify signatures over
// the bytes and golden files pin them.
func TestBodyJSONMatchesEncodingJSON(t *testing.T) {
	strs := []string{"", "plain", "Zoë", "a\"b\\c", "<script>&amp;</script>", "line\nbreak\ttab\rret",
		"\b\f\x00\x1f", "\u2028\u2029", "bad \xff\xfe utf8", "emoji 🐘", strings.Repeat("x", 300)}
	floats := []float64{0, -0.0, 1, -1.5, 3.141592653589793, 1e-6, 9.99e-7, 1e-7, 1e20, 1e21, 1.5e300, -2.5e-300, 123456789.125, math.SmallestNonzeroFloat64, math.MaxFloat64}
	rng := rand.New(rand.NewPCG(1, 2))
	value := func() any {
		switch rng.IntN(5) {
		case 0:
			return nil
		case 1:
			return strs[rng.IntN(len(strs))]
		case 2:
			return int64(rng.Uint64())
		case 3:
			return rng.IntN(2) == 0
		}
		return floats[rng.IntN(len(floats))]
	}
	row := func() map[string]any {
		m := map[string]any{}
		for range rng.IntN(8) {
			m[strs[rng.IntN(len(strs))]+string(rune('a'+rng.IntN(26)))] = value()
		}
		return m
	}
	for i := range 2000 {
		ev := cdc.Event{ID: cdc.EventID(uint64(i), 1), Action: "modify", Schema: "public", Table: strs[rng.IntN(len(strs))]}
		jb := jsonBody{
			ID: ev.ID, Event: strs[rng.IntN(len(strs))], Entity: strs[rng.IntN(len(strs))], Action: ev.Action,
			EntityID: strs[rng.IntN(len(strs))], EntityURL: strs[rng.IntN(len(strs))], Table: ev.Table,
			OccurredAt: "2026-11-29T01:02:03.456Z", Webhook: strs[rng.IntN(len(strs))],
			Data: row(), Old: row(),
		}
		if rng.IntN(2) == 0 {
			jb.Changed = []string{strs[rng.IntN(len(strs))], "b"}
		}
		want, err := json.Marshal(jb)
		if err != nil {
			t.Fatal(err)
		}
		got, at, end, ok := appendJSONBody(nil, &jb)
		if !ok {
			t.Fatalf("case %d: not written: %+v", i, jb)
		}
		if name, _ := json.Marshal(jb.Webhook); string(got[at:end]) != string(name) {
			t.Fatalf("case %d: the name is at %q", i, got[at:end])
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func TestBodyJSONLeavesOtherTypesToEncodingJSON(t *testing.T) {
	for _, v := range []any{json.RawMessage(`{"a": 1}`), []any{int64(1)}, json.Number("1"), math.NaN(), math.Inf(1), int32(1)} {
		if _, _, _, ok := appendJSONBody(nil, &jsonBody{Data: map[string]any{"v": v}}); ok {
			t.Errorf("%T %v was written by hand", v, v)
		}
	}
}

// Webhooks of one event share its JSON body but for their names; each
// gets what it would get alone, include_entity or not.
func TestSharedBody(t *testing.T) {
	ev := sampleEvent()
	shared := &event{Event: &ev}
	var first []byte
	for i, w := range []Webhook{
		{Name: "a", IncludeEntity: true},
		{Name: `b"<&>é`, IncludeEntity: true},
		{Name: "c"},
		{Name: "a-much-longer-name", IncludeEntity: true},
		{Name: "d"},
		{Name: "f", IncludeEntity: true, ContentType: "form"},
	} {
		enc, err := newEncoder(&w, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := enc.encode(shared)
		if err != nil {
			t.Fatal(err)
		}
		alone, err := enc.encode(&event{Event: &ev})
		if err != nil {
			t.Fatal(err)
		}
		if string(got.data) != string(alone.data) || got.contentType != alone.contentType {
			t.Errorf("webhook %q: shared body\n%s\nalone\n%s", w.Name, got.data, alone.data)
		}
		if i == 0 {
			first = bytes.Clone(got.data)
		}
	}
	if shared.json[0].Load() == nil || shared.json[1].Load() == nil {
		t.Error("the body was not shared")
	}
	// The first webhook's body is the shared one: later ones must not
	// have written into it.
	if s := shared.json[1].Load(); string(s.b) != string(first) {
		t.Errorf("the shared body changed:\n%s\nwas\n%s", s.b, first)
	}
}

// TestJSONStringEveryByte: each byte, alone and amid plain text, is
// quoted as encoding/json quotes it (jsonPlain's table against its rules).
func TestJSONStringEveryByte(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "ab" + string([]byte{byte(c)}) + "cd"} {
			want, _ := json.Marshal(s)
			if got := appendJSONString(nil, s); string(got) != string(want) {
				t.Errorf("byte %#x in %q: got %s, want %s", c, s, got, want)
			}
		}
	}
}
