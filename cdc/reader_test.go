package cdc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"walhook/cdc"
	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

func TestValueTypes(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn,
		`CREATE TYPE mood AS ENUM ('sad', 'happy')`,
		`CREATE TABLE types (
			id int4 PRIMARY KEY, i2 int2, i8 int8,
			f4 float4, f8 float8, fnan float8, finf float8, fninf float8, f4nan float4,
			n numeric, b bool, bf bool, tx text, vc varchar(10), u uuid, j json, jb jsonb, by bytea,
			d date, ts timestamp, tstz timestamptz, ia int[], ta text[], iaa int[], m mood, ma mood[], tsa timestamptz[], o oid, nul text, nuli int8)`)
	_, sink := streamTables(t, dsn, name, "public.types")
	execSQL(t, dsn, `INSERT INTO types VALUES (
		7, -2, 9007199254740993,
		3.14, 2.5e-7, 'NaN', 'Infinity', '-Infinity', 'NaN',
		12345.678900, true, false, 'héllo "wörld"', 'v', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
		'{"a": [1, 2]}', '{"b": 1, "a": "x"}', '\x00ff10',
		'2026-11-29', '2026-11-29 01:02:03.456789', '2026-11-29 03:02:03.5+02',
		'{1,NULL,3}', '{"a b","c\"d",NULL,"NULL",""}', '{{1,2},{3,4}}', 'happy', '{happy,NULL,sad}',
		'{"2026-11-29 03:02:03.5+02",infinity}', 42, NULL, NULL)`)
	ev := sink.waitEvents(t, 1)[0]

	tests := []struct {
		col  string
		want any
	}{
		{"id", int64(7)},
		{"i2", int64(-2)},
		{"i8", int64(9007199254740993)},
		{"f4", 3.14},
		{"f8", 2.5e-7},
		{"fnan", "NaN"},
		{"finf", "Infinity"},
		{"fninf", "-Infinity"},
		{"f4nan", "NaN"},
		{"n", "12345.678900"},
		{"b", true},
		{"bf", false},
		{"tx", `héllo "wörld"`},
		{"vc", "v"},
		{"u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
		{"j", json.RawMessage(`{"a": [1, 2]}`)},
		{"jb", json.RawMessage(`{"a": "x", "b": 1}`)},
		{"by", "AP8Q"},
		{"d", "2026-11-29"},
		{"ts", "2026-11-29T01:02:03.456789"},
		{"tstz", "2026-11-29T01:02:03.5Z"},
		{"ia", []any{int64(1), nil, int64(3)}},
		{"ta", []any{"a b", `c"d`, nil, "NULL", ""}},
		{"iaa", []any{[]any{int64(1), int64(2)}, []any{int64(3), int64(4)}}},
		{"m", "happy"},
		// An array of a type of this database (its OID is not pgx's), and
		// an element that is not a timestamp keeping its text form while
		// the others are converted.
		{"ma", []any{"happy", nil, "sad"}},
		{"tsa", []any{"2026-11-29T01:02:03.5Z", "infinity"}},
		{"o", int64(42)},
		{"nul", nil},
		{"nuli", nil},
	}
	for _, tt := range tests {
		got, ok := ev.Data[tt.col]
		if !ok {
			t.Errorf("%s: missing from Data", tt.col)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %#v (%T), want %#v (%T)", tt.col, got, got, tt.want, tt.want)
		}
	}
	if len(ev.Data) != len(tests) {
		t.Errorf("Data has %d columns, want %d", len(ev.Data), len(tests))
	}
	// Everything must encode as JSON.
	if _, err := json.Marshal(ev); err != nil {
		t.Errorf("json.Marshal(event): %v", err)
	}
	if ev.Schema != "public" || ev.Table != "types" || ev.Action != cdc.ActionCreate || !slices.Equal(ev.Key, []string{"id"}) {
		t.Errorf("event header = %s.%s %s key %v", ev.Schema, ev.Table, ev.Action, ev.Key)
	}
}

// bigText is an incompressible value well over the TOAST threshold.
const bigText = `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i)`

