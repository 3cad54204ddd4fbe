package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/cdc"
	"walhook/matcher"
)

// errCheckFailed makes `walhook check` exit 1 after printing its report.
var errCheckFailed = errors.New("check found problems")

// checkReport collects one line per finding.
type checkReport struct {
	w        io.Writer
	problems int
}

func (r *checkReport) ok(format string, a ...any)   { fmt.Fprintf(r.w, "ok    "+format+"\n", a...) }
func (r *checkReport) warn(format string, a ...any) { fmt.Fprintf(r.w, "warn  "+format+"\n", a...) }
func (r *checkReport) fail(format string, a ...any) {
	r.problems++
	fmt.Fprintf(r.w, "FAIL  "+format+"\n", a...)
}

func checkCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	rep := &checkReport{w: stdout}
	cfg, err := LoadConfig(*path)
	if err != nil {
		rep.fail("%v", err)
		return errCheckFailed
	}
	rep.ok("config %s is valid (%d webhooks)", *path, len(cfg.Webhooks))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	checkDatabase(ctx, cfg, rep)
	checkWebhooks(cfg, rep)
	if rep.problems > 0 {
		fmt.Fprintf(stdout, "%d problem(s)\n", rep.problems)
		return errCheckFailed
	}
	fmt.Fprintln(stdout, "walhook can run with this config")
	return nil
}

func checkDatabase(ctx context.Context, cfg *Config, rep *checkReport) {
	conn, err := pgx.Connect(ctx, cfg.Postgres.DSN)
	if err != nil {
		rep.fail("postgres: cannot connect: %v", err)
		return
	}
	defer conn.Close(context.Background())

	var version, walLevel string
	var maxSlots, maxSenders, usedSlots, senders int
	err = conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('wal_level'),
		current_setting('max_replication_slots')::int, current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_stat_replication)`).
		Scan(&version, &walLevel, &maxSlots, &maxSenders, &usedSlots, &senders)
	if err != nil {
		rep.fail("postgres: %v", err)
		return
	}
	rep.ok("postgres %s", version)
	if walLevel == "logical" {
		rep.ok("wal_level = logical")
	} else {
		rep.fail("wal_level = %s: logical replication needs wal_level = logical; run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", walLevel)
	}

	var slotExists bool
	conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, cfg.Postgres.Slot).Scan(&slotExists)
	switch {
	case slotExists:
		rep.ok("max_replication_slots = %d (%d in use, one of them walhook's)", maxSlots, usedSlots)
	case usedSlots >= maxSlots:
		rep.fail("max_replication_slots = %d and all are in use: walhook needs one more (ALTER SYSTEM SET max_replication_slots = %d; then restart)", maxSlots, usedSlots+1)
	default:
		rep.ok("max_replication_slots = %d (%d in use, walhook will take one)", maxSlots, usedSlots)
	}
	if senders >= maxSenders {
		rep.fail("max_wal_senders = %d and all are in use", maxSenders)
	} else {
		rep.ok("max_wal_senders = %d (%d in use)", maxSenders, senders)
	}

	checkRole(ctx, conn, cfg, rep)
	checkTables(ctx, conn, cfg, rep)
	checkSlot(ctx, conn, cfg, rep)
}

func checkRole(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) {
	var role string
	var super, replication, canCreate bool
	err := conn.QueryRow(ctx, `SELECT current_user, rolsuper, rolreplication, has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles WHERE rolname = current_user`).Scan(&role, &super, &replication, &canCreate)
	if err != nil {
		rep.fail("role: %v", err)
		return
	}
	if super || replication {
		rep.ok("role %s may connect for replication and create the slot", role)
	} else {
		rep.fail("role %s lacks REPLICATION: ALTER ROLE %s WITH REPLICATION;", role, pgx.Identifier{role}.Sanitize())
	}
	if !*cfg.Postgres.ManagePublication {
		return
	}
	if _, all := configTables(cfg); all && !super {
		rep.fail("role %s cannot create a publication FOR ALL TABLES (a webhook says \"*\"): that needs a superuser; create it as one, or set manage_publication = false", role)
	} else if !super && !canCreate {
		rep.fail("role %s cannot create the publication: GRANT CREATE ON DATABASE %s TO %s; (and it must own the tables), or pre-create it and set manage_publication = false",
			role, pgx.Identifier{dbName(cfg.Postgres.DSN)}.Sanitize(), pgx.Identifier{role}.Sanitize())
	}
}

// configTables lists the tables the config's webhooks need.
func configTables(cfg *Config) (tables []string, all bool) {
	m, err := matcher.New(cfg.MatcherEntities(), cfg.rules())
	if err != nil {
		return nil, false
	}
	return m.Tables()
}

func dbName(dsn string) string {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "?"
	}
	return cc.Database
}

func checkTables(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) {
	tables, all := configTables(cfg)
	var pubExists, pubAll bool
	conn.QueryRow(ctx, `SELECT count(*) > 0, coalesce(bool_or(puballtables), false) FROM pg_publication WHERE pubname = $1`,
		cfg.Postgres.Publication).Scan(&pubExists, &pubAll)
	switch {
	case pubExists:
		rep.ok("publication %s exists", cfg.Postgres.Publication)
	case *cfg.Postgres.ManagePublication:
		rep.ok("publication %s does not exist yet; walhook will create it", cfg.Postgres.Publication)
	default:
		rep.fail("publication %s does not exist and manage_publication = false: CREATE PUBLICATION %s FOR TABLE %s;",
			cfg.Postgres.Publication, pgx.Identifier{cfg.Postgres.Publication}.Sanitize(), strings.Join(quoteTables(tables), ", "))
	}
	if all {
		rep.ok("a webhook wants every table (\"*\"): the publication is FOR ALL TABLES")
	}
	for _, t := range tables {
		checkTable(ctx, conn, cfg, t, pubExists && !pubAll, rep)
	}
}

func quoteTables(tables []string) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		s, n, _ := strings.Cut(t, ".")
		out[i] = pgx.Identifier{s, n}.Sanitize()
	}
	return out
}

func checkTable(ctx context.Context, conn *pgx.Conn, cfg *Config, table string, checkPub bool, rep *checkReport) {
	schema, name, _ := strings.Cut(table, ".")
	quoted := pgx.Identifier{schema, name}.Sanitize()
	var exists, hasPK, canSelect, inPub bool
	var ident string
	err := conn.QueryRow(ctx, `SELECT true, c.relreplident::text,
		EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
		has_table_privilege(c.oid, 'SELECT'),
		EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $3 AND p.schemaname = $1 AND p.tablename = $2)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
		schema, name, cfg.Postgres.Publication).Scan(&exists, &ident, &hasPK, &canSelect, &inPub)
	if errors.Is(err, pgx.ErrNoRows) {
		rep.fail("table %s: does not exist (a webhook's events name it)", table)
		return
	}
	if err != nil {
		rep.fail("table %s: %v", table, err)
		return
	}
	if !canSelect {
		rep.fail("table %s: the role cannot read it: GRANT SELECT ON %s TO %s;", table, quoted, "<walhook role>")
	}
	if checkPub && !inPub {
		if *cfg.Postgres.ManagePublication {
			rep.ok("table %s: not in the publication yet; walhook will add it", table)
		} else {
			rep.fail("table %s: not in publication %s: ALTER PUBLICATION %s ADD TABLE %s;", table, cfg.Postgres.Publication,
				pgx.Identifier{cfg.Postgres.Publication}.Sanitize(), quoted)
		}
	}
	full := fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", quoted)
	switch {
	case ident == "f":
		rep.ok("table %s: REPLICA IDENTITY FULL: modify and delete carry the whole old row, changed is filled", table)
	case ident == "d" && hasPK:
		rep.ok("table %s: REPLICA IDENTITY DEFAULT (primary key): delete carries the key only, modify has no old row and no changed; for old values run %s", table, full)
	case ident == "i":
		rep.ok("table %s: REPLICA IDENTITY USING INDEX: old rows carry that index's columns only; for old values run %s", table, full)
	case ident == "n":
		rep.fail("table %s: REPLICA IDENTITY NOTHING: the application's UPDATE and DELETE will fail once it is published; run %s", table, full)
	default:
		rep.fail("table %s: no primary key and REPLICA IDENTITY DEFAULT: the application's UPDATE and DELETE will fail once it is published; add a primary key or run %s", table, full)
	}
}

