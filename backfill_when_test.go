package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestBackfillWhen: a backfill honours the webhook's when: its rows are
// create events without old, and only the rows the expression passes are
// sent (numeric compared as a number); a change after the backfill is
// filtered too.
func TestBackfillWhen(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `CREATE TABLE orders (id int PRIMARY KEY, amount numeric(12,2), status text);
		INSERT INTO orders SELECT i, i * 100, CASE WHEN i % 2 = 0 THEN 'paid' ELSE 'new' END FROM generate_series(1, 40) i`)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"big\"\nurl = %q\nevents = [\"public.orders\"]\n"+
		"when = \"action == 'create' && new.amount > 1000 && new.status == 'paid'\"\nretry_mode = \"test\"\n", rc.URL))
	startBackfill(t, h.app.AdminAddr(), "big")
	waitFor(t, "the backfill done", 30*time.Second, func() bool {
		v := backfillStatus(h.app.AdminAddr(), "big")
		return v != nil && v["state"] == "done"
	})
	// Rows 12, 14, ... 40 pass (amount over 1000 and paid): 15 of 40.
	waitFor(t, "the backfilled rows", 30*time.Second, func() bool { return len(rc.requests()) >= 15 })
	h.exec(`INSERT INTO orders VALUES (41, 5, 'paid'), (42, 5000, 'paid')`) // only 42 passes
	waitFor(t, "the change after the backfill", 30*time.Second, func() bool { return len(rc.requests()) >= 16 })
	waitFor(t, "the queue drained", 30*time.Second, func() bool { return h.app.queue.Stats("big").Queued == 0 })
	var ids []int
	for _, r := range rc.requests() {
		var body struct {
			Action string
			Data   struct{ ID int }
			Old    map[string]any
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("%s: %v", r.Body, err)
		}
		if body.Action != "create" || body.Old != nil {
			t.Errorf("a backfilled row as %s with old %v, want a create without old", body.Action, body.Old)
		}
		ids = append(ids, body.Data.ID)
	}
	slices.Sort(ids)
	var want []int
	for i := 12; i <= 40; i += 2 {
		want = append(want, i)
	}
	want = append(want, 42)
	if !slices.Equal(ids, want) {
		t.Errorf("rows sent %v, want %v", ids, want)
	}
}