func TestRowChanges(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn,
		`CREATE TABLE dflt (id int PRIMARY KEY, v text, big text)`,
		`CREATE TABLE full_ (id int PRIMARY KEY, v text, big text, n int)`,
		`ALTER TABLE full_ REPLICA IDENTITY FULL`)
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	var big string
	if err := conn.QueryRow(ctx, "SELECT "+bigText).Scan(&big); err != nil {
		t.Fatal(err)
	}

	_, sink := streamTables(t, dsn, name, "public.dflt", "public.full_")
	execSQL(t, dsn,
		`INSERT INTO dflt VALUES (1, 'a', `+bigText+`)`,
		`UPDATE dflt SET v = 'b' WHERE id = 1`,
		`UPDATE dflt SET id = 2 WHERE id = 1`,
		`DELETE FROM dflt WHERE id = 2`,
		`INSERT INTO full_ VALUES (1, 'a', `+bigText+`, 0)`,
		`UPDATE full_ SET n = 1 WHERE id = 1`,
		`UPDATE full_ SET v = NULL, n = 2 WHERE id = 1`,
		`DELETE FROM full_ WHERE id = 1`)
	evs := sink.waitEvents(t, 8)

	type want struct {
		action  string
		data    map[string]any
		old     map[string]any
		changed []string
	}
	fullRow := func(v any, n int64) map[string]any {
		return map[string]any{"id": int64(1), "v": v, "big": big, "n": n}
	}
	wants := []want{
		{cdc.ActionCreate, map[string]any{"id": int64(1), "v": "a", "big": big}, nil, nil},
		// DEFAULT, key unchanged: no old tuple; the untouched TOAST value is
		// not sent and there is no old row to take it from.
		{cdc.ActionModify, map[string]any{"id": int64(1), "v": "b"}, nil, nil},
		// DEFAULT, key changed: old carries the key only.
		{cdc.ActionModify, map[string]any{"id": int64(2), "v": "b"}, map[string]any{"id": int64(1)}, nil},
		{cdc.ActionDelete, map[string]any{"id": int64(2)}, map[string]any{"id": int64(2)}, nil},
		{cdc.ActionCreate, fullRow("a", 0), nil, nil},
		// FULL: the whole old row; the unchanged TOAST value comes from it.
		{cdc.ActionModify, fullRow("a", 1), fullRow("a", 0), []string{"n"}},
		{cdc.ActionModify, fullRow(nil, 2), fullRow("a", 1), []string{"v", "n"}},
		{cdc.ActionDelete, fullRow(nil, 2), fullRow(nil, 2), nil},
	}
	for i, w := range wants {
		got := evs[i]
		if got.Action != w.action {
			t.Errorf("event %d: action %s, want %s", i, got.Action, w.action)
		}
		if !reflect.DeepEqual(got.Data, w.data) {
			t.Errorf("event %d (%s %s): data\n got %v\nwant %v", i, got.Table, got.Action, abbrev(got.Data), abbrev(w.data))
		}
		if !reflect.DeepEqual(got.Old, w.old) {
			t.Errorf("event %d (%s %s): old\n got %v\nwant %v", i, got.Table, got.Action, abbrev(got.Old), abbrev(w.old))
		}
		if !slices.Equal(got.Changed, w.changed) {
			t.Errorf("event %d (%s %s): changed %v, want %v", i, got.Table, got.Action, got.Changed, w.changed)
		}
		if !slices.Equal(got.Key, []string{"id"}) {
			t.Errorf("event %d: key %v, want [id]", i, got.Key)
		}
	}
}

// abbrev shortens long strings so a failure message stays readable.
func abbrev(m map[string]any) string {
	if m == nil {
		return "nil"
	}
	var parts []string
	for k, v := range m {
		if s, ok := v.(string); ok && len(s) > 20 {
			v = fmt.Sprintf("%s…(%d)", s[:8], len(s))
		}
		parts = append(parts, fmt.Sprintf("%s=%#v", k, v))
	}
	slices.Sort(parts)
	return "{" + strings.Join(parts, " ") + "}"
}

