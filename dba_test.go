package main

// The DBA's first hour: the SQL of docs/dba.md, least privilege in both
// publication modes, teardown, the max_lag_mb alarm and the systemd unit.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"walhook/internal/testkit"
)

// readmeSQL returns every ```sql block of README.md and docs/*.md, in
// order; the DBA guide's are in docs/dba.md.
func readmeSQL(t *testing.T) []docBlock {
	t.Helper()
	return docBlocks(t, "sql")
}

// readmeBlock returns the one block containing marker.
func readmeBlock(t *testing.T, blocks []docBlock, marker string) docBlock {
	t.Helper()
	var found []docBlock
	for _, b := range blocks {
		if strings.Contains(b.text, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("README.md and docs/ have %d ```sql blocks containing %q, want 1", len(found), marker)
	}
	return found[0]
}

// dbaNames stand in for the names the DBA guide's SQL uses: database app, the
// application's role app_owner, and walhook for walhook's role,
// publication and slot. Roles and slots are cluster-wide, so each test
// database gets names of its own.
type dbaNames struct {
	db      string // app
	walhook string // role, publication and slot: the test's slotFor name
	owner   string // app_owner
}

func namesFor(dsn string) dbaNames {
	db := dbName(dsn)
	return dbaNames{db: db, walhook: slotFor(dsn), owner: "o_" + db}
}

var (
	ownerWord   = regexp.MustCompile(`\bapp_owner\b`)
	appWord     = regexp.MustCompile(`\bapp\b`)
	walhookWord = regexp.MustCompile(`\bwalhook\b`)
)

func (n dbaNames) fill(sql string) string {
	sql = ownerWord.ReplaceAllLiteralString(sql, n.owner)
	sql = appWord.ReplaceAllLiteralString(sql, n.db)
	return walhookWord.ReplaceAllLiteralString(sql, n.walhook)
}

// sqlStatements splits SQL text at semicolons outside quotes and drops
// -- comments.
func sqlStatements(text string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	rs := []rune(text)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '-' && i+1 < len(rs) && rs[i+1] == '-':
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
			r = '\n'
		case r == ';':
			if s := strings.TrimSpace(cur.String()); s != "" {
				out = append(out, s)
			}
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// runStatements runs each statement of text on dsn, one at a time (ALTER
// SYSTEM refuses a transaction block), failing with where it came from.
func runStatements(t *testing.T, dsn, where, text string) {
	t.Helper()
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	stmts := sqlStatements(text)
	if len(stmts) == 0 {
		t.Fatalf("%s: no SQL statement", where)
	}
	for _, stmt := range stmts {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %s: %v", where, stmt, err)
		}
	}
}

// dbaFixture creates the DBA guide's starting point in the database at dsn.
func dbaFixture(t *testing.T, dsn string, n dbaNames) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "dba", "schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	runStatements(t, dsn, "testdata/dba/schema.sql", n.fill(string(raw)))
}

// queryOne scans one row of a query run as postgres.
func queryOne(t *testing.T, dsn, sql string, dst ...any) {
	t.Helper()
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dst...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestReadmeSQL runs every ```sql block of README.md and docs/*.md (the DBA
// guide, docs/dba.md, holds them) against a fresh database holding
// testdata/dba/schema.sql and the guide's role, each statement asserted to
// succeed. The guide's ALTER SYSTEM settings are
// reset afterwards: the cluster is shared.
func TestReadmeSQL(t *testing.T) {
	blocks := readmeSQL(t)
	if len(blocks) < 6 {
		t.Fatalf("README.md and docs/ have %d ```sql blocks; the DBA guide (docs/dba.md) alone has more", len(blocks))
	}
	role := readmeBlock(t, blocks, "CREATE ROLE walhook")
	t.Cleanup(func() {
		runStatements(t, cluster.DSN("postgres"), "reset", "ALTER SYSTEM RESET ALL; SELECT pg_reload_conf()")
	})
	for _, b := range blocks {
		where := b.where()
		t.Run(where, func(t *testing.T) {
			dsn := newDatabase(t)
			n := namesFor(dsn)
			dbaFixture(t, dsn, n)
			if where != role.where() {
				runStatements(t, dsn, role.where(), n.fill(role.text))
			}
			runStatements(t, dsn, where, n.fill(b.text))

			// What the blocks a DBA relies on must have done.
			var got string
			switch {
			case strings.Contains(b.text, "FOR TABLE public.orders"):
				queryOne(t, dsn, fmt.Sprintf(`SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = '%s'`, n.walhook), &got)
				if got != "customers,orders" {
					t.Errorf("publication covers %q, want customers,orders", got)
				}
			case strings.Contains(b.text, "GRANT app_owner TO walhook"):
				queryOne(t, dsn, fmt.Sprintf(`SELECT has_database_privilege('%s', current_database(), 'CREATE')::text || ',' || pg_has_role('%[1]s', '%s', 'USAGE')::text`, n.walhook, n.owner), &got)
				if got != "true,true" {
					t.Errorf("CREATE on the database, rights of the owner = %s, want true,true", got)
				}
			case strings.Contains(b.text, "DROP ROLE walhook"):
				queryOne(t, dsn, fmt.Sprintf(`SELECT count(*)::text FROM pg_roles WHERE rolname = '%s'`, n.walhook), &got)
				if got != "0" {
					t.Errorf("the role is still there")
				}
			}
		})
	}
}

