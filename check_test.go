package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"walhook/admin"
	"walhook/deliver"
	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// writeConfig writes a config file for dsn with the given extra TOML.
func writeConfig(t *testing.T, dsn, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	text := postgresSection(dsn) + extra
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCheck(t *testing.T, path string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), []string{"check", "-config", path}, &out, &out)
	return out.String(), err
}

// dropSlot drops a slot if it exists: an unread slot keeps WAL.
func dropSlot(t *testing.T, slot string) {
	t.Helper()
	execSQL(t, cluster.DSN("postgres"), "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '"+slot+"'")
}

// throughPooler points dsn at a TCP proxy that passes normal connections
// to PostgreSQL and refuses replication ones the way PgBouncer does, the
// usual reason a role with REPLICATION still cannot stream.
func throughPooler(t *testing.T, dsn string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	target := fmt.Sprintf("127.0.0.1:%d", cluster.Port)
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			go proxyUnlessReplication(client, target)
		}
	}()
	return strings.Replace(dsn, target, ln.Addr().String(), 1)
}

func proxyUnlessReplication(client net.Conn, target string) {
	defer client.Close()
	be := pgproto3.NewBackend(client, client)
	msg, err := be.ReceiveStartupMessage()
	if _, ok := msg.(*pgproto3.SSLRequest); ok {
		client.Write([]byte("N"))
		msg, err = be.ReceiveStartupMessage()
	}
	startup, ok := msg.(*pgproto3.StartupMessage)
	if err != nil || !ok {
		return
	}
	if _, ok := startup.Parameters["replication"]; ok {
		be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "08P01", Message: "unsupported startup parameter: replication"})
		be.Flush()
		return
	}
	server, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer server.Close()
	raw, err := startup.Encode(nil)
	if err != nil {
		return
	}
	if _, err := server.Write(raw); err != nil {
		return
	}
	go io.Copy(server, client)
	io.Copy(client, server)
}

// asRole returns dsn connecting as role instead of postgres.
func asRole(dsn, role string) string { return strings.Replace(dsn, "postgres@", role+"@", 1) }

const checkHooks = `
[[webhook]]
name = "a"
url = "http://127.0.0.1:9/x"
events = ["public.people"]
`