func TestEventIDs(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE items (id int PRIMARY KEY)`)
	_, sink := streamTables(t, dsn, name, "public.items")
	before := time.Now()
	execSQL(t, dsn, `INSERT INTO items SELECT generate_series(1, 5)`, `INSERT INTO items VALUES (6)`)
	sink.waitEvents(t, 6)
	txs := sink.snapshot()
	if len(txs) != 2 {
		t.Fatalf("got %d transactions, want 2", len(txs))
	}
	idRE := regexp.MustCompile(`^[0-9A-F]{16}-[0-9A-F]{8}$`)
	for _, tx := range txs {
		if tx.EndLSN <= tx.CommitLSN {
			t.Errorf("EndLSN %X <= CommitLSN %X", tx.EndLSN, tx.CommitLSN)
		}
		if d := tx.CommitTime.Sub(before); d < -time.Second || d > time.Minute {
			t.Errorf("CommitTime %v is %v from the insert", tx.CommitTime, d)
		}
		if tx.CommitTime.Location() != time.UTC {
			t.Errorf("CommitTime %v is not UTC", tx.CommitTime)
		}
		for i, ev := range tx.Events {
			want := fmt.Sprintf("%016X-%08X", tx.CommitLSN, i)
			if ev.ID != want || !idRE.MatchString(ev.ID) {
				t.Errorf("event %d: ID %q, want %q", i, ev.ID, want)
			}
			if ev.Index != uint32(i) || ev.CommitLSN != tx.CommitLSN || !ev.CommitTime.Equal(tx.CommitTime) {
				t.Errorf("event %d: index %d lsn %X time %v", i, ev.Index, ev.CommitLSN, ev.CommitTime)
			}
			if ev.Data["id"] != int64(i+1) && len(tx.Events) == 5 {
				t.Errorf("event %d: id %v, want %d", i, ev.Data["id"], i+1)
			}
		}
	}
	if len(txs[0].Events) != 5 || txs[1].CommitLSN <= txs[0].CommitLSN {
		t.Errorf("transactions: %d events, commit LSNs %X then %X", len(txs[0].Events), txs[0].CommitLSN, txs[1].CommitLSN)
	}
}

func TestConfirmation(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE watched (id int PRIMARY KEY)`, `CREATE TABLE other (id int PRIMARY KEY)`)
	cfg := baseConfig(dsn, name, "public.watched")
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg

	// Phase 1: nothing is ever durable.
	sink1 := &recSink{}
	r1 := startReader(t, cfg, sink1)
	waitReady(t, r1)
	execSQL(t, dsn, `INSERT INTO watched VALUES (1)`, `INSERT INTO watched VALUES (2)`, `INSERT INTO watched VALUES (3)`)
	sink1.waitEvents(t, 3)
	first := sink1.snapshot()[0]
	// Unpublished writes make the server send keepalives past them; they
	// must not be confirmed while written transactions are not durable.
	for i := range 5 {
		execSQL(t, dsn, fmt.Sprintf(`INSERT INTO other VALUES (%d)`, i))
	}
	deadline := time.Now().Add(time.Second) // ten status intervals
	for time.Now().Before(deadline) {
		if c := confirmedFlush(t, dsn, name); c >= first.CommitLSN {
			t.Fatalf("confirmed_flush_lsn %X passed the first undurable commit %X", c, first.CommitLSN)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r1.stop()

	// Phase 2: a new reader gets the same transactions again, same ids.
	cfg.Registerer = prometheus.NewRegistry()
	sink := &recSink{}
	r := startReader(t, cfg, sink)
	waitReady(t, r)
	sink.waitEvents(t, 3)
	txs := sink.snapshot()
	for i, tx := range txs[:3] {
		if want := sink1.snapshot()[i]; tx.Events[0].ID != want.Events[0].ID {
			t.Errorf("replayed tx %d: id %s, want %s", i, tx.Events[0].ID, want.Events[0].ID)
		}
	}

	// Durable up to the second transaction: confirmed exactly there.
	sink.durable.Store(txs[1].EndLSN)
	waitFor(t, 10*time.Second, func() bool { return confirmedFlush(t, dsn, name) == txs[1].EndLSN }, "confirmed_flush_lsn at tx 2's end")
	if c := confirmedFlush(t, dsn, name); c >= txs[2].CommitLSN {
		t.Errorf("confirmed_flush_lsn %X passed undurable commit %X", c, txs[2].CommitLSN)
	}
	if got := r.ConfirmedLSN(); got != txs[1].EndLSN {
		t.Errorf("ConfirmedLSN() = %X, want %X", got, txs[1].EndLSN)
	}

	// Everything durable, then only unpublished writes: the slot advances
	// past them.
	sink.durable.Store(txs[2].EndLSN)
	waitFor(t, 10*time.Second, func() bool { return confirmedFlush(t, dsn, name) >= txs[2].EndLSN }, "confirmed_flush_lsn at tx 3's end")
	quietFrom := queryLSN(t, dsn, `SELECT pg_current_wal_insert_lsn()::text`)
	execSQL(t, dsn, `INSERT INTO other VALUES (100)`)
	waitFor(t, 10*time.Second, func() bool { return confirmedFlush(t, dsn, name) > quietFrom }, "confirmed_flush_lsn past unpublished writes")

	// The gauge follows what was sent.
	waitFor(t, 5*time.Second, func() bool {
		return gaugeValue(t, cfg.Registerer.(*prometheus.Registry), "walhook_confirmed_flush_lsn") == float64(r.ConfirmedLSN())
	}, "walhook_confirmed_flush_lsn gauge")
	if gaugeValue(t, cfg.Registerer.(*prometheus.Registry), "walhook_confirmed_flush_lsn") <= float64(quietFrom) {
		t.Errorf("walhook_confirmed_flush_lsn not past %X", quietFrom)
	}
	if lag := gaugeValue(t, cfg.Registerer.(*prometheus.Registry), "walhook_replication_lag_bytes"); lag < 0 {
		t.Errorf("walhook_replication_lag_bytes = %v", lag)
	}
	if len(sink.events()) != 3 {
		t.Errorf("got %d events, want 3 (writes to an unpublished table leaked)", len(sink.events()))
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// waitNotReady watches for Ready to drop, however briefly.
func waitNotReady(t *testing.T, r *running) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for r.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("reader stayed ready")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestReconnect(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE items (id int PRIMARY KEY)`)
	r, sink := streamTables(t, dsn, name, "public.items")
	execSQL(t, dsn, `INSERT INTO items VALUES (1)`)
	sink.waitEvents(t, 1)
	sink.durable.Store(sink.snapshot()[0].EndLSN)

	t.Run("terminate walsender", func(t *testing.T) {
		execSQL(t, dsn, fmt.Sprintf(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '%s'`, name))
		waitNotReady(t, r)
		waitReady(t, r)
		execSQL(t, dsn, `INSERT INTO items VALUES (2)`)
		// Row 1 may arrive again first if its confirmation had not been
		// sent yet; row 2 must arrive.
		waitFor(t, 15*time.Second, func() bool {
			evs := sink.events()
			return evs[len(evs)-1].Data["id"] == int64(2)
		}, "the insert after the reconnect")
		if !strings.Contains(r.logs.String(), "replication connection failed") {
			t.Errorf("the lost connection was not logged")
		}
	})

	t.Run("restart server", func(t *testing.T) {
		ctx := context.Background()
		if err := cluster.StopServer(ctx, "immediate"); err != nil {
			t.Fatal(err)
		}
		waitNotReady(t, r)
		if err := cluster.StartServer(ctx); err != nil {
			t.Fatal(err)
		}
		waitReady(t, r)
		execSQL(t, dsn, `INSERT INTO items VALUES (3)`)
		waitFor(t, 15*time.Second, func() bool {
			evs := sink.events()
			return evs[len(evs)-1].Data["id"] == int64(3)
		}, "the insert after the restart")
		// Nothing was lost: every id arrived at least once.
		seen := map[any]bool{}
		for _, ev := range sink.events() {
			seen[ev.Data["id"]] = true
		}
		for _, id := range []int64{1, 2, 3} {
			if !seen[id] {
				t.Errorf("row %d never arrived", id)
			}
		}
	})
}

