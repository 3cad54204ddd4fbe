package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/deliver/store"
	"walhook/deliver/store/storetest"
	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// cluster holds the stores of the PostgreSQL tests, one schema each.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	c, err := pgcluster.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "the store's tests need PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

var schemas atomic.Int64

// openPostgres opens the store in schema of the test cluster's database.
func openPostgres(t *testing.T, schema string, retention int) (*store.Postgres, error) {
	return store.OpenPostgres(t.Context(), store.PostgresOptions{
		DSN: cluster.DSN("postgres"), Schema: schema, Retention: retention,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// TestPostgres runs the suite every store must pass against the
// PostgreSQL store, each case in a schema of its own.
func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention int) storetest.Opener {
		schema := fmt.Sprint("walhook_test_", schemas.Add(1))
		return func(t *testing.T) deliver.Store {
			s, err := openPostgres(t, schema, retention)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// A store whose tables a newer walhook wrote is refused with a message that
// says so; a walhook of the same version opens it again without creating
// anything.
func TestPostgresNewerSchemaRefused(t *testing.T) {
	const schema = "walhook_newer"
	s, err := openPostgres(t, schema, 10)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = openPostgres(t, schema, 10); err != nil {
		t.Fatalf("opening the store a second time: %v", err)
	}
	s.Close()
	conn := testkit.Connect(t, cluster.DSN("postgres"))
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), `UPDATE walhook_newer.schema_version SET version = $1`, store.PostgresVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err = openPostgres(t, schema, 10)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("version %d, newer than this walhook knows (%d)", store.PostgresVersion+1, store.PostgresVersion)) {
		t.Fatalf("opening a newer store: %v, want a refusal naming both versions", err)
	}
}

// A store that cannot be reached fails the open at once, naming the DSN
// without its password.
func TestPostgresUnreachable(t *testing.T) {
	dsn := "postgres://walhook:s3cret-pw@" + testkit.FreeAddr(t) + "/app?connect_timeout=5"
	_, err := store.OpenPostgres(t.Context(), store.PostgresOptions{DSN: dsn})
	if err == nil {
		t.Fatal("an unreachable store opened")
	}
	if msg := err.Error(); strings.Contains(msg, "s3cret-pw") || !strings.Contains(msg, "postgres://walhook:xxxxx@") {
		t.Fatalf("error %q: want the DSN named with its password masked", msg)
	}
}

// TestMoveToPostgres: a bbolt store moved into PostgreSQL reads the same
// through the store's API: pending, failed and kept deliveries under their
// sequences with their attempts and events, counters, API webhooks,
// switch-offs, the durable position and a backfill's state; new
// deliveries come after the moved ones. A store that holds a queue is not
// moved into.
func TestMoveToPostgres(t *testing.T) {
	b, err := store.OpenBolt(t.TempDir(), store.BoltOptions{Retention: 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tx := &cdc.Tx{CommitLSN: 0x1000, EndLSN: 0x1001, CommitTime: time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)}
	var targets [][]string
	for i := range 4 {
		tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(0x1000, uint32(i)), CommitLSN: 0x1000, Index: uint32(i), CommitTime: tx.CommitTime,
			Schema: "public", Table: "orders", Action: cdc.ActionCreate, Entity: "orders", EntityID: fmt.Sprint(i),
			Data: map[string]any{"id": int64(i), "amount": json.Number("12.50")}})
		targets = append(targets, []string{"a", "b"})
	}
	queued, err := b.Commit(&store.Batch{Appends: []store.Append{{Tx: tx, Targets: targets}}})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC)
	var outcomes []store.Outcome
	for i, status := range map[int]string{0: store.StatusSuccess, 2: store.StatusFailed, 4: store.StatusPending} {
		rec := *queued[i].Record
		rec.Status = status
		rec.Attempts = []store.Attempt{{N: 1, At: at, Status: 500 - 300*boolInt(status == store.StatusSuccess), ResponseBody: "answer"}}
		outcomes = append(outcomes, store.Outcome{Webhook: queued[i].Webhook, Seq: queued[i].Seq, Record: &rec, Done: status == store.StatusSuccess})
	}
	counters := map[string]store.Counters{"a": {LatestStatus: 500, SuccessfulCalls: 1, TotalCalls: 3, LastAttemptAt: at}}
	if _, err := b.Commit(&store.Batch{Outcomes: outcomes, Counters: counters}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{
		func() error { return b.PutWebhook("api", []byte(`{"name":"api"}`)) },
		func() error { return b.SetSwitchedOff("b", "http://b/", true) },
		func() error { return b.SetBackfill([]byte(`{"state":1}`)) },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}

	p, err := openPostgres(t, "walhook_moved", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	moved, err := store.MoveToPostgres(t.Context(), b, p)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Events != 4 || moved.Deliveries != 8 || moved.Webhooks != 1 || moved.Counters != 1 || moved.SwitchedOff != 1 || moved.Durable != 0x1001 {
		t.Errorf("moved %v", moved)
	}
	for _, name := range []string{"a", "b"} {
		want, _ := b.Deliveries(name, 100, "")
		got, err := p.Deliveries(name, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d deliveries moved, want %d", name, len(got), len(want))
		}
		for i := range want {
			w, g := want[i], got[i]
			if g.Seq != w.Seq || !reflect.DeepEqual(g.Record, w.Record) || !reflect.DeepEqual(g.Event, w.Event) {
				t.Errorf("%s: moved delivery\n%+v %+v %+v\nwant\n%+v %+v %+v", name, g.Seq, g.Record, g.Event, w.Seq, w.Record, w.Event)
			}
		}
		wq, _ := b.Queue(name)
		if gq, err := p.Queue(name); err != nil || !reflect.DeepEqual(gq, wq) {
			t.Errorf("%s: queue %+v, %v; want %+v", name, gq, err, wq)
		}
		// A walhook delivering some partitions finds the moved pending
		// deliveries of those.
		for _, d := range want {
			if d.Record.Status != store.StatusPending {
				continue
			}
			w, err := p.Window(name, d.Seq, 1, 1<<store.PartOf(d.Record.EntityID))
			if err != nil || len(w.Pending) != 1 || w.Pending[0].Seq != d.Seq {
				t.Errorf("%s: the window of delivery %d's partition: %+v, %v", name, d.Seq, w, err)
			}
		}
	}
	if defs, _ := p.WebhookDefs(); string(defs["api"]) != `{"name":"api"}` {
		t.Errorf("API webhooks moved: %q", defs)
	}
	if off, _ := p.SwitchedOff("b", "http://b/"); !off {
		t.Error("the switch-off was not moved")
	}
	if st, _ := p.Backfill(); string(st) != `{"state":1}` {
		t.Errorf("backfill state moved: %q", st)
	}
	if p.Durable() != 0x1001 {
		t.Errorf("durable position %X, want 1001", p.Durable())
	}
	next, err := p.Commit(&store.Batch{Appends: []store.Append{{Tx: &cdc.Tx{CommitLSN: 0x2000, EndLSN: 0x2001, Events: []cdc.Event{{ID: cdc.EventID(0x2000, 0), Schema: "public", Table: "orders", Action: cdc.ActionCreate}}}, Targets: [][]string{{"a"}}}}})
	if err != nil || len(next) != 1 || next[0].Seq <= queued[len(queued)-1].Seq {
		t.Errorf("a delivery after the move: %+v, %v; want a sequence after %d", next, err, queued[len(queued)-1].Seq)
	}
	if _, err := store.MoveToPostgres(t.Context(), b, p); !errors.Is(err, store.ErrNotEmpty) {
		t.Errorf("moving into a store that holds a queue: %v, want ErrNotEmpty", err)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A store of version 1 (no search columns, no charts, no partitions) is
// migrated when opened, a chunk of rows at a time: its deliveries are found
// by entity id, event id and time queued, and in their partitions, and new
// ones are too.
func TestPostgresMigratesV1(t *testing.T) {
	const schema = "walhook_v1"
	s, err := openPostgres(t, schema, 10)
	if err != nil {
		t.Fatal(err)
	}
	tx := &cdc.Tx{CommitLSN: 0x1000, EndLSN: 0x1001}
	var targets [][]string
	for i := range 3 {
		tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(0x1000, uint32(i)), CommitLSN: 0x1000, Index: uint32(i),
			Schema: "public", Table: "orders", Action: cdc.ActionCreate, Entity: "orders", EntityID: fmt.Sprint(41 + i)})
		targets = append(targets, []string{"h"})
	}
	queued, err := s.Commit(&store.Batch{Appends: []store.Append{{Tx: tx, Targets: targets}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn := testkit.Connect(t, cluster.DSN("postgres"))
	defer conn.Close(t.Context())
	// Back to version 1's layout, the rows as version 1 wrote them.
	if _, err := conn.Exec(t.Context(), `ALTER TABLE walhook_v1.deliveries DROP COLUMN entity_id, DROP COLUMN event, DROP COLUMN created_at, DROP COLUMN part;
		DROP INDEX walhook_v1.deliveries_event_id; DROP TABLE walhook_v1.charts; DROP TABLE walhook_v1.leader;
		DROP TABLE walhook_v1.instances; DROP TABLE walhook_v1.partitions; UPDATE walhook_v1.schema_version SET version = 1`); err != nil {
		t.Fatal(err)
	}
	defer store.SetFillChunk(2)() // three deliveries: two chunks
	if s, err = openPostgres(t, schema, 10); err != nil {
		t.Fatalf("opening a version 1 store: %v", err)
	}
	defer s.Close()
	var version int
	if err := conn.QueryRow(t.Context(), `SELECT max(version) FROM walhook_v1.schema_version`).Scan(&version); err != nil || version != store.PostgresVersion {
		t.Errorf("schema version %d, %v after the migration; want %d", version, err, store.PostgresVersion)
	}
	for _, q := range []store.Query{{EntityID: "42"}, {EventID: queued[1].Record.EventID}, {Since: queued[1].Record.CreatedAt.Add(-time.Second), EntityID: "42"}} {
		p, err := s.Find("h", q)
		if err != nil || len(p.Deliveries) != 1 || p.Deliveries[0].Seq != queued[1].Seq {
			t.Errorf("Find(%+v) after the migration: %+v, %v; want delivery %d", q, p, err, queued[1].Seq)
		}
	}
	for _, q := range queued { // version 4: each pending delivery in its entity id's partition
		w, err := s.Window("h", q.Seq, 1, 1<<store.PartOf(q.Record.EntityID))
		if err != nil || len(w.Pending) != 1 || w.Pending[0].Seq != q.Seq {
			t.Errorf("the window of delivery %d's partition after the migration: %+v, %v", q.Seq, w, err)
		}
	}
	if _, err := s.Commit(&store.Batch{Charts: []store.ChartBucket{{Webhook: "h", Slot: 1, Bucket: store.Bucket{Start: 60, OK: 1}}}}); err != nil {
		t.Fatalf("a chart after the migration: %v", err)
	}
	if c, err := s.Chart("h"); err != nil || c[1].OK != 1 {
		t.Errorf("chart after the migration: %+v, %v", c[1], err)
	}
}

// TestPostgresFenced: a walhook that leads the store takes the next epoch;
// once another has taken a later one, the first's commits of events are
// refused with ErrFenced, so a leader that lost its lock cannot write over
// the next one's.
func TestPostgresFenced(t *testing.T) {
	open := func() *store.Postgres {
		s, err := store.OpenPostgres(t.Context(), store.PostgresOptions{
			DSN: cluster.DSN("postgres"), Schema: "walhook_fenced", Retention: 10, Lead: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	batch := func(lsn uint64) *store.Batch {
		return &store.Batch{Appends: []store.Append{{
			Tx:      &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, Events: []cdc.Event{{ID: cdc.EventID(lsn, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate}}},
			Targets: [][]string{{"h"}},
		}}}
	}
	old := open()
	queued, err := old.Commit(batch(100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Commit(&store.Batch{Outcomes: []store.Outcome{{Webhook: "h", Seq: queued[0].Seq, Record: &store.Record{Status: store.StatusFailed, EventID: queued[0].Record.EventID}}}}); err != nil {
		t.Fatal(err)
	}
	next := open()
	if _, err := old.Commit(batch(200)); !errors.Is(err, store.ErrFenced) {
		t.Errorf("the old leader's commit: %v, want ErrFenced", err)
	}
	// Outcomes and redeliveries are every walhook's to write, the leader's
	// or not: they are not fenced.
	if _, err := old.Redeliver("h", queued[0].Seq); err != nil {
		t.Errorf("the old leader's redelivery: %v, want it queued", err)
	}
	if _, err := next.Commit(batch(200)); err != nil {
		t.Errorf("the new leader's commit: %v", err)
	}
	if d := next.Durable(); d != 201 {
		t.Errorf("durable position %d, want 201", d)
	}
}

// TestPostgresReadWriteRole: a role that may only read and write the
// store's tables, in a schema a DBA made for it, opens the store: walhook
// runs no DDL when the tables are there.
func TestPostgresReadWriteRole(t *testing.T) {
	const schema = "walhook_rw"
	s, err := openPostgres(t, schema, 10)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	conn := testkit.Connect(t, cluster.DSN("postgres"))
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), `DROP ROLE IF EXISTS walhook_rw; CREATE ROLE walhook_rw LOGIN;
		REVOKE CREATE ON DATABASE postgres FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC;
		GRANT USAGE ON SCHEMA walhook_rw TO walhook_rw;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA walhook_rw TO walhook_rw;
		GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA walhook_rw TO walhook_rw`); err != nil {
		t.Fatal(err)
	}
	dsn := strings.Replace(cluster.DSN("postgres"), "postgres@", "walhook_rw@", 1)
	rw, err := store.OpenPostgres(t.Context(), store.PostgresOptions{DSN: dsn, Schema: schema, Retention: 10, Lead: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("a read-write role opening the store: %v", err)
	}
	defer rw.Close()
	if _, err := rw.Commit(&store.Batch{Appends: []store.Append{{
		Tx:      &cdc.Tx{CommitLSN: 10, EndLSN: 11, Events: []cdc.Event{{ID: cdc.EventID(10, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate}}},
		Targets: [][]string{{"h"}},
	}}}); err != nil {
		t.Fatalf("a read-write role's commit: %v", err)
	}
}

// TestPostgresWholeAfterChunks: a transaction stored in chunks before a
// crash can come again whole (an upgrade changed the chunk size): the
// events stored already are left out, and the commit does not fail.
func TestPostgresWholeAfterChunks(t *testing.T) {
	s, err := openPostgres(t, "walhook_whole", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	events := func(from, to int) ([]cdc.Event, [][]string) {
		var evs []cdc.Event
		var tg [][]string
		for i := from; i < to; i++ {
			evs = append(evs, cdc.Event{ID: cdc.EventID(150, uint32(i)), Index: uint32(i), Schema: "public", Table: "t", Action: cdc.ActionCreate, EntityID: fmt.Sprint(i)})
			tg = append(tg, []string{"h"})
		}
		return evs, tg
	}
	chunk, tg := events(0, 3)
	if _, err := s.Commit(&store.Batch{Appends: []store.Append{{Tx: &cdc.Tx{CommitLSN: 150, Events: chunk}, Targets: tg}}}); err != nil {
		t.Fatal(err)
	}
	whole, tg := events(0, 5)
	queued, err := s.Commit(&store.Batch{Appends: []store.Append{{Tx: &cdc.Tx{CommitLSN: 150, EndLSN: 160, Events: whole}, Targets: tg}}})
	if err != nil {
		t.Fatalf("the whole transaction after its chunk: %v", err)
	}
	if len(queued) != 2 || queued[0].Record.EventID != cdc.EventID(150, 3) {
		t.Errorf("queued %d deliveries (first %v), want the 2 events the chunk did not hold", len(queued), queued)
	}
	if q, _ := s.Queue("h"); q.Pending != 5 {
		t.Errorf("%d pending, want 5", q.Pending)
	}
	if s.Durable() != 160 {
		t.Errorf("durable position %d, want 160", s.Durable())
	}
}

// TestPostgresSharedCounts: two walhooks sharing a store each count their
// own attempts; the stored counters and chart buckets are the sums, the
// latest status the latest attempt's, whichever walhook stored last.
func TestPostgresSharedCounts(t *testing.T) {
	const schema = "walhook_shared_counts"
	a, err := openPostgres(t, schema, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := openPostgres(t, schema, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	start := at.Unix() / 60 * 60
	for _, s := range []*store.Postgres{a, b} { // as each dispatcher loads them
		if _, err := s.Queue("h"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Chart("h"); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(s *store.Postgres, c store.Counters, bk store.Bucket) {
		t.Helper()
		if _, err := s.Commit(&store.Batch{Counters: map[string]store.Counters{"h": c}, Charts: []store.ChartBucket{{Webhook: "h", Slot: 3, Bucket: bk}}}); err != nil {
			t.Fatal(err)
		}
	}
	// a: 3 calls, 2 ok; b: 5 calls, 5 ok, later; a again: one more, failed, latest.
	commit(a, store.Counters{LatestStatus: 200, SuccessfulCalls: 2, TotalCalls: 3, LastAttemptAt: at}, store.Bucket{Start: start, OK: 2, Failed: 1, Depth: 7})
	commit(b, store.Counters{LatestStatus: 201, SuccessfulCalls: 5, TotalCalls: 5, LastAttemptAt: at.Add(time.Second)}, store.Bucket{Start: start, OK: 5, Depth: 4})
	commit(a, store.Counters{LatestStatus: 503, SuccessfulCalls: 2, TotalCalls: 4, LastAttemptAt: at.Add(2 * time.Second)}, store.Bucket{Start: start, OK: 2, Failed: 2, Depth: 9})
	q, err := b.Queue("h")
	if err != nil {
		t.Fatal(err)
	}
	want := store.Counters{LatestStatus: 503, SuccessfulCalls: 7, TotalCalls: 9, LastAttemptAt: at.Add(2 * time.Second)}
	if !q.Counters.LastAttemptAt.Equal(want.LastAttemptAt) || q.Counters.LatestStatus != want.LatestStatus ||
		q.Counters.SuccessfulCalls != want.SuccessfulCalls || q.Counters.TotalCalls != want.TotalCalls {
		t.Errorf("stored counters %+v, want %+v", q.Counters, want)
	}
	c, err := a.Chart("h")
	if err != nil {
		t.Fatal(err)
	}
	if bk := c[3]; bk.Start != start || bk.OK != 7 || bk.Failed != 2 || bk.Depth != 9 {
		t.Errorf("stored bucket %+v, want start %d, 7 ok, 2 failed, depth 9 (the latest)", bk, start)
	}
	// The slot's next interval replaces the bucket; a late write of the
	// old interval does not bring it back.
	commit(b, store.Counters{LatestStatus: 201, SuccessfulCalls: 6, TotalCalls: 6, LastAttemptAt: at.Add(time.Hour)}, store.Bucket{Start: start + 3600, OK: 1, Depth: 1})
	commit(a, store.Counters{LatestStatus: 503, SuccessfulCalls: 2, TotalCalls: 5, LastAttemptAt: at.Add(3 * time.Second)}, store.Bucket{Start: start, OK: 2, Failed: 3, Depth: 9})
	if c, err = b.Chart("h"); err != nil {
		t.Fatal(err)
	}
	if bk := c[3]; bk.Start != start+3600 || bk.OK != 1 || bk.Failed != 0 {
		t.Errorf("bucket after the next interval and a late write: %+v, want the next interval's, 1 ok", bk)
	}
	if q, _ := a.Queue("h"); q.Counters.TotalCalls != 11 || q.Counters.LatestStatus != 201 {
		t.Errorf("counters after the late write %+v: want 11 calls, the latest status 201 (b's, an hour later)", q.Counters)
	}
}

// TestPostgresFindBounded: a search without an index for its filters
// reads a bounded number of deliveries per call and says where to go on;
// paging from there finds every match, and a search that matches nothing
// ends.
func TestPostgresFindBounded(t *testing.T) {
	defer store.SetFindScan(5)()
	s, err := openPostgres(t, "walhook_find_bounded", 100)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tx := &cdc.Tx{CommitLSN: 0x2000, EndLSN: 0x2001}
	var targets [][]string
	for i := range 12 {
		action := cdc.ActionCreate
		if i%3 == 0 {
			action = cdc.ActionDelete
		}
		tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(0x2000, uint32(i)), CommitLSN: 0x2000, Index: uint32(i),
			Schema: "public", Table: "orders", Action: action, Entity: "orders", EntityID: fmt.Sprint(i)})
		targets = append(targets, []string{"h"})
	}
	if _, err := s.Commit(&store.Batch{Appends: []store.Append{{Tx: tx, Targets: targets}}}); err != nil {
		t.Fatal(err)
	}
	for action, want := range map[string]int{cdc.ActionDelete: 4, cdc.ActionModify: 0} {
		found, calls := 0, 0
		for before := uint64(0); ; calls++ {
			p, err := s.Find("h", store.Query{Action: action, Before: before})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Deliveries) > 5 {
				t.Errorf("%s: one call returned %d deliveries, more than it may read", action, len(p.Deliveries))
			}
			found += len(p.Deliveries)
			if p.Next == 0 {
				break
			}
			if calls > 5 {
				t.Fatalf("%s: still paging after %d calls", action, calls)
			}
			before = p.Next
		}
		if found != want || calls != 2 {
			t.Errorf("%s: %d found in %d calls after the first, want %d in 2 (12 deliveries read 5 at a time)", action, found, calls, want)
		}
	}
}

// TestPostgresPruneStragglers: a prune deletes above the previous one's
// bound; a success that completed below it (a retry) is deleted by the
// next prune that sweeps from the first sequence.
func TestPostgresPruneStragglers(t *testing.T) {
	defer store.SetPruneSweep(2)()
	s, err := openPostgres(t, "walhook_prune_stragglers", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tx := &cdc.Tx{CommitLSN: 0x3000, EndLSN: 0x3001}
	var targets [][]string
	for i := range 12 {
		tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(0x3000, uint32(i)), CommitLSN: 0x3000, Index: uint32(i),
			Schema: "public", Table: "orders", Action: cdc.ActionCreate, Entity: "orders", EntityID: fmt.Sprint(i)})
		targets = append(targets, []string{"h"})
	}
	queued, err := s.Commit(&store.Batch{Appends: []store.Append{{Tx: tx, Targets: targets}}})
	if err != nil {
		t.Fatal(err)
	}
	succeed := func(idx ...int) {
		t.Helper()
		var outs []store.Outcome
		for _, i := range idx {
			rec := *queued[i].Record
			rec.Status = store.StatusSuccess
			outs = append(outs, store.Outcome{Webhook: "h", Seq: queued[i].Seq, Record: &rec, Done: true})
		}
		if _, err := s.Commit(&store.Batch{Outcomes: outs}); err != nil {
			t.Fatal(err)
		}
	}
	kept := func() []uint64 {
		t.Helper()
		ds, err := s.Deliveries("h", 100, store.StatusSuccess)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, d := range ds {
			seqs = append(seqs, d.Seq)
		}
		return seqs
	}
	// One success a commit, each commit a prune; every second one sweeps.
	for _, i := range []int{0, 2, 3, 4, 5, 6, 7} {
		succeed(i)
	}
	succeed(1) // a retry's success, below the bound: this prune (not a sweep) does not reach it
	if got := kept(); len(got) != 4 || !slices.Contains(got, queued[1].Seq) {
		t.Errorf("successes after the straggler: %v, want the 3 newest and the straggler %d", got, queued[1].Seq)
	}
	succeed(8) // a sweep
	want := []uint64{queued[8].Seq, queued[7].Seq, queued[6].Seq}
	if got := kept(); !slices.Equal(got, want) {
		t.Errorf("successes after a sweep: %v, want %v (the retention's 3 newest)", got, want)
	}
}