// TestCheck runs `walhook check` against one fresh database per case. In
// setup, extra and expect, {db}, {role} and {slot} stand for the test's
// database, a role of its own (roles are cluster-wide) and its slot and
// publication name; {major} for the running server's major version.
func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		setup  string // SQL run first, as postgres
		open   string // SQL run next in a transaction left open while check runs
		asRole bool   // check connects as {role}
		dsn    func(t *testing.T, dsn string) string
		extra  string
		ok     bool
		expect []string
		absent []string
	}{
		{
			name:  "usable",
			setup: `CREATE TABLE people (id int PRIMARY KEY, name text)`,
			extra: checkHooks,
			ok:    true,
			expect: []string{"ok    postgres {major}.", "ok    wal_level = logical", "ok    max_wal_senders", "ok    role postgres is a superuser",
				"ok    role postgres can open a replication connection", "REPLICA IDENTITY DEFAULT (primary key)",
				`ALTER TABLE "public"."people" REPLICA IDENTITY FULL;`, "ok    publication {slot} does not exist yet; walhook will create it",
				"ok    slot {slot} does not exist yet; walhook will create it (pgoutput)", "ok    webhook a -> http://127.0.0.1:9/x", "walhook can run with this config"},
		},
		{
			name:   "full identity",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); ALTER TABLE people REPLICA IDENTITY FULL`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"REPLICA IDENTITY FULL: modify and delete carry the whole old row"},
		},
		{
			name:   "identity using index",
			setup:  `CREATE TABLE people (id int NOT NULL, email text NOT NULL); CREATE UNIQUE INDEX people_email ON people (email); ALTER TABLE people REPLICA IDENTITY USING INDEX people_email`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"ok    table public.people: REPLICA IDENTITY USING INDEX: old rows carry that index's columns only"},
		},
		{
			name:   "identity nothing",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); ALTER TABLE people REPLICA IDENTITY NOTHING`,
			extra:  checkHooks,
			expect: []string{`FAIL  table public.people: REPLICA IDENTITY NOTHING: the application's UPDATE and DELETE on it fail while a publication covers it, so walhook does not add it; run ALTER TABLE "public"."people" REPLICA IDENTITY FULL;`, "1 problem(s)"},
		},
		{
			name:   "missing table",
			extra:  checkHooks,
			expect: []string{"FAIL  table public.people: does not exist"},
		},
		{
			name:   "a view",
			setup:  `CREATE VIEW people AS SELECT 1 AS id`,
			extra:  checkHooks,
			expect: []string{"FAIL  table public.people: is not a table (relkind v)"},
		},
		{
			name:   "unlogged table",
			setup:  `CREATE UNLOGGED TABLE people (id int PRIMARY KEY)`,
			extra:  checkHooks,
			expect: []string{`FAIL  table public.people: is UNLOGGED: PostgreSQL writes none of its changes to the WAL, so none can be published: ALTER TABLE "public"."people" SET LOGGED;`, "1 problem(s)"},
		},
		{
			name:   "full identity without a primary key",
			setup:  `CREATE TABLE people (id int, name text); ALTER TABLE people REPLICA IDENTITY FULL`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"warn  table public.people: no primary key, so entity_id is made of every column and changes with each update, and one row's events are not kept in order: name the columns that identify a row in its [[entity]] id"},
		},
		{
			name:   "full identity without a primary key, entity id named",
			setup:  `CREATE TABLE people (id int, name text); ALTER TABLE people REPLICA IDENTITY FULL`,
			extra:  "[[entity]]\nname = \"person\"\ntable = \"public.people\"\nid = [\"id\"]\n" + checkHooks,
			ok:     true,
			expect: []string{"ok    table public.people: REPLICA IDENTITY FULL", "walhook can run with this config"},
			absent: []string{"no primary key, so entity_id"},
		},
		{
			name:   "no primary key",
			setup:  `CREATE TABLE people (id int, name text)`,
			extra:  checkHooks,
			expect: []string{"FAIL  table public.people: no primary key and REPLICA IDENTITY DEFAULT", `ALTER TABLE "public"."people" REPLICA IDENTITY FULL;`},
		},
		{
			name:   "cannot connect",
			dsn:    func(_ *testing.T, dsn string) string { return asRole(dsn, "nobody_here") },
			extra:  checkHooks,
			expect: []string{"FAIL  postgres: cannot connect:", `role "nobody_here" does not exist`},
		},
		{
			name:   "role without replication",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE ROLE {role} LOGIN`,
			asRole: true,
			extra:  checkHooks,
			expect: []string{`FAIL  role {role} lacks REPLICATION, so it can neither create the slot nor stream: ALTER ROLE "{role}" WITH REPLICATION;`,
				`warn  table public.people: role {role} cannot read it, so the admin page does not offer it: GRANT SELECT ON "public"."people" TO "{role}";`,
				`FAIL  role {role} cannot create publication {slot}: GRANT CREATE ON DATABASE "{db}" TO "{role}";`},
			// One line per problem: the replication connection is not tried.
			absent: []string{"replication connection"},
		},
		{
			name:   "replication connection refused by a pooler",
			setup:  `CREATE TABLE people (id int PRIMARY KEY)`,
			dsn:    throughPooler,
			extra:  checkHooks,
			expect: []string{"FAIL  cannot open a replication connection:", "unsupported startup parameter: replication", "pg_hba.conf", "PgBouncer", "1 problem(s)"},
		},
		{
			name: "least privilege, publication made by the DBA",
			setup: `CREATE TABLE people (id int PRIMARY KEY); CREATE ROLE {role} LOGIN REPLICATION;
				GRANT SELECT ON people TO {role}; CREATE PUBLICATION {slot} FOR TABLE people`,
			asRole: true,
			extra:  "manage_publication = false\n" + checkHooks,
			ok:     true,
			expect: []string{"ok    role {role} has REPLICATION", "ok    role {role} can open a replication connection",
				"ok    manage_publication = false: walhook reads publication {slot} and never changes it", "ok    publication {slot} exists (1 tables)"},
			absent: []string{"FAIL", "warn"},
		},
		{
			name:   "partitioned, unmanaged publication without publish_via_partition_root",
			setup:  `CREATE TABLE people (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); CREATE TABLE people_eu PARTITION OF people FOR VALUES IN ('eu'); CREATE PUBLICATION {slot} FOR TABLE people`,
			extra:  "manage_publication = false\n" + checkHooks,
			expect: []string{`FAIL  table public.people: partitioned, and publication {slot} sends its changes under its partitions' names, which no webhook names: ALTER PUBLICATION "{slot}" SET (publish_via_partition_root = true);`, "1 problem(s)"},
			absent: []string{"not in publication"},
		},
		{
			name:   "partitioned, unmanaged publication with publish_via_partition_root",
			setup:  `CREATE TABLE people (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); CREATE TABLE people_eu PARTITION OF people FOR VALUES IN ('eu'); CREATE PUBLICATION {slot} FOR TABLE people WITH (publish_via_partition_root = true)`,
			extra:  "manage_publication = false\n" + checkHooks,
			ok:     true,
			expect: []string{"ok    publication {slot} exists (1 tables)"},
			absent: []string{"table public.people: partitioned", "not in publication"},
		},
		{
			name:   "partitioned, managed",
			setup:  `CREATE TABLE people (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region); CREATE TABLE people_eu PARTITION OF people FOR VALUES IN ('eu')`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"ok    table public.people: partitioned: walhook publishes its changes under its own name (publish_via_partition_root)"},
		},
		{
			name:   "publication missing, unmanaged",
			setup:  `CREATE TABLE people (id int PRIMARY KEY)`,
			extra:  "manage_publication = false\n" + checkHooks,
			expect: []string{`FAIL  publication {slot} does not exist and manage_publication = false: CREATE PUBLICATION "{slot}" FOR TABLE "public"."people";`},
		},
		{
			name:   "table not in the publication, unmanaged",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY); CREATE PUBLICATION {slot} FOR TABLE other`,
			extra:  "manage_publication = false\n" + checkHooks,
			expect: []string{`FAIL  table public.people: not in publication {slot}: ALTER PUBLICATION "{slot}" ADD TABLE "public"."people";`, "1 problem(s)"},
		},
		{
			name:   "publication without update and delete",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE PUBLICATION {slot} FOR TABLE people WITH (publish = 'insert')`,
			extra:  "manage_publication = false\n" + checkHooks,
			expect: []string{`FAIL  publication {slot} does not publish update (wanted by a); delete (wanted by a): ALTER PUBLICATION "{slot}" SET (publish = 'insert, update, delete');`},
		},
		{
			name:   "managed, no CREATE on the database",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE ROLE {role} LOGIN REPLICATION; GRANT SELECT ON people TO {role}`,
			asRole: true,
			extra:  checkHooks,
			expect: []string{`FAIL  role {role} cannot create publication {slot}: GRANT CREATE ON DATABASE "{db}" TO "{role}";`,
				"FAIL  table public.people: walhook (manage_publication = true) must own it to publish it, and superuser postgres owns it: publish it yourself (CREATE PUBLICATION"},
		},
		{
			name: "managed, tables owned by the application's role",
			setup: `CREATE ROLE {role}_app; CREATE TABLE people (id int PRIMARY KEY); ALTER TABLE people OWNER TO {role}_app;
				CREATE ROLE {role} LOGIN REPLICATION; GRANT CREATE ON DATABASE {db} TO {role}; GRANT SELECT ON people TO {role}`,
			asRole: true,
			extra:  checkHooks,
			expect: []string{`FAIL  table public.people: walhook (manage_publication = true) must own it to publish it, and {role}_app owns it: GRANT "{role}_app" TO "{role}";`},
		},
		{
			name: "managed, least rights",
			setup: `CREATE ROLE {role}_app; CREATE TABLE people (id int PRIMARY KEY); ALTER TABLE people OWNER TO {role}_app;
				CREATE ROLE {role} LOGIN REPLICATION; GRANT CREATE ON DATABASE {db} TO {role}; GRANT {role}_app TO {role}`,
			asRole: true,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"ok    publication {slot} does not exist yet; walhook will create it", "ok    role {role} can open a replication connection"},
			absent: []string{"FAIL", "warn"},
		},
		{
			name: "managed, publication owned by another role",
			setup: `CREATE ROLE {role}_app; CREATE TABLE people (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY);
				ALTER TABLE people OWNER TO {role}_app; CREATE PUBLICATION {slot} FOR TABLE other;
				CREATE ROLE {role} LOGIN REPLICATION; GRANT CREATE ON DATABASE {db} TO {role}; GRANT {role}_app TO {role}`,
			asRole: true,
			extra:  checkHooks,
			expect: []string{`FAIL  publication {slot} belongs to another role, so walhook (manage_publication = true) cannot alter it to cover the webhooks' tables: ALTER PUBLICATION "{slot}" OWNER TO "{role}";`},
		},
		{
			name:   "managed, every table without superuser",
			setup:  `CREATE ROLE {role} LOGIN REPLICATION; GRANT CREATE ON DATABASE {db} TO {role}`,
			asRole: true,
			extra:  "[[webhook]]\nname = \"all\"\nurl = \"https://127.0.0.1:9/x\"\nevents = [\"*\"]\n",
			expect: []string{`FAIL  role {role} cannot create a publication FOR ALL TABLES (a webhook says "*"): only a superuser may; have one run CREATE PUBLICATION "{slot}" FOR ALL TABLES;`},
		},
		{
			name:   "every table, with one walhook cannot publish",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE TABLE log_lines (line text); CREATE TABLE "Audit" (at timestamptz)`,
			extra:  "[[webhook]]\nname = \"all\"\nurl = \"https://127.0.0.1:9/x\"\nevents = [\"*\"]\n",
			expect: []string{`FAIL  FOR ALL TABLES would make the application's UPDATE and DELETE fail on the 2 tables without a primary key or replica identity, so walhook will not create it: name the tables in the webhooks' events instead of "*", or give them a primary key, or ALTER TABLE "public"."Audit" REPLICA IDENTITY FULL; ALTER TABLE "public"."log_lines" REPLICA IDENTITY FULL;`, "1 problem(s)"},
		},
		{
			name:   "every table, all publishable",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE TABLE log_lines (line text); ALTER TABLE log_lines REPLICA IDENTITY FULL`,
			extra:  "[[webhook]]\nname = \"all\"\nurl = \"https://127.0.0.1:9/x\"\nevents = [\"*\"]\n",
			ok:     true,
			expect: []string{`ok    a webhook wants every table ("*"): the publication is FOR ALL TABLES`, "walhook can run with this config"},
			absent: []string{"without a primary key or replica identity"},
		},
		{
			name:   "a DBA's publication FOR ALL TABLES over a table without a key",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE TABLE log_lines (line text); CREATE PUBLICATION {slot} FOR ALL TABLES`,
			extra:  "manage_publication = false\n" + checkHooks,
			expect: []string{`FAIL  the publication is FOR ALL TABLES, so the application's UPDATE and DELETE fail on the 1 tables without a primary key or replica identity: give them a primary key, or ALTER TABLE "public"."log_lines" REPLICA IDENTITY FULL;`, "1 problem(s)"},
		},
		{
			name:   "slot creation would wait for an open transaction",
			setup:  `CREATE TABLE people (id int PRIMARY KEY)`,
			open:   `INSERT INTO people VALUES (1)`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"warn  creating slot {slot} waits until these transactions end: pid ", ", database {db}, application legacy-app, idle in transaction since "},
		},
		{
			name: "slot lag above max_lag_mb is a warning",
			setup: `CREATE TABLE people (id int PRIMARY KEY);
				SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput');
				CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g`,
			extra:  "max_lag_mb = 1\n" + checkHooks,
			ok:     true,
			expect: []string{"warn  slot {slot}: inactive (no walhook is streaming from it), lag ", "is above max_lag_mb = 1: PostgreSQL keeps that WAL on its disk"},
		},
		{
			name:   "slot of another kind",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); SELECT pg_create_physical_replication_slot('{slot}')`,
			extra:  checkHooks,
			expect: []string{`FAIL  slot {slot} exists but is not a pgoutput logical slot of this database (physical, plugin "", database "")`},
		},
		{
			name:   "a bare table name",
			setup:  `CREATE TABLE orders (id int PRIMARY KEY)`,
			extra:  "[[webhook]]\nname = \"a\"\nurl = \"https://127.0.0.1:9/x\"\nevents = [\"orders\"]\n",
			ok:     true,
			expect: []string{"ok    table public.orders: REPLICA IDENTITY DEFAULT (primary key)", "walhook can run with this config"},
		},
		{
			name:  "an entity named like another table",
			setup: `CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE orders_v2 (id int PRIMARY KEY)`,
			extra: "[[entity]]\nname = \"orders\"\ntable = \"public.orders_v2\"\n" +
				"[[webhook]]\nname = \"a\"\nurl = \"https://127.0.0.1:9/x\"\nevents = [\"orders\"]\n",
			ok: true,
			expect: []string{`warn  table public.orders: [[entity]] "orders" names table public.orders_v2, so events = ["orders"] means that entity, not this table: write public.orders for this table`,
				"ok    table public.orders_v2: REPLICA IDENTITY DEFAULT"},
			absent: []string{"ok    table public.orders:"},
		},
		{
			name:  "secret over plain http",
			setup: `CREATE TABLE people (id int PRIMARY KEY)`,
			extra: `