func TestTruncate(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE b (id int PRIMARY KEY)`)
	_, sink := streamTables(t, dsn, name, "public.a", "public.b")
	execSQL(t, dsn, `INSERT INTO a VALUES (1)`, `TRUNCATE a, b`)
	evs := sink.waitEvents(t, 3)
	txs := sink.snapshot()
	if len(txs) != 2 || len(txs[1].Events) != 2 {
		t.Fatalf("got %d transactions, want the truncate as one tx of 2 events", len(txs))
	}
	var tables []string
	for _, ev := range evs[1:] {
		if ev.Action != cdc.ActionTruncate || ev.Data != nil || ev.Old != nil {
			t.Errorf("truncate event: action %s data %v old %v", ev.Action, ev.Data, ev.Old)
		}
		tables = append(tables, ev.QualifiedTable())
	}
	slices.Sort(tables)
	if !slices.Equal(tables, []string{"public.a", "public.b"}) {
		t.Errorf("truncated tables %v, want public.a and public.b", tables)
	}
}

func publicationTables(t *testing.T, dsn, pub string) []string {
	t.Helper()
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestSetTables(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE a (id int PRIMARY KEY)`, `CREATE TABLE "B b" (id int PRIMARY KEY)`, `CREATE TABLE nokey (v int)`)
	r, sink := streamTables(t, dsn, name, "public.a")
	if got := publicationTables(t, dsn, name); !slices.Equal(got, []string{"public.a"}) {
		t.Fatalf("publication covers %v, want [public.a]", got)
	}
	r.SetTables([]string{"public.a", "public.B b"}, false)
	if got := publicationTables(t, dsn, name); !slices.Equal(got, []string{"public.B b", "public.a"}) {
		t.Fatalf("after SetTables the publication covers %v", got)
	}
	execSQL(t, dsn, `INSERT INTO "B b" VALUES (1)`)
	ev := sink.waitEvents(t, 1)[0]
	if ev.QualifiedTable() != "public.B b" {
		t.Errorf("event from %s, want public.B b", ev.QualifiedTable())
	}

	// A table without a key is not published: the application's UPDATE
	// on it would fail. The others are.
	want := []string{"public.a"}
	r.SetTables([]string{"public.a", "public.nokey"}, false)
	if got := publicationTables(t, dsn, name); !slices.Equal(got, want) {
		t.Errorf("publication covers %v, want %v", got, want)
	}
	if msg := `table public.nokey has no primary key or replica identity: once published, the application's UPDATE and DELETE on it would fail, so walhook does not publish it; add a primary key, or: ALTER TABLE \"public\".\"nokey\" REPLICA IDENTITY FULL;`; !strings.Contains(r.logs.String(), msg) {
		t.Errorf("no error about public.nokey; logs:\n%s", r.logs.String())
	}
	execSQL(t, dsn, `INSERT INTO nokey VALUES (1)`, `UPDATE nokey SET v = 2`, `DELETE FROM nokey`)

	// Nor does FOR ALL TABLES, while such a table exists.
	r.SetTables(nil, true)
	if got := publicationTables(t, dsn, name); !slices.Equal(got, want) {
		t.Errorf("publication covers %v, want %v", got, want)
	}
	if msg := `a webhook wants every table (\"*\"), but FOR ALL TABLES would make the application's UPDATE and DELETE fail on the 1 tables without a primary key or replica identity`; !strings.Contains(r.logs.String(), msg) {
		t.Errorf("no error about FOR ALL TABLES; logs:\n%s", r.logs.String())
	}
	execSQL(t, dsn, `UPDATE nokey SET v = 3`)

	// All tables, once every table can be published.
	execSQL(t, dsn, `ALTER TABLE nokey REPLICA IDENTITY FULL`)
	r.SetTables(nil, true)
	if got := publicationTables(t, dsn, name); len(got) != 3 {
		t.Errorf("FOR ALL TABLES publication covers %v", got)
	}
	execSQL(t, dsn, `INSERT INTO a VALUES (5)`)
	waitFor(t, 10*time.Second, func() bool {
		evs := sink.events()
		return evs[len(evs)-1].QualifiedTable() == "public.a"
	}, "the insert into a under FOR ALL TABLES")
}

