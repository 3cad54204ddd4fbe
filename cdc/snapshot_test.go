package cdc_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"walhook/cdc"
)

// TestReadSnapshot reads tables as of a temporary slot's point while the
// application writes: the rows are those committed before the point, in
// chunks, with the values and keys the stream gives the same rows; the
// stream's changes commit before the point exactly when they were made
// before the snapshot, and the reader passes the point.
func TestReadSnapshot(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn,
		`CREATE TABLE a (id int PRIMARY KEY, name text, at timestamptz, tags text[], total numeric, g int GENERATED ALWAYS AS (id * 2) STORED)`,
		`INSERT INTO a (id, name, at, tags, total) SELECT i, 'n' || i, '2026-11-29 10:00:00+00', '{x,y}', 1.50 FROM generate_series(1, 2500) i`,
		`CREATE TABLE f (x int, y text)`, `ALTER TABLE f REPLICA IDENTITY FULL`, `INSERT INTO f VALUES (1, 'one')`,
		`CREATE TABLE nokey (x int)`)
	r, sink := streamTables(t, dsn, name, "public.a", "public.f")
	// Streamed, and committed before the point: in the rows too.
	execSQL(t, dsn, `INSERT INTO a (id, name) VALUES (5000, 'n5000')`)

	var point uint64
	var chunks []*cdc.Tx
	var positions []cdc.SnapshotPosition
	rows, err := cdc.ReadSnapshot(t.Context(), dsn, []string{"public.a", "public.f"}, cdc.SnapshotPosition{}, func(_ context.Context, at uint64) error {
		point = at
		// Committed after the point: in the stream, not in the rows.
		execSQL(t, dsn, `INSERT INTO a (id, name, at, tags, total) VALUES (9999, 'n9999', '2026-11-29 10:00:00+00', '{x,y}', 1.50)`,
			`UPDATE a SET name = 'changed' WHERE id = 1`, `DELETE FROM a WHERE id = 2`)
		return nil
	}, func(tx *cdc.Tx, pos cdc.SnapshotPosition) error {
		chunks = append(chunks, tx)
		positions = append(positions, pos)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rows != 2502 || point == 0 {
		t.Fatalf("rows %d at %X, want 2502 at a point", rows, point)
	}
	byID := map[int64]cdc.Event{}
	var f []cdc.Event
	n := uint32(0)
	for _, tx := range chunks {
		if len(tx.Events) > 1000 || tx.EndLSN != 0 || tx.CommitLSN != point {
			t.Errorf("chunk of %d events, end %X, commit %X", len(tx.Events), tx.EndLSN, tx.CommitLSN)
		}
		for _, ev := range tx.Events {
			if ev.ID != cdc.EventID(point, cdc.SnapshotIndex+n) || ev.Action != cdc.ActionCreate || ev.CommitLSN != point {
				t.Fatalf("row %d: id %s, action %s", n, ev.ID, ev.Action)
			}
			n++
			if ev.Table == "f" {
				f = append(f, ev)
				continue
			}
			byID[ev.Data["id"].(int64)] = ev
		}
	}
	if len(byID) != 2501 || byID[1].Data["name"] != "n1" || byID[2].Data == nil || byID[5000].Data == nil {
		t.Errorf("rows of a: %d, row 1 %v, row 2 %v, row 5000 %v: want the 2501 as before the point", len(byID), byID[1].Data, byID[2].Data, byID[5000].Data)
	}
	if _, ok := byID[9999]; ok {
		t.Error("a row inserted after the point is in the snapshot")
	}
	if !slices.Equal(byID[3].Key, []string{"id"}) || len(f) != 1 || !slices.Equal(f[0].Key, []string{"x", "y"}) {
		t.Errorf("keys: a %v, f %v; want [id] and, under FULL without a primary key, [x y]", byID[3].Key, f)
	}

	// The stream: the inserts before the point, the changes after it.
	var live cdc.Event
	waitFor(t, 15*time.Second, func() bool {
		for _, ev := range sink.events() {
			if ev.Action == cdc.ActionCreate && ev.Data["id"] == int64(9999) {
				live = ev
			}
		}
		return live.ID != ""
	}, "the insert after the point")
	for _, ev := range sink.events() {
		before := ev.Data["id"] == int64(5000)
		if before != (ev.CommitLSN < point) {
			t.Errorf("the stream's %s of row %v commits at %X, the point is %X", ev.Action, ev.Data["id"], ev.CommitLSN, point)
		}
	}
	// The same values as the stream gives, generated columns left out as
	// pgoutput leaves them out.
	want := without(live.Data, "id", "name")
	if _, ok := byID[3].Data["g"]; ok || len(want) != 3 {
		t.Errorf("columns: snapshot %v, stream %v; want at, tags and total besides, no generated g", byID[3].Data, live.Data)
	}
	if got := without(byID[3].Data, "id", "name"); !reflect.DeepEqual(got, want) {
		t.Errorf("snapshot values %v, stream values %v", got, want)
	}
	waitFor(t, 15*time.Second, func() bool { return r.Passed() >= point }, "the reader past the point")

	// In key order, with the position after each chunk: a, in chunks of
	// 1000 by id, then f, which has no key to go on from.
	wantPos := []cdc.SnapshotPosition{{"public.a", []string{"1000"}}, {"public.a", []string{"2000"}}, {"public.a", []string{"5000"}}, {"public.f", nil}}
	if !reflect.DeepEqual(positions, wantPos) {
		t.Errorf("positions %v, want %v", positions, wantPos)
	}
	// Read again from the first position: what came after it.
	var ids []int64
	if _, err := cdc.ReadSnapshot(t.Context(), dsn, []string{"public.a", "public.f"}, positions[0], func(context.Context, uint64) error { return nil }, func(tx *cdc.Tx, _ cdc.SnapshotPosition) error {
		for _, ev := range tx.Events {
			if ev.Table == "a" {
				ids = append(ids, ev.Data["id"].(int64))
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The rows as they are now: 1 changed, 2 deleted, 9999 inserted.
	if len(ids) != 1502 || ids[0] != 1001 || ids[len(ids)-2] != 5000 || ids[len(ids)-1] != 9999 {
		t.Errorf("from %v: %d rows, %v ... %v", positions[0], len(ids), ids[:min(3, len(ids))], ids[max(0, len(ids)-3):])
	}

	_, err = cdc.ReadSnapshot(t.Context(), dsn, []string{"public.nokey"}, cdc.SnapshotPosition{}, func(context.Context, uint64) error { return nil }, func(*cdc.Tx, cdc.SnapshotPosition) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "public.nokey has no primary key or replica identity") {
		t.Errorf("a table without a key: %v", err)
	}
}

// without is m without the keys named.
func without(m map[string]any, keys ...string) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if !slices.Contains(keys, k) {
			out[k] = v
		}
	}
	return out
}

// TestSnapshotPointPassedWhenQuiet: with no change after the snapshot,
// the reader still reports passing its point soon (the snapshot writes a
// WAL record that makes the walsender report its position).
func TestSnapshotPointPassedWhenQuiet(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE a (id int PRIMARY KEY)`, `INSERT INTO a VALUES (1)`)
	cfg := baseConfig(dsn, name, "public.a")
	cfg.StatusInterval = 10 * time.Second // as in production
	r := startReader(t, cfg, &recSink{})
	waitReady(t, r)
	var point uint64
	if _, err := cdc.ReadSnapshot(t.Context(), dsn, []string{"public.a"}, cdc.SnapshotPosition{}, func(_ context.Context, at uint64) error {
		point = at
		return nil
	}, func(*cdc.Tx, cdc.SnapshotPosition) error { return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, func() bool { return r.Passed() >= point }, "the reader past the point on a quiet database")
}