[[webhook]]
name = "remote"
url = "http://hooks.example.com/x"
events = ["public.people"]
secret = "s3cret"
signature = "sha256"`,
			ok:     true,
			expect: []string{"warn  webhook remote: a signed webhook to hooks.example.com over plain http"},
		},
		{
			name:  "basic auth over plain http",
			setup: `CREATE TABLE people (id int PRIMARY KEY)`,
			extra: `
[[webhook]]
name = "remote"
url = "http://hooks.example.com/x"
events = ["public.people"]
basic_auth = { username = "u", password = "s3cret" }`,
			ok:     true,
			expect: []string{"warn  webhook remote: basic_auth to hooks.example.com over plain http sends the password readable on the way: use https"},
		},
		{
			name:   "signature without a secret",
			extra:  "[[webhook]]\nname = \"a\"\nurl = \"https://h.example.com/\"\nevents = [\"public.people\"]\nsignature = \"sha256\"\n",
			expect: []string{`FAIL  `, `webhook "a": secrets: required with signature "sha256"`},
		},
		{
			name:   "secret from an unset variable",
			extra:  "[[webhook]]\nname = \"a\"\nurl = \"https://h.example.com/\"\nevents = [\"public.people\"]\nsecret_env = \"WALHOOK_TEST_UNSET_SECRET\"\n",
			expect: []string{`FAIL  `, `webhook "a": secret_env: $WALHOOK_TEST_UNSET_SECRET is not set`},
		},
		{
			name:   "template that does not render",
			extra:  "[[webhook]]\nname = \"a\"\nurl = \"https://h.example.com/\"\nevents = [\"public.people\"]\ntemplate = '{{.Nope}}'\n",
			expect: []string{`FAIL  `, `webhook "a": template: rendering a sample event`},
		},
		{
			name:   "url that does not parse",
			extra:  "[[webhook]]\nname = \"a\"\nurl = \"hooks.example.com/x\"\nevents = [\"public.people\"]\n",
			expect: []string{`FAIL  `, `webhook "a": url: must be an absolute http or https URL (got "hooks.example.com/x")`},
		},
	}
	major := serverMajor(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dsn := newDatabase(t)
			db := dbName(dsn)
			fill := strings.NewReplacer("{db}", db, "{role}", "r_"+db, "{slot}", slotFor(dsn), "{major}", major).Replace
			t.Cleanup(func() { dropSlot(t, slotFor(dsn)) })
			if tc.setup != "" {
				execSQL(t, dsn, fill(tc.setup))
			}
			if tc.open != "" {
				testkit.OpenWrite(t, dsn, "legacy-app", tc.open)
			}
			if tc.asRole {
				dsn = asRole(dsn, "r_"+db)
			}
			if tc.dsn != nil {
				dsn = tc.dsn(t, dsn)
			}
			out, err := runCheck(t, writeConfig(t, dsn, fill(tc.extra)))
			if tc.ok && err != nil {
				t.Errorf("check failed: %v\n%s", err, out)
			}
			if !tc.ok && !errors.Is(err, errCheckFailed) {
				t.Errorf("check err = %v, want errCheckFailed\n%s", err, out)
			}
			for _, want := range tc.expect {
				if want = fill(want); !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			for _, not := range tc.absent {
				if strings.Contains(out, not) {
					t.Errorf("output has %q:\n%s", not, out)
				}
			}
			if strings.Contains(out, "s3cret") {
				t.Error("check printed a secret")
			}
		})
	}
}

// TestCheckServerSettings runs check against a cluster that cannot do
// logical replication at all: each setting gets its own line with the fix,
// and the replication connection, bound to fail for the same reason, is
// not reported again.
func TestCheckServerSettings(t *testing.T) {
	c, err := pgcluster.Start(context.Background(), "wal_level=replica", "max_wal_senders=0", "max_replication_slots=0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := runCheck(t, writeConfig(t, c.DSN("postgres"), ""))
	if !errors.Is(err, errCheckFailed) {
		t.Errorf("err = %v", err)
	}
	for _, want := range []string{
		"FAIL  wal_level = replica: logical replication needs wal_level = logical; run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
		"FAIL  max_replication_slots = 0 with 0 in use: walhook needs one more; run ALTER SYSTEM SET max_replication_slots = 1; then restart PostgreSQL",
		"FAIL  max_wal_senders = 0 with 0 in use: walhook's replication connection needs one more; run ALTER SYSTEM SET max_wal_senders = 1; then restart PostgreSQL",
		"3 problem(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckAPIWebhooks: webhooks created through the admin API are checked
// with the config's, read from the store or, while a walhook holds the
// store, from its admin API.
func TestCheckAPIWebhooks(t *testing.T) {
	dsn := newDatabase(t)
	defer dropSlot(t, slotFor(dsn))
	execSQL(t, dsn, `CREATE TABLE people (id int PRIMARY KEY)`)
	dir := filepath.Join(t.TempDir(), "data")
	q, err := deliver.Open(deliver.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close() }()
	var w deliver.Webhook
	deliver.ApplyDefaults(&w)
	w.Name, w.URL, w.Events = "from-api", "http://127.0.0.1:9/api", []string{"public.orders"}
	if _, err := q.CreateWebhook(w); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.New(admin.Options{Token: "check-token", Queue: q})}
	go srv.Serve(ln)
	defer srv.Close()
	config := func(listen, token string) string {
		return writeConfig(t, dsn, fmt.Sprintf("[store]\ndir = %q\n[admin]\nlisten = %q\ntoken = %q\n", dir, listen, token)+checkHooks)
	}
	missing := "FAIL  table public.orders: does not exist"

	// A running walhook holds the store: its admin API answers.
	out, err := runCheck(t, config(ln.Addr().String(), "check-token"))
	if !errors.Is(err, errCheckFailed) || !strings.Contains(out, "1 webhook(s) created through the admin API, read from the running walhook's admin API, are checked too: from-api") || !strings.Contains(out, missing) {
		t.Errorf("with the admin API:\n%s", out)
	}
	// A wrong token: said, not guessed around.
	out, _ = runCheck(t, config(ln.Addr().String(), "wrong"))
	if !strings.Contains(out, "warn  webhooks created through the admin API are not checked") || !strings.Contains(out, "401") || strings.Contains(out, missing) {
		t.Errorf("with a wrong token:\n%s", out)
	}
	// No admin API to ask.
	out, _ = runCheck(t, config("", ""))
	if !strings.Contains(out, "not checked: the store is in use") || !strings.Contains(out, "[admin] listen is off") {
		t.Errorf("without the admin API:\n%s", out)
	}
	// walhook stopped: read from the store itself.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ = runCheck(t, config("", ""))
	if !strings.Contains(out, "read from the store "+dir) || !strings.Contains(out, missing) {
		t.Errorf("from the store:\n%s", out)
	}
	execSQL(t, dsn, `CREATE TABLE orders (id int PRIMARY KEY)`)
	if out, err := runCheck(t, config("", "")); err != nil {
		t.Errorf("with the table made, check still fails: %v\n%s", err, out)
	}
}

// TestCheckDamagedStore: a store walhook would refuse to open fails the
// check, with the way out.
func TestCheckDamagedStore(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "data")
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "walhook.db"), bytes.Repeat([]byte{0xAB}, 32768), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "walhook.toml")
	if err := os.WriteFile(path, []byte(postgresSection(newDatabase(t))+"[store]\ndir = \"data\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCheck(t, path)
	if !errors.Is(err, errCheckFailed) || !strings.Contains(out, "FAIL  the store "+filepath.Join(store, "walhook.db")+" is damaged (invalid database): restore it from a backup") {
		t.Errorf("check: %v\n%s", err, out)
	}
}

// TestCheckBackfillSlot: with walhook's slot taking the last one, check
// warns that a backfill's temporary slot would not fit.
func TestCheckBackfillSlot(t *testing.T) {
	c, err := pgcluster.Start(context.Background(), "max_replication_slots=1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, _ := runCheck(t, writeConfig(t, c.DSN("postgres"), ""))
	for _, want := range []string{
		"ok    max_replication_slots = 1 (0 in use, walhook will take one)",
		"warn  max_replication_slots = 1 leaves no slot for a backfill's temporary one: a backfill would fail; raise it to 2 to allow one",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// serverMajor is the test cluster's major version ("15"), as its
// server_version_num says.
func serverMajor(t *testing.T) string {
	t.Helper()
	conn := testkit.Connect(t, cluster.DSN("postgres"))
	defer conn.Close(context.Background())
	var num int
	if err := conn.QueryRow(context.Background(), `SELECT current_setting('server_version_num')::int`).Scan(&num); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(num / 10000)
}