// TestRefusedTables: a table the publication cannot take (missing,
// UNLOGGED, or without a primary key or replica identity, whose UPDATE the
// application could then no longer run) is left out with an error saying
// what to run; the other tables stream all the same, and once the table is
// fixed it is published without a restart.
func TestRefusedTables(t *testing.T) {
	for _, tc := range []struct {
		name, setup, fix, msg string
	}{
		{"missing", ``, `CREATE TABLE t (id int PRIMARY KEY)`, `table public.t does not exist`},
		{"unlogged", `CREATE UNLOGGED TABLE t (id int PRIMARY KEY)`, `ALTER TABLE t SET LOGGED`,
			`table public.t is UNLOGGED: PostgreSQL writes none of its changes to the WAL, so it cannot be published (ALTER TABLE \"public\".\"t\" SET LOGGED)`},
		{"no identity", `CREATE TABLE t (id int)`, `ALTER TABLE t REPLICA IDENTITY FULL`,
			`table public.t has no primary key or replica identity: once published, the application's UPDATE and DELETE on it would fail, so walhook does not publish it; add a primary key, or: ALTER TABLE \"public\".\"t\" REPLICA IDENTITY FULL;`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn, name := newDB(t)
			execSQL(t, dsn, `CREATE TABLE a (id int PRIMARY KEY)`)
			if tc.setup != "" {
				execSQL(t, dsn, tc.setup)
			}
			r, sink := streamTables(t, dsn, name, "public.a", "public.t")
			if !strings.Contains(r.logs.String(), tc.msg) {
				t.Errorf("the refused table is not logged with %q:\n%s", tc.msg, r.logs.String())
			}
			if got := r.Refused(); !strings.Contains(got, strings.ReplaceAll(tc.msg, `\"`, `"`)) {
				t.Errorf("Refused() = %q, want it to say %q", got, tc.msg)
			}
			if got := publicationTables(t, dsn, name); !slices.Equal(got, []string{"public.a"}) {
				t.Errorf("publication covers %v, want [public.a]", got)
			}
			execSQL(t, dsn, `INSERT INTO a VALUES (1)`)
			if ev := sink.waitEvents(t, 1)[0]; ev.Table != "a" {
				t.Errorf("event of %s, want a", ev.Table)
			}
			if tc.setup != "" {
				execSQL(t, dsn, `INSERT INTO t VALUES (1)`, `UPDATE t SET id = 2`, `DELETE FROM t`) // the application is unharmed
			}

			execSQL(t, dsn, tc.fix)
			waitFor(t, 30*time.Second, func() bool { return slices.Contains(publicationTables(t, dsn, name), "public.t") },
				"the publication to take the fixed table")
			execSQL(t, dsn, `INSERT INTO t VALUES (3)`)
			if ev := sink.waitEvents(t, 2)[1]; ev.Table != "t" || ev.Data["id"] != int64(3) {
				t.Errorf("event of %s %v, want t id=3", ev.Table, ev.Data)
			}
			waitFor(t, 10*time.Second, func() bool { return r.Refused() == "" }, "Refused() to be empty after the fix")
		})
	}
}

func TestUnmanagedPublicationMissing(t *testing.T) {
	dsn, name := newDB(t)
	cfg := baseConfig(dsn, name)
	cfg.ManagePublication = false
	r := startReader(t, cfg, &recSink{})
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(r.logs.String(), "publication missing")
	}, "the missing publication logged")
	if r.Ready() {
		t.Fatal("ready without its publication")
	}
	execSQL(t, dsn, `CREATE PUBLICATION `+name+` FOR ALL TABLES`)
	waitReady(t, r)
}

func TestSlotTakeover(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE items (id int PRIMARY KEY)`)
	first := startReader(t, baseConfig(dsn, name, "public.items"), &recSink{})
	waitReady(t, first)
	sink := &recSink{}
	second := startReader(t, baseConfig(dsn, name, "public.items"), sink)
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(second.logs.String(), "slot in use by another walhook, waiting")
	}, "the second reader waiting")
	if second.Ready() {
		t.Fatal("second reader streams while the first holds the slot")
	}
	first.stop()
	waitReady(t, second)
	execSQL(t, dsn, `INSERT INTO items VALUES (1)`)
	if ev := sink.waitEvents(t, 1)[0]; ev.Data["id"] != int64(1) {
		t.Errorf("second reader got %v", ev.Data)
	}
}

func TestNewReaderRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  cdc.Config
	}{
		{"slot with capitals", cdc.Config{DSN: "postgres://x@127.0.0.1/db", Slot: "Walhook", Publication: "p"}},
		{"no publication", cdc.Config{DSN: "postgres://x@127.0.0.1/db", Slot: "walhook"}},
		{"bad table", cdc.Config{DSN: "postgres://x@127.0.0.1/db", Slot: "walhook", Publication: "p", Tables: []string{"public."}}},
		{"bad dsn", cdc.Config{DSN: "postgres://x@127.0.0.1:notaport/db", Slot: "walhook", Publication: "p"}},
	}
	for _, tt := range tests {
		if _, err := cdc.NewReader(tt.cfg, &recSink{}); err == nil {
			t.Errorf("%s: NewReader accepted %+v", tt.name, tt.cfg)
		}
	}
}

func TestTeardown(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE items (id int PRIMARY KEY)`)
	r := startReader(t, baseConfig(dsn, name, "public.items"), &recSink{})
	waitReady(t, r)
	r.stop()
	// Wait for the walsender to let go of the slot.
	waitFor(t, 10*time.Second, func() bool {
		return cdc.Teardown(context.Background(), dsn, name, name) == nil
	}, "teardown")
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1) + (SELECT count(*) FROM pg_publication WHERE pubname = $1)`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d of slot and publication left", n)
	}
}

func TestForeignSlotIsFatal(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, fmt.Sprintf(`SELECT pg_create_logical_replication_slot('%s', 'test_decoding')`, name))
	t.Cleanup(func() {
		if err := cdc.Teardown(context.Background(), dsn, name, name); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	r, err := cdc.NewReader(baseConfig(dsn, name), &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "test_decoding") {
		t.Fatalf("Run = %v, want an error naming the slot's plugin", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run retried instead of giving up")
	}
}

// TestSchemaChanges: the legacy application's migrations run while walhook
// reads. Each change after a DDL statement is decoded with the table's new
// shape: an added column (with the default PostgreSQL fills in for old rows),
// a dropped one, a renamed one, a changed type, and a renamed table.
func TestSchemaChanges(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE shapes (id int PRIMARY KEY, a text)`)
	_, sink := streamTables(t, dsn, name, "public.shapes")
	execSQL(t, dsn,
		`INSERT INTO shapes VALUES (1, 'x')`,
		`ALTER TABLE shapes ADD COLUMN b int NOT NULL DEFAULT 7`,
		`INSERT INTO shapes VALUES (2, 'y', 8)`,
		`UPDATE shapes SET a = 'z' WHERE id = 1`,
		`ALTER TABLE shapes DROP COLUMN a`,
		`INSERT INTO shapes VALUES (3, 9)`,
		`ALTER TABLE shapes RENAME COLUMN b TO c`,
		`INSERT INTO shapes VALUES (4, 10)`,
		`ALTER TABLE shapes ALTER COLUMN c TYPE text USING c::text || '!'`,
		`INSERT INTO shapes VALUES (5, 'eleven')`,
		`UPDATE shapes SET c = 'changed' WHERE id = 4`,
		`ALTER TABLE shapes RENAME TO forms`,
		`INSERT INTO forms VALUES (6, 'renamed')`)
	evs := sink.waitEvents(t, 8)
	wants := []struct {
		table string
		data  map[string]any
	}{
		{"shapes", map[string]any{"id": int64(1), "a": "x"}},
		{"shapes", map[string]any{"id": int64(2), "a": "y", "b": int64(8)}},
		{"shapes", map[string]any{"id": int64(1), "a": "z", "b": int64(7)}},
		{"shapes", map[string]any{"id": int64(3), "b": int64(9)}},
		{"shapes", map[string]any{"id": int64(4), "c": int64(10)}},
		{"shapes", map[string]any{"id": int64(5), "c": "eleven"}},
		{"shapes", map[string]any{"id": int64(4), "c": "changed"}},
		{"forms", map[string]any{"id": int64(6), "c": "renamed"}},
	}
	for i, w := range wants {
		if got := evs[i]; got.Table != w.table || !reflect.DeepEqual(got.Data, w.data) {
			t.Errorf("event %d: %s %v, want %s %v", i, got.Table, abbrev(got.Data), w.table, abbrev(w.data))
		}
	}
}

