package deliver_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

// snapshotRows are create events of rows ids as a snapshot at point reads
// them.
func snapshotRows(at uint64, ids ...int64) *cdc.Tx {
	tx := &cdc.Tx{CommitLSN: at, CommitTime: commitTime}
	for i, id := range ids {
		idx := uint32(cdc.SnapshotIndex + i)
		tx.Events = append(tx.Events, cdc.Event{
			ID: cdc.EventID(at, idx), CommitLSN: at, Index: idx, CommitTime: commitTime,
			Schema: "public", Table: "employees", Action: cdc.ActionCreate,
			Data: map[string]any{"id": id, "email": "snapshot@x"}, Key: []string{"id"},
			Entity: "employee", EntityID: itoa(id),
		})
	}
	return tx
}

// TestBackfillOrder: a backfill's rows go to its webhook alone; a row
// whose entity had a change committed at or after the snapshot's point
// queued first is left out (that change is newer), one whose change
// committed before the point is sent after it, and a change queued after
// the rows goes out after them.
func TestBackfillOrder(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h", "other"})
	e.setHooks(t, hook("h", rc.URL+"/h"), hook("other", rc.URL+"/other"))

	b, err := e.q.StartBackfill("h", []byte("started"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(e.q.PendingBackfill()); got != "started" {
		t.Errorf("state after the start %q", got)
	}
	if _, err := e.q.StartBackfill("other", []byte("x")); !errors.Is(err, deliver.ErrBackfillRunning) {
		t.Fatalf("a second backfill: %v, want ErrBackfillRunning", err)
	}
	const at = 500
	e.write(t, txOf(400, event(400, 0, 6, "before@x"))) // in the snapshot already
	e.write(t, txOf(600, event(600, 0, 5, "after@x")))  // newer than the snapshot
	b.SetPoint(at)
	if err := e.q.WriteBackfill(t.Context(), b, snapshotRows(at, 1, 2, 3, 4, 5, 6, 7, 8), []byte("after row 8")); err != nil {
		t.Fatal(err)
	}
	e.write(t, txOf(700, event(700, 0, 3, "later@x"))) // after the rows
	waitFor(t, 10*time.Second, "the state stored with the rows", func() bool { return string(e.q.PendingBackfill()) == "after row 8" })
	if err := e.q.EndBackfill(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b.Sent() != 7 || b.Skipped() != 1 {
		t.Errorf("sent %d, skipped %d; want 7 and 1 (row 5)", b.Sent(), b.Skipped())
	}
	if st := e.q.PendingBackfill(); st != nil {
		t.Errorf("state after the end %q", st)
	}
	waitFor(t, 10*time.Second, "every delivery", func() bool { return rc.count() == 3+3+7 })

	perEntity := map[string][]string{} // h's events per entity id, in arrival order
	var other []string
	for _, r := range rc.requests() {
		ev := r.Header.Get("X-Walhook-Event") + "@" + r.Header.Get("Webhook-Id")
		if r.Path == "/other" {
			other = append(other, ev)
			continue
		}
		id := r.Header.Get("X-Walhook-Entity-Id")
		perEntity[id] = append(perEntity[id], ev)
	}
	if len(other) != 3 || slices.ContainsFunc(other, func(s string) bool { return strings.HasPrefix(s, "employee.create") }) {
		t.Errorf("the other webhook got %v, want the three changes and no row", other)
	}
	row := func(i int) string {
		return "employee.create@" + cdc.EventID(at, uint32(cdc.SnapshotIndex+i))
	}
	want := map[string][]string{
		"1": {row(0)}, "2": {row(1)}, "4": {row(3)}, "7": {row(6)}, "8": {row(7)},
		"3": {row(2), "employee.modify@" + cdc.EventID(700, 0)},
		"5": {"employee.modify@" + cdc.EventID(600, 0)},
		"6": {"employee.modify@" + cdc.EventID(400, 0), row(5)},
	}
	for id, evs := range want {
		if !slices.Equal(perEntity[id], evs) {
			t.Errorf("entity %s got %v, want %v", id, perEntity[id], evs)
		}
	}
	if _, err := e.q.StartBackfill("other", []byte("x")); err != nil {
		t.Errorf("a backfill after the end: %v", err)
	}
}

// TestBackfillAfterTruncate: a TRUNCATE of the table that commits at or
// after the snapshot's point, queued first, leaves out every row; one
// committed before the point leaves them in.
func TestBackfillAfterTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		commit uint64
		sent   int64
	}{{600, 0}, {400, 3}} {
		rc := newReceiver(t, nil)
		e := newEnv(t, []string{"h"})
		e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) { w.Actions = append(w.Actions, cdc.ActionTruncate) }))
		b, err := e.q.StartBackfill("h", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		const at = 500
		b.SetPoint(at)
		e.write(t, txOf(tc.commit, cdc.Event{
			ID: cdc.EventID(tc.commit, 0), CommitLSN: tc.commit, CommitTime: commitTime,
			Schema: "public", Table: "employees", Action: cdc.ActionTruncate, Entity: "employee",
		}))
		if err := e.q.WriteBackfill(t.Context(), b, snapshotRows(at, 1, 2, 3), nil); err != nil {
			t.Fatal(err)
		}
		if err := e.q.EndBackfill(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		if err := b.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		if b.Sent() != tc.sent || b.Skipped() != 3-tc.sent {
			t.Errorf("truncate committed at %d, the point at %d: sent %d, skipped %d", tc.commit, at, b.Sent(), b.Skipped())
		}
	}
}