func checkSlot(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) {
	var active bool
	var plugin string
	var lag *int64
	err := conn.QueryRow(ctx, `SELECT active, plugin, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, cfg.Postgres.Slot).Scan(&active, &plugin, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		rep.ok("slot %s does not exist yet; walhook will create it (pgoutput)", cfg.Postgres.Slot)
		return
	}
	if err != nil {
		rep.fail("slot %s: %v", cfg.Postgres.Slot, err)
		return
	}
	if plugin != "pgoutput" {
		rep.fail("slot %s uses plugin %s, not pgoutput: pick another slot name or drop it", cfg.Postgres.Slot, plugin)
		return
	}
	state := "inactive"
	if active {
		state = "active (a walhook is streaming from it)"
	}
	var bytes int64
	if lag != nil {
		bytes = *lag
	}
	if limit := int64(cfg.Postgres.MaxLagMB) << 20; bytes > limit {
		rep.fail("slot %s: %s, lag %d bytes is above max_lag_mb = %d: the database keeps that WAL on disk; run walhook, or drop the slot with walhook teardown", cfg.Postgres.Slot, state, bytes, cfg.Postgres.MaxLagMB)
		return
	}
	rep.ok("slot %s: %s, lag %d bytes", cfg.Postgres.Slot, state, bytes)
}

func checkWebhooks(cfg *Config, rep *checkReport) {
	for _, w := range cfg.DeliverWebhooks() {
		u, err := url.Parse(w.URL)
		if err != nil {
			rep.fail("webhook %s: url: %v", w.Name, err)
			continue
		}
		if w.Signature != "" && len(w.Secrets) == 0 {
			rep.fail("webhook %s: signature = %q but no secret", w.Name, w.Signature)
			continue
		}
		if len(w.Secrets) > 0 && u.Scheme == "http" && !isLoopback(hostOnly(u.Host)) {
			rep.warn("webhook %s: a signed webhook to %s over plain http: use https so the secret-signed payload is not readable on the way", w.Name, u.Host)
			continue
		}
		rep.ok("webhook %s -> %s", w.Name, w.URL)
	}
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

func teardownCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("teardown", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	yes := fs.Bool("yes", false, "really drop the slot and the publication")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	if !*yes {
		fmt.Fprintf(stderr, "teardown drops slot %q and publication %q; run again with -yes\n", cfg.Postgres.Slot, cfg.Postgres.Publication)
		return errUsage
	}
	pub := cfg.Postgres.Publication
	if !*cfg.Postgres.ManagePublication {
		pub = "" // the DBA made it; it is theirs to drop
	}
	if err := cdc.Teardown(ctx, cfg.Postgres.DSN, cfg.Postgres.Slot, pub); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	if pub == "" {
		fmt.Fprintf(stdout, "dropped slot %s (publication %s kept: manage_publication = false)\n", cfg.Postgres.Slot, cfg.Postgres.Publication)
	} else {
		fmt.Fprintf(stdout, "dropped slot %s and publication %s\n", cfg.Postgres.Slot, pub)
	}
	return nil
}