// TestPartitionedTable: a partitioned table's changes come under the name
// the config gives, the parent's, whichever partition the row is in; also
// when the publication already existed without saying so (made by an older
// walhook).
func TestPartitionedTable(t *testing.T) {
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing=%v", existing), func(t *testing.T) {
			dsn, name := newDB(t)
			execSQL(t, dsn,
				`CREATE TABLE orders (id int, region text, total int, PRIMARY KEY (id, region)) PARTITION BY LIST (region)`,
				`CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu')`,
				`CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us')`)
			if existing {
				execSQL(t, dsn, `CREATE PUBLICATION `+name+` FOR TABLE orders`)
			}
			_, sink := streamTables(t, dsn, name, "public.orders")
			execSQL(t, dsn,
				`INSERT INTO orders VALUES (1, 'eu', 10), (2, 'us', 20)`,
				`UPDATE orders SET total = 11 WHERE id = 1`,
				`DELETE FROM orders WHERE id = 2`,
				`CREATE TABLE orders_asia PARTITION OF orders FOR VALUES IN ('asia')`,
				`INSERT INTO orders VALUES (3, 'asia', 30)`)
			evs := sink.waitEvents(t, 5)
			wants := []struct {
				action string
				id     int64
			}{{cdc.ActionCreate, 1}, {cdc.ActionCreate, 2}, {cdc.ActionModify, 1}, {cdc.ActionDelete, 2}, {cdc.ActionCreate, 3}}
			for i, w := range wants {
				got := evs[i]
				if got.Schema != "public" || got.Table != "orders" || got.Action != w.action || got.Data["id"] != w.id {
					t.Errorf("event %d: %s.%s %s %v, want public.orders %s id %d", i, got.Schema, got.Table, got.Action, abbrev(got.Data), w.action, w.id)
				}
			}
		})
	}
}