// syncBuffer is a log destination the test reads while the code writes.
type syncBuffer = testkit.SyncBuffer

// dbaApp is walhook run in-process from a config file, as `walhook run`
// would.
type dbaApp struct {
	*inProcess
	reg  *prometheus.Registry
	logs *syncBuffer
}

func startDBAApp(t *testing.T, path string, lagInterval time.Duration) *dbaApp {
	t.Helper()
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	d := &dbaApp{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	logger := slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d.inProcess = startApp(t, cfg, AppOptions{Logger: logger, Registry: d.reg, SlotLagInterval: lagInterval})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("walhook's log:\n%s", d.logs.String())
		}
	})
	return d
}

func (d *dbaApp) gauge(name string) float64 {
	d.t.Helper()
	mfs, err := d.reg.Gather()
	if err != nil {
		d.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	d.t.Fatalf("no gauge %s", name)
	return 0
}

const ordersHook = `
[admin]
listen = "127.0.0.1:0"

[[webhook]]
name = "orders"
url = %q
events = ["public.orders"]
retry_mode = "test"
`

// changeOrders makes a create, a modify and a delete on public.orders as
// the application (postgres) and waits until the receiver has all three.
func changeOrders(t *testing.T, dsn string, rc *receiver) {
	t.Helper()
	runStatements(t, dsn, "the application", `
		INSERT INTO customers VALUES (7, 'ann@example.com');
		INSERT INTO orders VALUES (1, 7, 12.50, 'first');
		UPDATE orders SET total = 13.00 WHERE id = 1;
		DELETE FROM orders WHERE id = 1`)
	want := []string{"orders.create", "orders.modify", "orders.delete"}
	waitFor(t, "three order events", 30*time.Second, func() bool { return len(rc.requests()) >= len(want) })
	reqs := rc.requests()
	if len(reqs) != len(want) {
		t.Fatalf("got %d requests, want %d", len(reqs), len(want))
	}
	for i, r := range reqs {
		if got := r.Header.Get("X-Walhook-Event"); got != want[i] {
			t.Errorf("request %d: event %q, want %q", i, got, want[i])
		}
		if got := r.Header.Get("X-Walhook-Entity-Id"); got != "1" {
			t.Errorf("request %d: entity id %q, want 1", i, got)
		}
	}
}

// slotAndPublication reports whether the test's slot and publication exist.
func slotAndPublication(t *testing.T, dsn string, n dbaNames) (slot, pub bool) {
	t.Helper()
	queryOne(t, dsn, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '%s'),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '%[1]s')`, n.walhook), &slot, &pub)
	return slot, pub
}

// teardownExitCode runs the built binary's teardown and returns its exit
// code and output.
func teardownExitCode(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(walhookBinary(t), append([]string{"teardown"}, args...)...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatal(err)
	return 0, ""
}

// readmeRole makes a fresh database with the DBA's fixture and runs on it
// the DBA guide's SQL for the role and for the mode (its block's marker).
func readmeRole(t *testing.T, mode string) (string, dbaNames) {
	t.Helper()
	blocks := readmeSQL(t)
	dsn := newDatabase(t)
	n := namesFor(dsn)
	t.Cleanup(func() { dropSlot(t, n.walhook) })
	dbaFixture(t, dsn, n)
	for _, marker := range []string{"CREATE ROLE walhook", mode} {
		b := readmeBlock(t, blocks, marker)
		runStatements(t, dsn, b.where(), n.fill(b.text))
	}
	return dsn, n
}

// TestLeastPrivilege runs walhook end to end as a role made with exactly
// the DBA guide's least-privilege SQL (LOGIN, REPLICATION, SELECT on the
// watched tables; the DBA makes the publication), then removes it with
// teardown, which keeps the DBA's publication.
func TestLeastPrivilege(t *testing.T) {
	dsn, n := readmeRole(t, "manage_publication = false")

	// The role has nothing beyond the minimal set.
	var rights string
	queryOne(t, dsn, fmt.Sprintf(`SELECT concat_ws(',', rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication, rolcanlogin,
		has_database_privilege(oid, current_database(), 'CREATE'), pg_has_role(oid, '%s', 'MEMBER'),
		(SELECT count(*) FROM pg_auth_members WHERE member = r.oid),
		has_table_privilege(oid, 'public.orders', 'SELECT'), has_table_privilege(oid, 'public.orders', 'INSERT, UPDATE, DELETE, TRUNCATE'))
		FROM pg_roles r WHERE rolname = '%s'`, n.owner, n.walhook), &rights)
	if want := "f,f,f,f,t,t,f,f,0,t,f"; rights != want {
		t.Fatalf("role rights (super, createdb, createrole, bypassrls, replication, login, CREATE on db, owner member, memberships, SELECT, writes) = %s, want %s", rights, want)
	}

	rc := newReceiver(t, nil)
	path := writeConfig(t, asRole(dsn, n.walhook), "manage_publication = false\n"+fmt.Sprintf(ordersHook, rc.URL))
	if out, err := runCheck(t, path); err != nil {
		t.Fatalf("check as the least-privilege role: %v\n%s", err, out)
	}
	d := startDBAApp(t, path, 0)
	waitFor(t, "walhook to stream", 30*time.Second, func() bool { return d.app.ready() == nil })
	changeOrders(t, dsn, rc)

	out, err := runCheck(t, path)
	if err != nil || !strings.Contains(out, fmt.Sprintf("ok    slot %s: active (streamed by PID ", n.walhook)) {
		t.Errorf("check while walhook streams: %v\n%s", err, out)
	}
	// Teardown refuses while walhook streams, and drops nothing.
	var buf bytes.Buffer
	err = run(context.Background(), []string{"teardown", "-config", path, "-yes"}, &buf, &buf)
	if err == nil || !strings.Contains(err.Error(), "is active") || !strings.Contains(err.Error(), "nothing was dropped") {
		t.Errorf("teardown of an active slot: %v", err)
	}
	if slot, pub := slotAndPublication(t, dsn, n); !slot || !pub {
		t.Errorf("after the refused teardown: slot %v, publication %v; want both", slot, pub)
	}
	d.stop()

	if code, out := teardownExitCode(t, "-config", path); code != 2 || !strings.Contains(out, "run again with -yes") {
		t.Errorf("teardown without -yes: exit %d, want 2:\n%s", code, out)
	}
	if slot, pub := slotAndPublication(t, dsn, n); !slot || !pub {
		t.Errorf("after teardown without -yes: slot %v, publication %v; want both", slot, pub)
	}
	buf.Reset()
	if err := run(context.Background(), []string{"teardown", "-config", path, "-yes"}, &buf, &buf); err != nil {
		t.Fatalf("teardown as the least-privilege role: %v\n%s", err, buf.String())
	}
	if slot, pub := slotAndPublication(t, dsn, n); slot || !pub {
		t.Errorf("after teardown (manage_publication = false): slot %v, publication %v; want the slot gone, the DBA's publication kept", slot, pub)
	}
}

// TestManagedPrivilege runs walhook as a role made with the DBA guide's SQL
// for manage_publication = true: it creates the publication itself, and
// teardown removes both slot and publication.
func TestManagedPrivilege(t *testing.T) {
	dsn, n := readmeRole(t, "manage_publication = true")
	var super bool
	queryOne(t, dsn, fmt.Sprintf(`SELECT rolsuper FROM pg_roles WHERE rolname = '%s'`, n.walhook), &super)
	if super {
		t.Fatal("the managed-mode role is a superuser")
	}

	rc := newReceiver(t, nil)
	path := writeConfig(t, asRole(dsn, n.walhook), fmt.Sprintf(ordersHook, rc.URL))
	out, err := runCheck(t, path)
	if err != nil || !strings.Contains(out, "publication "+n.walhook+" does not exist yet; walhook will create it") {
		t.Fatalf("check as the managed-mode role: %v\n%s", err, out)
	}
	d := startDBAApp(t, path, 0)
	waitFor(t, "walhook to stream", 30*time.Second, func() bool { return d.app.ready() == nil })
	var owner, tables string
	queryOne(t, dsn, fmt.Sprintf(`SELECT pubowner::regrole::text, (SELECT string_agg(tablename, ',') FROM pg_publication_tables WHERE pubname = p.pubname)
		FROM pg_publication p WHERE pubname = '%s'`, n.walhook), &owner, &tables)
	if owner != n.walhook || tables != "orders" {
		t.Errorf("publication owned by %s covering %s; want %s covering orders", owner, tables, n.walhook)
	}
	changeOrders(t, dsn, rc)
	d.stop()

	var buf bytes.Buffer
	if err := run(context.Background(), []string{"teardown", "-config", path, "-yes"}, &buf, &buf); err != nil {
		t.Fatalf("teardown: %v\n%s", err, buf.String())
	}
	if slot, pub := slotAndPublication(t, dsn, n); slot || pub {
		t.Errorf("after teardown: slot %v, publication %v; want both gone", slot, pub)
	}
	if !strings.Contains(buf.String(), fmt.Sprintf("slot %s and publication %[1]s are gone", n.walhook)) {
		t.Errorf("teardown said:\n%s", buf.String())
	}
}

// TestSlotLagLimit: a slot whose lag passes max_lag_mb gives one error log
// line per crossing, /readyz 503 naming the lag and
// walhook_slot_lag_exceeded 1; all clear once walhook confirms again.
//
// The lag a DBA cares about is the WAL the database keeps for the slot,
// pg_current_wal_lsn() - confirmed_flush_lsn. A walhook that streams
// confirms within a second (deliveries only have to reach its own disk),
// so the honest way to hold the lag up is what happens in production when
// an old walhook, say on the host being retired, still holds the slot:
// the test holds it with a replication connection that never confirms,
// writes more than 1 MB of WAL into an unpublished table, then lets go.
func TestSlotLagLimit(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	slot := slotFor(dsn)
	t.Cleanup(func() { dropSlot(t, slot) })
	execSQL(t, dsn, fmt.Sprintf(`CREATE TABLE orders (id int PRIMARY KEY);
		CREATE PUBLICATION %[1]s FOR TABLE orders;
		SELECT pg_create_logical_replication_slot('%[1]s', 'pgoutput')`, slot))

	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pc.RuntimeParams["replication"] = "database"
	holder, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	err = pglogrepl.StartReplication(ctx, holder, slot, 0, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: []string{"proto_version '1'", "publication_names '" + slot + "'"},
	})
	if err != nil {
		t.Fatal(err)
	}

	admin := freeAddr(t)
	path := writeConfig(t, dsn, fmt.Sprintf("max_lag_mb = 1\n[admin]\nlisten = %q\n[[webhook]]\nname = \"orders\"\nurl = \"http://127.0.0.1:9/\"\nevents = [\"public.orders\"]\n", admin))
	d := startDBAApp(t, path, 100*time.Millisecond)
	crossings := func() int {
		return strings.Count(d.logs.String(), "level=ERROR msg=\"replication slot lag above the limit")
	}

	execSQL(t, dsn, `CREATE TABLE filler AS SELECT g, md5(g::text) AS m FROM generate_series(1, 50000) g`)
	waitFor(t, "the lag to pass max_lag_mb", 30*time.Second, func() bool { return d.app.lag.Exceeded() })
	if got := d.gauge("walhook_slot_lag_exceeded"); got != 1 {
		t.Errorf("walhook_slot_lag_exceeded = %v, want 1", got)
	}
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !regexp.MustCompile(`replication slot lag \d+ bytes is above max_lag_mb = 1`).Match(body) {
		t.Errorf("/readyz = %d %s; want 503 naming the lag", resp.StatusCode, body)
	}

	// More WAL, and measurements that see it, still make one error line.
	first := d.gauge("walhook_slot_lag_bytes")
	execSQL(t, dsn, `INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 50000) g`)
	waitFor(t, "a later measurement of the larger lag", 30*time.Second, func() bool {
		return d.gauge("walhook_slot_lag_bytes") > first+(1<<20)
	})
	t.Logf("slot lag %.0f bytes, then %.0f bytes, with max_lag_mb = 1", first, d.gauge("walhook_slot_lag_bytes"))
	if n := crossings(); n != 1 {
		t.Errorf("%d error lines for one crossing, want 1:\n%s", n, d.logs.String())
	}

	// The old holder lets go: walhook takes the slot and confirms.
	holder.Close(ctx)
	waitFor(t, "walhook to stream and the lag to fall", 60*time.Second, func() bool { return d.app.ready() == nil })
	if got := d.gauge("walhook_slot_lag_exceeded"); got != 0 {
		t.Errorf("walhook_slot_lag_exceeded = %v after recovery, want 0", got)
	}
	if got := httpStatus("http://" + admin + "/readyz"); got != http.StatusOK {
		t.Errorf("/readyz = %d after recovery, want 200", got)
	}
	logs := d.logs.String()
	if n := crossings(); n != 1 || strings.Count(logs, "replication slot lag back below the limit") != 1 {
		t.Errorf("want one error line and one all-clear line:\n%s", logs)
	}
}

// TestSystemdUnit: the sample unit's walhook command lines name real
// subcommands and flags, and its ExecStartPre check passes on a usable
// config.
func TestSystemdUnit(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "walhook.service"))
	if err != nil {
		t.Fatal(err)
	}
	const cfgInUnit = "/etc/walhook/config.toml"
	commands := map[string][]string{} // key -> args after the binary
	for _, line := range strings.Split(string(raw), "\n") {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || !strings.HasPrefix(key, "Exec") {
			continue
		}
		fields := strings.Fields(strings.TrimLeft(value, "-@+!:"))
		if len(fields) < 2 || filepath.Base(fields[0]) != "walhook" {
			continue
		}
		commands[key] = fields[1:]
	}
	if got := commands["ExecStart"]; len(got) == 0 || got[0] != "run" {
		t.Fatalf("ExecStart runs %v, want walhook run", got)
	}
	if got := commands["ExecStartPre"]; len(got) == 0 || got[0] != "check" {
		t.Fatalf("ExecStartPre runs %v, want walhook check", got)
	}
	for key, args := range commands {
		// `<sub> -h` lists the subcommand's flags and exits 2 (usage); an
		// unknown subcommand says so instead.
		var out bytes.Buffer
		err := run(context.Background(), []string{args[0], "-h"}, &out, &out)
		if !errors.Is(err, errUsage) || !strings.Contains(out.String(), "Usage of "+args[0]) {
			t.Errorf("%s: walhook %s -h: %v\n%s", key, args[0], err, out.String())
			continue
		}
		for _, a := range args[1:] {
			if !strings.HasPrefix(a, "-") {
				continue
			}
			listed := regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(strings.TrimLeft(a, "-")) + `(\s|$)`)
			if !listed.MatchString(out.String()) {
				t.Errorf("%s: walhook %s has no flag %s:\n%s", key, args[0], a, out.String())
			}
		}
		if !strings.Contains(strings.Join(args, " "), "-config "+cfgInUnit) {
			t.Errorf("%s: %v does not name the config %s", key, args, cfgInUnit)
		}
	}

	// The check line itself, pointed at a usable config, lets walhook start.
	dsn := newDatabase(t)
	execSQL(t, dsn, `CREATE TABLE orders (id int PRIMARY KEY)`)
	path := writeConfig(t, dsn, fmt.Sprintf(ordersHook, "https://hooks.example.com/orders"))
	args := strings.Fields(strings.ReplaceAll(strings.Join(commands["ExecStartPre"], " "), cfgInUnit, path))
	var out bytes.Buffer
	if err := run(context.Background(), args, &out, &out); err != nil {
		t.Errorf("ExecStartPre (%v): %v\n%s", args, err, out.String())
	}
}
