package deliver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// batchEvents are n events as a batch carries them, each wrapped anew (no
// body shared yet); every third has a json value, which the hand-written
// encoder leaves to encoding/json.
func batchEvents(n int) []*event {
	evs := make([]*event, n)
	for i := range evs {
		ev := sampleEvent()
		ev.ID = cdc.EventID(0x16B3A80, uint32(i))
		ev.EntityID = fmt.Sprint(130333 + i)
		ev.Data = map[string]any{"id": int64(130333 + i), "email": fmt.Sprintf("n%d@example.com", i), "note": strings.Repeat("<x>", i)}
		if i%3 == 2 {
			ev.Data["doc"] = json.RawMessage(`{"a":1}`)
		}
		evs[i] = &event{Event: &ev}
	}
	return evs
}

// TestEncodeBatchBodies: a batch's body holds each event's body as the
// webhook sends it alone, whether another webhook built that body before
// (and the batch splices it) or the batch builds it (and another webhook
// then splices the batch's copy, which later events of the batch must
// not overwrite).
func TestEncodeBatchBodies(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    Webhook
	}{
		{"with entity", Webhook{Name: "hr-sync", Method: "POST", ContentType: "json", IncludeEntity: true}},
		{"without entity", Webhook{Name: "hr-sync", Method: "POST", ContentType: "json"}},
		{"columns", Webhook{Name: "hr-sync", Method: "POST", ContentType: "json", IncludeEntity: true, Columns: []string{"id", "email"}}},
	} {
		for _, warmed := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, bodies built before %v", tc.name, warmed), func(t *testing.T) {
				enc := mustEncoder(t, tc.w)
				other := tc.w
				other.Name = "crm \"sync\""
				otherEnc := mustEncoder(t, other)
				evs := batchEvents(12)
				alone := func(e *encoder, sev *event) string {
					t.Helper()
					got, err := e.encode(&event{Event: sev.Event}) // nothing shared
					if err != nil {
						t.Fatal(err)
					}
					return string(got.data)
				}
				if warmed {
					for _, sev := range evs[:6] {
						otherEnc.encode(sev)
					}
				}
				got, err := enc.encodeBatch("batch_1", evs)
				if err != nil {
					t.Fatal(err)
				}
				parts := make([]string, len(evs))
				for i, sev := range evs {
					parts[i] = alone(enc, sev)
				}
				want := `{"webhook":"hr-sync","events":[` + strings.Join(parts, ",") + `]}`
				if string(got.data) != want {
					t.Errorf("batch body\n got %s\nwant %s", got.data, want)
				}
				if !json.Valid(got.data) || got.contentType != "application/json" {
					t.Errorf("body valid JSON %v, content type %q", json.Valid(got.data), got.contentType)
				}
				before := bytes.Clone(got.data)
				for i, sev := range evs {
					one, err := otherEnc.encode(sev)
					if err != nil {
						t.Fatal(err)
					}
					if w := alone(otherEnc, sev); string(one.data) != w {
						t.Errorf("event %d sent alone after the batch\n got %s\nwant %s", i, one.data, w)
					}
				}
				if !bytes.Equal(got.data, before) {
					t.Error("the batch's body changed as other webhooks sent its events")
				}
			})
		}
	}
}

func mustEncoder(t testing.TB, w Webhook) *encoder {
	t.Helper()
	e, err := newEncoder(&w, 0)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// BenchmarkEncodeBatch encodes batches of 100 events as walhook bench
// writes them (an id and 300 bytes of text), each event's body not built
// before (one webhook); cpu-ns/event is the process's CPU time (the
// garbage collector's included) per event.
func BenchmarkEncodeBatch(b *testing.B) {
	enc := mustEncoder(b, Webhook{Name: "hb1", Method: "POST", ContentType: "json", IncludeEntity: true})
	evs := make([]cdc.Event, 100)
	for i := range evs {
		ev := sampleEvent()
		ev.ID, ev.EntityID = cdc.EventID(0x16B3A80, uint32(i)), fmt.Sprint(i)
		ev.Data, ev.Old, ev.Changed = map[string]any{"id": int64(i), "payload": strings.Repeat("x", 300)}, nil, nil
		evs[i] = ev
	}
	batch := make([]*event, len(evs))
	b.ReportAllocs()
	start := testkit.ProcessCPU()
	for b.Loop() {
		for i := range evs {
			batch[i] = &event{Event: &evs[i]}
		}
		if _, err := enc.encodeBatch("batch_1", batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((testkit.ProcessCPU()-start).Nanoseconds())/float64(b.N*len(evs)), "cpu-ns/event")
}