// TestLostSlotIsFatal: PostgreSQL invalidated the slot (it fell more than
// max_slot_wal_keep_size behind while walhook was stopped). Retrying
// cannot bring the WAL back: Run stops at once and says what to do, rather
// than retry forever. The test has a cluster of its own, as the setting
// is the server's.
func TestLostSlotIsFatal(t *testing.T) {
	ctx := t.Context()
	c, err := pgcluster.Start(ctx, "max_slot_wal_keep_size=1MB")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // after the reader's own clean-up
	dsn, err := c.CreateDatabase(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	execSQL(t, dsn, `CREATE TABLE items (id int PRIMARY KEY)`)
	r, sink := streamTables(t, dsn, "lost", "public.items")
	execSQL(t, dsn, `INSERT INTO items VALUES (1)`)
	sink.waitEvents(t, 1)
	r.stop()

	// Past max_slot_wal_keep_size, then a checkpoint: the slot is lost.
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	status := ""
	for i := 0; i < 20 && status != "lost"; i++ {
		for _, sql := range []string{`INSERT INTO items SELECT g FROM generate_series(1000 * $1 + 2, 1000 * $1 + 1001) g`, `SELECT pg_switch_wal()`, `CHECKPOINT`} {
			var args []any
			if strings.Contains(sql, "$1") {
				args = append(args, i)
			}
			if _, err := conn.Exec(ctx, sql, args...); err != nil {
				t.Fatal(err)
			}
		}
		if err := conn.QueryRow(ctx, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'lost'`).Scan(&status); err != nil {
			t.Fatal(err)
		}
	}
	if status != "lost" {
		t.Fatalf("the slot's wal_status is %q after 20 WAL switches and checkpoints, want lost", status)
	}

	rd, err := cdc.NewReader(baseConfig(dsn, "lost", "public.items"), &recSink{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rd.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "wal_status = lost") || !strings.Contains(err.Error(), "walhook teardown") {
			t.Errorf("Run returned %v, want the lost slot and what to do", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run is still retrying a lost slot after 30 s")
	}
}

// TestSubtransactions: what a transaction rolled back to a savepoint is not
// published; a row changed several times in one transaction gives one
// event per change, in order.
func TestSubtransactions(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	_, sink := streamTables(t, dsn, name, "public.items")
	conn := testkit.Connect(t, dsn)
	defer conn.Close(t.Context())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO items VALUES (1, 'a')`,
		`SAVEPOINT s1`,
		`INSERT INTO items VALUES (2, 'rolled back')`,
		`UPDATE items SET v = 'rolled back' WHERE id = 1`,
		`ROLLBACK TO SAVEPOINT s1`,
		`SAVEPOINT s2`,
		`UPDATE items SET v = 'b' WHERE id = 1`,
		`RELEASE SAVEPOINT s2`,
		`UPDATE items SET v = 'c' WHERE id = 1`,
		`INSERT INTO items VALUES (3, 'x')`,
		`DELETE FROM items WHERE id = 3`,
	} {
		if _, err := tx.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	execSQL(t, dsn, `INSERT INTO items VALUES (4, 'after')`)
	evs := sink.waitEvents(t, 6)
	wants := []struct {
		action string
		id     int64
		v      any
	}{
		{cdc.ActionCreate, 1, "a"}, {cdc.ActionModify, 1, "b"}, {cdc.ActionModify, 1, "c"},
		{cdc.ActionCreate, 3, "x"}, {cdc.ActionDelete, 3, nil}, {cdc.ActionCreate, 4, "after"},
	}
	if len(evs) != len(wants) {
		t.Fatalf("%d events, want %d", len(evs), len(wants))
	}
	for i, w := range wants {
		got := evs[i]
		if got.Action != w.action || got.Data["id"] != w.id || got.Data["v"] != w.v {
			t.Errorf("event %d: %s %v, want %s id %d v %v", i, got.Action, abbrev(got.Data), w.action, w.id, w.v)
		}
	}
	if txs := sink.snapshot(); len(txs) != 2 || len(txs[0].Events) != 5 {
		t.Errorf("want the 5 changes in one transaction, then one: %d transactions", len(txs))
	}
}

// TestDomains: a column whose type is a domain gives the value its base
// type gives (a number for a domain over int), also through a domain over
// a domain and in an array of a domain.
func TestDomains(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn,
		`CREATE DOMAIN posint AS int CHECK (VALUE > 0)`,
		`CREATE DOMAIN small AS posint CHECK (VALUE < 100)`,
		`CREATE DOMAIN flag AS bool`,
		`CREATE DOMAIN doc AS jsonb`,
		`CREATE DOMAIN email AS text`,
		`CREATE TABLE typed (id posint PRIMARY KEY, s small, f flag, j doc, e email, pa posint[])`)
	_, sink := streamTables(t, dsn, name, "public.typed")
	execSQL(t, dsn, `INSERT INTO typed VALUES (5, 7, true, '{"a": [1]}', 'a@example.com', '{1,2}')`)
	ev := sink.waitEvents(t, 1)[0]
	want := map[string]any{
		"id": int64(5), "s": int64(7), "f": true, "j": json.RawMessage(`{"a": [1]}`),
		"e": "a@example.com", "pa": []any{int64(1), int64(2)},
	}
	if !reflect.DeepEqual(ev.Data, want) {
		t.Errorf("data\n got %#v\nwant %#v", ev.Data, want)
	}
	if !slices.Equal(ev.Key, []string{"id"}) {
		t.Errorf("key %v", ev.Key)
	}
}

// TestTypesMadeWhileStreaming: a migration adds a domain and an enum, and
// columns of them, while walhook streams: their values are converted as
// the catalog says from the first row on, not as text until a reconnect.
func TestTypesMadeWhileStreaming(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE typed (id int PRIMARY KEY)`)
	_, sink := streamTables(t, dsn, name, "public.typed")
	execSQL(t, dsn,
		`CREATE DOMAIN posint AS int CHECK (VALUE > 0)`,
		`CREATE TYPE mood AS ENUM ('sad', 'happy')`,
		`ALTER TABLE typed ADD COLUMN p posint, ADD COLUMN ms mood[], ADD COLUMN pa posint[]`,
		`INSERT INTO typed VALUES (1, 5, '{happy,sad}', '{1,2}')`)
	ev := sink.waitEvents(t, 1)[0]
	want := map[string]any{"id": int64(1), "p": int64(5), "ms": []any{"happy", "sad"}, "pa": []any{int64(1), int64(2)}}
	if !reflect.DeepEqual(ev.Data, want) {
		t.Errorf("data\n got %#v\nwant %#v", ev.Data, want)
	}
}

// A table without an identity that the publication covers already (an
// older walhook put it there) stays, with a warning: leaving it out would
// not mend the application's failing UPDATE, and its inserts still come.
func TestUnidentifiedTableAlreadyPublished(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE nokey (v int)`, `CREATE PUBLICATION `+name+` FOR TABLE nokey`)
	r, sink := streamTables(t, dsn, name, "public.nokey")
	if !strings.Contains(r.logs.String(), "table has no primary key or replica identity: the application's UPDATE and DELETE on it fail while it is in the publication") {
		t.Errorf("no warning about public.nokey; logs:\n%s", r.logs.String())
	}
	execSQL(t, dsn, `INSERT INTO nokey VALUES (1)`)
	if ev := sink.waitEvents(t, 1)[0]; ev.Table != "nokey" {
		t.Errorf("event of %s, want nokey", ev.Table)
	}
}

// Creating the slot waits for the transactions open at that moment; walhook
// names them rather than hang without a word.
func TestSlotCreationNamesOpenTransactions(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE a (id int PRIMARY KEY)`)
	tx := testkit.OpenWrite(t, dsn, "legacy-app", `INSERT INTO a VALUES (1)`)
	r := startReader(t, baseConfig(dsn, name, "public.a"), &recSink{})
	waitFor(t, 20*time.Second, func() bool {
		return strings.Contains(r.logs.String(), "creating the replication slot waits for these transactions to end")
	}, "the open transaction named")
	logs := r.logs.String()
	if !strings.Contains(logs, "application legacy-app, idle in transaction since") || !strings.Contains(logs, "database "+name) {
		t.Errorf("the warning does not name the application's session:\n%s", logs)
	}
	if r.Ready() {
		t.Fatal("ready while the slot cannot be created")
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, r)
}

// TestPrimaryKeyAddedWhileStreaming: a table under REPLICA IDENTITY FULL
// without a primary key has every column as its key; once a primary key is
// added, the next change's key is that, without a reconnect.
func TestPrimaryKeyAddedWhileStreaming(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE t (id int NOT NULL, v text)`, `ALTER TABLE t REPLICA IDENTITY FULL`)
	_, sink := streamTables(t, dsn, name, "public.t")
	execSQL(t, dsn, `INSERT INTO t VALUES (1, 'a')`)
	if ev := sink.waitEvents(t, 1)[0]; !slices.Equal(ev.Key, []string{"id", "v"}) {
		t.Errorf("key before the primary key: %v, want every column", ev.Key)
	}
	execSQL(t, dsn, `ALTER TABLE t ADD PRIMARY KEY (id)`, `UPDATE t SET v = 'b'`)
	if ev := sink.waitEvents(t, 2)[1]; !slices.Equal(ev.Key, []string{"id"}) {
		t.Errorf("key after the primary key: %v, want [id]", ev.Key)
	}
}

// TestPreparedTransactions: what an XA transaction manager leaves. A
// prepared transaction that wrote holds the slot's creation, and walhook
// names it; once streaming, a prepared transaction's changes come at its
// COMMIT PREPARED, in commit order, and never after ROLLBACK PREPARED.
func TestPreparedTransactions(t *testing.T) {
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE a (id int PRIMARY KEY)`,
		`BEGIN`, `INSERT INTO a VALUES (1)`, `PREPARE TRANSACTION 'xa-held'`)
	t.Cleanup(func() {
		// A prepared transaction outlives its session: never leave one
		// to hold the shared cluster's other slots.
		conn := testkit.Connect(t, dsn)
		defer conn.Close(context.Background())
		conn.Exec(context.Background(), `ROLLBACK PREPARED 'xa-held'`)
	})
	sink := &recSink{}
	r := startReader(t, baseConfig(dsn, name, "public.a"), sink)
	waitFor(t, 20*time.Second, func() bool {
		return strings.Contains(r.logs.String(), "prepared transaction 'xa-held', database "+name)
	}, "the prepared transaction named")
	if r.Ready() {
		t.Fatal("ready while a prepared transaction holds the slot's creation")
	}
	execSQL(t, dsn, `ROLLBACK PREPARED 'xa-held'`)
	waitReady(t, r)

	execSQL(t, dsn, `BEGIN`, `INSERT INTO a VALUES (2)`, `PREPARE TRANSACTION 'xa-commit'`,
		`BEGIN`, `INSERT INTO a VALUES (3)`, `PREPARE TRANSACTION 'xa-rollback'`,
		`INSERT INTO a VALUES (4)`,
		`COMMIT PREPARED 'xa-commit'`, `ROLLBACK PREPARED 'xa-rollback'`,
		`INSERT INTO a VALUES (5)`)
	// Row 5 was committed last: whatever else was to come came before it.
	var ids []int64
	waitFor(t, 15*time.Second, func() bool {
		ids = ids[:0]
		for _, ev := range sink.events() {
			id, _ := ev.Data["id"].(int64)
			ids = append(ids, id)
		}
		return slices.Contains(ids, 5)
	}, "row 5")
	if !slices.Equal(ids, []int64{4, 2, 5}) {
		t.Errorf("ids in order of arrival = %v, want [4 2 5]: commit order, nothing rolled back", ids)
	}
}
