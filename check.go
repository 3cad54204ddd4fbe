package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"walhook/cdc"
	"walhook/deliver"
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
	addAPIWebhooks(ctx, cfg, rep)
	checkDatabase(ctx, cfg, rep)
	checkWebhooks(cfg, rep)
	checkAdmin(cfg, rep)
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
	withWalhook := usedSlots // once walhook's slot exists
	switch {
	case slotExists:
		rep.ok("max_replication_slots = %d (%d in use, one of them walhook's)", maxSlots, usedSlots)
	case usedSlots >= maxSlots:
		rep.fail("max_replication_slots = %d with %d in use: walhook needs one more; run ALTER SYSTEM SET max_replication_slots = %d; then restart PostgreSQL", maxSlots, usedSlots, usedSlots+1)
	default:
		rep.ok("max_replication_slots = %d (%d in use, walhook will take one)", maxSlots, usedSlots)
		withWalhook++
	}
	if withWalhook == maxSlots {
		rep.warn("max_replication_slots = %d leaves no slot for a backfill's temporary one: a backfill would fail; raise it to %d to allow one", maxSlots, maxSlots+1)
	}
	sendersFree := senders < maxSenders
	if sendersFree {
		rep.ok("max_wal_senders = %d (%d in use)", maxSenders, senders)
	} else {
		rep.fail("max_wal_senders = %d with %d in use: walhook's replication connection needs one more; run ALTER SYSTEM SET max_wal_senders = %d; then restart PostgreSQL", maxSenders, senders, senders+1)
	}

	f, ok := checkRole(ctx, conn, cfg, rep)
	if !ok {
		return
	}
	// A missing REPLICATION attribute or wal sender is reported above
	// already; one line per problem.
	if (f.super || f.replication) && sendersFree {
		checkReplication(ctx, cfg, f.role, rep)
	}
	checkTables(ctx, conn, cfg, f, rep)
	checkSlot(ctx, conn, cfg, rep)
}

// roleFacts is what check learns about the role and the publication
// before it judges the tables.
type roleFacts struct {
	role        string
	super       bool
	replication bool
	canCreate   bool // CREATE on the database: needed to create a publication
	pubExists   bool
	pubAll      bool
	pubOwned    bool            // the role owns the publication (or inherits from its owner)
	pubViaRoot  bool            // publish_via_partition_root: partitioned tables publish under their own name
	pubTables   map[string]bool // schema.table in the publication
	publishes   map[string]bool // insert, update, delete, truncate
}

func checkRole(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) (*roleFacts, bool) {
	f := &roleFacts{pubTables: map[string]bool{}, publishes: map[string]bool{}}
	err := conn.QueryRow(ctx, `SELECT current_user, rolsuper, rolreplication, has_database_privilege(current_database(), 'CREATE')
		FROM pg_roles WHERE rolname = current_user`).Scan(&f.role, &f.super, &f.replication, &f.canCreate)
	if err != nil {
		rep.fail("role: %v", err)
		return nil, false
	}
	pub := cfg.Postgres.Publication
	var ins, upd, del, trunc bool
	err = conn.QueryRow(ctx, `SELECT puballtables, pg_has_role(pubowner, 'USAGE'), pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot
		FROM pg_publication WHERE pubname = $1`, pub).Scan(&f.pubAll, &f.pubOwned, &ins, &upd, &del, &trunc, &f.pubViaRoot)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		rep.fail("publication %s: %v", pub, err)
		return nil, false
	default:
		f.pubExists = true
		f.publishes = map[string]bool{"insert": ins, "update": upd, "delete": del, "truncate": trunc}
		rows, _ := conn.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, pub)
		var t string
		if _, err := pgx.ForEachRow(rows, []any{&t}, func() error { f.pubTables[t] = true; return nil }); err != nil {
			rep.fail("publication %s: %v", pub, err)
			return nil, false
		}
	}

	role := pgx.Identifier{f.role}.Sanitize()
	switch {
	case f.super:
		rep.ok("role %s is a superuser (walhook needs much less: see the README's For DBAs)", f.role)
	case f.replication:
		rep.ok("role %s has REPLICATION: it may create the slot and stream from it", f.role)
	default:
		rep.fail("role %s lacks REPLICATION, so it can neither create the slot nor stream: ALTER ROLE %s WITH REPLICATION;", f.role, role)
	}
	if !*cfg.Postgres.ManagePublication {
		rep.ok("manage_publication = false: walhook reads publication %s and never changes it", pub)
		return f, true
	}
	tables, all := configTables(cfg)
	quotedPub := pgx.Identifier{pub}.Sanitize()
	switch {
	case f.super:
	case all && !(f.pubExists && f.pubAll):
		rep.fail("role %s cannot create a publication FOR ALL TABLES (a webhook says \"*\"): only a superuser may; have one run CREATE PUBLICATION %s FOR ALL TABLES; and set manage_publication = false",
			f.role, quotedPub)
	case !f.pubExists && !f.canCreate:
		rep.fail("role %s cannot create publication %s: GRANT CREATE ON DATABASE %s TO %s; (it must also own the tables), or create the publication yourself and set manage_publication = false",
			f.role, pub, pgx.Identifier{dbName(cfg.Postgres.DSN)}.Sanitize(), role)
	case f.pubExists && !f.pubOwned && !all && !sameTables(tables, f.pubTables):
		rep.fail("publication %s belongs to another role, so walhook (manage_publication = true) cannot alter it to cover the webhooks' tables: ALTER PUBLICATION %s OWNER TO %s; or maintain it yourself and set manage_publication = false",
			pub, quotedPub, role)
	case f.pubExists && !f.pubOwned:
		rep.warn("publication %s belongs to another role: it covers the webhooks' tables now, but walhook cannot alter it when webhooks change; ALTER PUBLICATION %s OWNER TO %s; or set manage_publication = false",
			pub, quotedPub, role)
	}
	return f, true
}

func sameTables(want []string, have map[string]bool) bool {
	if len(want) != len(have) {
		return false
	}
	for _, t := range want {
		if !have[t] {
			return false
		}
	}
	return true
}

// checkReplication opens a replication connection the way walhook's
// reader does, so pg_hba.conf, connection limits and poolers are tested
// too, not only the role's attributes.
func checkReplication(ctx context.Context, cfg *Config, role string, rep *checkReport) {
	pc, err := cdc.ReplicationConfig(cfg.Postgres.DSN, "walhook check")
	if err != nil {
		rep.fail("postgres: dsn: %v", err)
		return
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err == nil {
		defer conn.Close(context.Background())
		_, err = pglogrepl.IdentifySystem(ctx, conn)
	}
	if err == nil {
		rep.ok("role %s can open a replication connection", role)
		return
	}
	var hint string
	switch cdc.SQLState(err) {
	case cdc.SQLStateInvalidAuthorization, cdc.SQLStateInvalidPassword:
		hint = "pg_hba.conf needs a line for this database and role from walhook's host (logical replication matches the database name, not the keyword replication), then SELECT pg_reload_conf();"
	case cdc.SQLStateTooManyConnections:
		hint = "walhook needs a replication connection and a few normal ones: raise the role's CONNECTION LIMIT, max_connections or max_wal_senders"
	case cdc.SQLStateInsufficientPrivilege:
		hint = fmt.Sprintf("ALTER ROLE %s WITH REPLICATION;", pgx.Identifier{role}.Sanitize())
	default:
		hint = "walhook's reader connects the same way: pg_hba.conf must let this role into this database from walhook's host, and a pooler such as PgBouncer cannot carry replication connections: connect to PostgreSQL directly"
	}
	rep.fail("cannot open a replication connection: %v: %s", err, hint)
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

// publishOf maps a webhook action to the publication's publish option.
var publishOf = map[string]string{
	cdc.ActionCreate: "insert", cdc.ActionModify: "update", cdc.ActionDelete: "delete", cdc.ActionTruncate: "truncate",
}

func checkTables(ctx context.Context, conn *pgx.Conn, cfg *Config, f *roleFacts, rep *checkReport) {
	tables, all := configTables(cfg)
	pub := cfg.Postgres.Publication
	quotedPub := pgx.Identifier{pub}.Sanitize()
	switch {
	case f.pubExists && f.pubAll:
		rep.ok("publication %s exists, FOR ALL TABLES", pub)
	case f.pubExists:
		rep.ok("publication %s exists (%d tables)", pub, len(f.pubTables))
	case *cfg.Postgres.ManagePublication:
		rep.ok("publication %s does not exist yet; walhook will create it", pub)
	case all || len(tables) == 0:
		rep.fail("publication %s does not exist and manage_publication = false: CREATE PUBLICATION %s FOR ALL TABLES; (as a superuser) or FOR TABLE the tables you want",
			pub, quotedPub)
	default:
		rep.fail("publication %s does not exist and manage_publication = false: CREATE PUBLICATION %s FOR TABLE %s;",
			pub, quotedPub, strings.Join(quoteTables(tables), ", "))
	}
	if all && *cfg.Postgres.ManagePublication {
		rep.ok("a webhook wants every table (\"*\"): the publication is FOR ALL TABLES")
	}
	if all && *cfg.Postgres.ManagePublication || f.pubExists && f.pubAll {
		checkAllTablesIdentity(ctx, conn, f, rep)
	}
	if f.pubExists {
		checkPublishes(cfg, f, rep)
	}
	unknown := checkBareNames(ctx, conn, cfg, rep)
	for _, t := range tables {
		if !unknown[t] {
			checkTable(ctx, conn, cfg, f, t, rep)
		}
	}
	checkShadowedTables(ctx, conn, cfg, rep)
	checkFilters(ctx, conn, cfg, rep)
}

// checkBareNames fails each bare name in the webhooks' events whose table
// public.<name> does not exist, with the line walhook run stops with, and
// returns those tables.
func checkBareNames(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) map[string]bool {
	m, err := matcher.New(cfg.MatcherEntities(), cfg.rules())
	if err != nil {
		return nil
	}
	unknown := map[string]bool{}
	for _, b := range m.BareNames() {
		found, err := cdc.Inspect(ctx, conn, b.Table())
		switch {
		case err != nil:
			rep.fail("table %s: %v", b.Table(), err)
		case !found[0].Exists:
			rep.fail("%v", b.Unknown())
			unknown[b.Table()] = true
		}
	}
	return unknown
}

// checkShadowedTables warns of a table in public named like an [[entity]]
// of another table: events = ["<name>"] means the entity, never the
// table, which is then known by schema.table.
func checkShadowedTables(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) {
	for _, e := range cfg.MatcherEntities() {
		table := "public." + e.Name
		if strings.Contains(e.Name, ".") || e.Schema+"."+e.Table == table {
			continue
		}
		found, err := cdc.Inspect(ctx, conn, table)
		if err != nil || !found[0].Exists {
			continue
		}
		rep.warn("table %s: [[entity]] %q names table %s.%s, so events = [%q] means that entity, not this table: write %s for this table (its events are then named %s.<action>)",
			table, e.Name, e.Schema, e.Table, e.Name, table, table)
	}
}

// checkAllTablesIdentity fails the tables a publication FOR ALL TABLES
// covers whose UPDATE and DELETE PostgreSQL refuses.
func checkAllTablesIdentity(ctx context.Context, conn *pgx.Conn, f *roleFacts, rep *checkReport) {
	bad, fix, err := cdc.TablesWithoutIdentity(ctx, conn)
	switch {
	case err != nil:
		rep.fail("%v", err)
	case len(bad) == 0:
	case f.pubExists && f.pubAll:
		rep.fail("the publication is FOR ALL TABLES, so the application's UPDATE and DELETE fail on the %d tables without a primary key or replica identity: give them a primary key, or %s",
			len(bad), fix)
	default:
		rep.fail("FOR ALL TABLES would make the application's UPDATE and DELETE fail on the %d tables without a primary key or replica identity, so walhook will not create it: name the tables in the webhooks' events instead of \"*\", or give them a primary key, or %s",
			len(bad), fix)
	}
}

// checkPublishes compares the publication's publish option with the
// actions the webhooks want: an action it does not publish never arrives.
func checkPublishes(cfg *Config, f *roleFacts, rep *checkReport) {
	wanted := map[string][]string{} // publish op -> webhooks
	for _, w := range cfg.DeliverWebhooks() {
		for _, a := range w.Actions {
			if op := publishOf[a]; op != "" && !slices.Contains(wanted[op], w.Name) {
				wanted[op] = append(wanted[op], w.Name)
			}
		}
	}
	var missing, publish []string
	for _, op := range []string{"insert", "update", "delete", "truncate"} {
		if f.publishes[op] || len(wanted[op]) > 0 {
			publish = append(publish, op)
		}
		if !f.publishes[op] && len(wanted[op]) > 0 {
			missing = append(missing, fmt.Sprintf("%s (wanted by %s)", op, strings.Join(wanted[op], ", ")))
		}
	}
	if len(missing) > 0 {
		rep.fail("publication %s does not publish %s: ALTER PUBLICATION %s SET (publish = '%s');",
			cfg.Postgres.Publication, strings.Join(missing, "; "), pgx.Identifier{cfg.Postgres.Publication}.Sanitize(), strings.Join(publish, ", "))
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

// checkPartitioned: a partitioned table's changes come under its own name
// only from a publication with publish_via_partition_root; without it they
// come under its partitions' names, which no webhook names.
func checkPartitioned(cfg *Config, f *roleFacts, table string, rep *checkReport) {
	pub := cfg.Postgres.Publication
	switch {
	case *cfg.Postgres.ManagePublication:
		rep.ok("table %s: partitioned: walhook publishes its changes under its own name (publish_via_partition_root)", table)
	case !f.pubExists:
		rep.fail("table %s: partitioned: create publication %s WITH (publish_via_partition_root = true), or its changes come under its partitions' names, which no webhook names",
			table, pub)
	case !f.pubViaRoot:
		rep.fail("table %s: partitioned, and publication %s sends its changes under its partitions' names, which no webhook names: ALTER PUBLICATION %s SET (publish_via_partition_root = true);",
			table, pub, pgx.Identifier{pub}.Sanitize())
	}
}

func checkTable(ctx context.Context, conn *pgx.Conn, cfg *Config, f *roleFacts, table string, rep *checkReport) {
	found, err := cdc.Inspect(ctx, conn, table)
	if err != nil {
		rep.fail("table %s: %v", table, err)
		return
	}
	t := found[0]
	quoted := t.Quoted()
	// The verdict is the publication manager's (Problem); the advice is
	// worded for this report.
	problem := t.Problem()
	switch {
	case errors.Is(problem, cdc.ErrTableMissing):
		rep.fail("table %s: does not exist (a webhook's events name it)", table)
		return
	case errors.Is(problem, cdc.ErrNotATable):
		rep.fail("table %s: is not a table (relkind %s): only tables can be published", table, t.Kind)
		return
	case errors.Is(problem, cdc.ErrUnlogged):
		rep.fail("table %s: is UNLOGGED: PostgreSQL writes none of its changes to the WAL, so none can be published: ALTER TABLE %s SET LOGGED;", table, quoted)
		return
	}
	role := pgx.Identifier{f.role}.Sanitize()
	if !t.Readable {
		// pgoutput does not check SELECT, so the stream works without it,
		// but the admin's entity list shows only the tables the role reads.
		rep.warn("table %s: role %s cannot read it, so the admin page does not offer it: GRANT SELECT ON %s TO %s;", table, f.role, quoted, role)
	}
	pub := cfg.Postgres.Publication
	quotedPub := pgx.Identifier{pub}.Sanitize()
	inPub := f.pubAll || f.pubTables[table]
	if t.Kind == "p" {
		if !inPub && f.pubExists {
			// Without publish_via_partition_root the publication's table
			// list names the partitions, not the table added to it.
			conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
				WHERE p.pubname = $1 AND r.prrelid = $2::regclass)`, pub, quoted).Scan(&inPub)
		}
		checkPartitioned(cfg, f, table, rep)
	}
	if !inPub {
		yourself := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s;", quotedPub, quoted)
		if !f.pubExists {
			yourself = fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s;", quotedPub, quoted)
		}
		switch {
		case !*cfg.Postgres.ManagePublication && f.pubExists:
			rep.fail("table %s: not in publication %s: ALTER PUBLICATION %s ADD TABLE %s;", table, pub, quotedPub, quoted)
		case !*cfg.Postgres.ManagePublication:
			// The missing publication is reported already.
		case !f.super && !t.Owned && t.OwnerSuper:
			// Membership in a superuser role is no advice to give.
			rep.fail("table %s: walhook (manage_publication = true) must own it to publish it, and superuser %s owns it: publish it yourself (%s) and set manage_publication = false",
				table, t.Owner, yourself)
		case !f.super && !t.Owned:
			rep.fail("table %s: walhook (manage_publication = true) must own it to publish it, and %s owns it: GRANT %s TO %s; or publish it yourself (%s) and set manage_publication = false",
				table, t.Owner, pgx.Identifier{t.Owner}.Sanitize(), role, yourself)
		case f.pubExists:
			rep.ok("table %s: not in the publication yet; walhook will add it", table)
		}
	}
	full := fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL;", quoted)
	switch {
	case t.ReplicaIdentity == "full":
		rep.ok("table %s: REPLICA IDENTITY FULL: modify and delete carry the whole old row, changed is filled", table)
	case problem == nil && t.ReplicaIdentity == "default":
		rep.ok("table %s: REPLICA IDENTITY DEFAULT (primary key): delete carries the key only, modify has no old row and no changed; for old values run %s", table, full)
	case problem == nil && t.ReplicaIdentity == "index":
		rep.ok("table %s: REPLICA IDENTITY USING INDEX: old rows carry that index's columns only, modify has no changed; for old values run %s", table, full)
	case t.ReplicaIdentity == "nothing":
		rep.fail("table %s: REPLICA IDENTITY NOTHING: the application's UPDATE and DELETE on it fail while a publication covers it, so walhook does not add it; run %s", table, full)
	case t.ReplicaIdentity == "index":
		rep.fail("table %s: REPLICA IDENTITY USING INDEX, and that index is gone: the application's UPDATE and DELETE on it fail while a publication covers it, so walhook does not add it; run %s", table, full)
	default:
		rep.fail("table %s: no primary key and REPLICA IDENTITY DEFAULT: the application's UPDATE and DELETE on it fail while a publication covers it, so walhook does not add it; add a primary key or run %s", table, full)
	}
	if t.ReplicaIdentity == "full" && !t.PrimaryKey && !entityNamesID(cfg, table) {
		// Every column is then the key pgoutput gives: an update changes
		// the entity_id, and the ordering per entity_id no longer follows
		// the row.
		rep.warn("table %s: no primary key, so entity_id is made of every column and changes with each update, and one row's events are not kept in order: name the columns that identify a row in its [[entity]] id", table)
	}
}

// entityNamesID reports whether an [[entity]] of table (schema.table) names
// its entity_id columns.
func entityNamesID(cfg *Config, table string) bool {
	for _, e := range cfg.Entities {
		if e.Table == table && len(e.ID) > 0 {
			return true
		}
	}
	return false
}

func checkSlot(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) {
	slot := cfg.Postgres.Slot
	var active, sameDB bool
	var slotType, plugin, walStatus, database string
	var pid *int32
	var lag *int64
	err := conn.QueryRow(ctx, `SELECT active, active_pid, slot_type, coalesce(plugin, ''), coalesce(database, ''),
		coalesce(database = current_database(), false), coalesce(wal_status, ''),
		(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - confirmed_flush_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&active, &pid, &slotType, &plugin, &database, &sameDB, &walStatus, &lag)
	if errors.Is(err, pgx.ErrNoRows) {
		rep.ok("slot %s does not exist yet; walhook will create it (pgoutput)", slot)
		// Creating it waits for every transaction that has written.
		if open, err := cdc.OpenWriters(ctx, conn); err == nil && len(open) > 0 {
			rep.warn("creating slot %s waits until these transactions end: %s", slot, strings.Join(open, "; "))
		}
		return
	}
	if err != nil {
		rep.fail("slot %s: %v", slot, err)
		return
	}
	if slotType != "logical" || plugin != "pgoutput" || !sameDB {
		rep.fail("slot %s exists but is not a pgoutput logical slot of this database (%s, plugin %q, database %q): choose another slot name, or drop it",
			slot, slotType, plugin, database)
		return
	}
	if walStatus == "lost" {
		rep.fail("slot %s was invalidated (wal_status = lost, see max_slot_wal_keep_size): it can stream no more; drop it with walhook teardown and start again (the changes in between are not delivered)", slot)
		return
	}
	state := "inactive (no walhook is streaming from it)"
	if active && pid != nil {
		state = fmt.Sprintf("active (streamed by PID %d)", *pid)
	}
	var bytes int64
	if lag != nil {
		bytes = max(*lag, 0)
	}
	if limit := int64(cfg.Postgres.MaxLagMB) << 20; bytes > limit {
		rep.warn("slot %s: %s, lag %d bytes (%.1f MB) is above max_lag_mb = %d: PostgreSQL keeps that WAL on its disk until walhook confirms it; run walhook, or drop the slot with walhook teardown",
			slot, state, bytes, float64(bytes)/(1<<20), cfg.Postgres.MaxLagMB)
		return
	}
	rep.ok("slot %s: %s, lag %d bytes", slot, state, bytes)
}

// checkAdmin warns of an admin server reachable off this machine over
// plain HTTP: its token and every webhook's definition cross the network
// readable.
func checkAdmin(cfg *Config, rep *checkReport) {
	listen := *cfg.Admin.Listen
	if host, _, err := net.SplitHostPort(listen); listen == "" || err != nil || isLoopback(host) || cfg.Admin.TLSCert != "" {
		return
	}
	rep.warn("admin: listen = %q serves plain HTTP off this machine, the token readable on the way: set [admin] tls_cert and tls_key, or listen on 127.0.0.1 behind a TLS proxy", listen)
}

func checkWebhooks(cfg *Config, rep *checkReport) {
	for _, w := range cfg.DeliverWebhooks() {
		u, err := url.Parse(w.URL)
		if err != nil {
			rep.fail("webhook %s: url: %q does not parse", w.Name, deliver.RedactURL(w.URL))
			continue
		}
		if w.Signature != "" && len(w.Secrets) == 0 {
			rep.fail("webhook %s: signature = %q but no secret", w.Name, w.Signature)
			continue
		}
		plain := u.Scheme == "http" && !isLoopback(hostOnly(u.Host))
		switch {
		case plain && len(w.Secrets) > 0:
			rep.warn("webhook %s: a signed webhook to %s over plain http: use https so the secret-signed payload is not readable on the way", w.Name, u.Host)
		case plain && w.BasicAuthPassword != "":
			rep.warn("webhook %s: basic_auth to %s over plain http sends the password readable on the way: use https", w.Name, u.Host)
		default:
			rep.ok("webhook %s -> %s", w.Name, deliver.RedactURL(w.URL))
		}
	}
}

// addAPIWebhooks adds the webhooks created through the admin API to cfg,
// so that their tables and actions are checked with the config's: from the
// store, or from the running walhook's admin API while it holds the store.
func addAPIWebhooks(ctx context.Context, cfg *Config, rep *checkReport) {
	hooks, err := deliver.ReadWebhooks(cfg.Store.Dir, 500*time.Millisecond)
	from := "the store " + cfg.Store.Dir
	if errors.Is(err, deliver.ErrStoreBusy) {
		hooks, err = apiWebhooksFromAdmin(ctx, cfg)
		from = "the running walhook's admin API"
	}
	if errors.Is(err, deliver.ErrStoreDamaged) {
		rep.fail("%v", err) // walhook would not start
		return
	}
	if err != nil {
		rep.warn("webhooks created through the admin API are not checked: %v", err)
		return
	}
	if len(hooks) == 0 {
		return
	}
	names := make([]string, len(hooks))
	for i, w := range hooks {
		names[i] = w.Name
		cfg.Webhooks = append(cfg.Webhooks, WebhookConfig{Name: w.Name, URL: w.URL, Events: w.Events, Actions: w.Actions,
			When: w.When, Columns: w.Columns, ExcludeColumns: w.ExcludeColumns})
	}
	rep.ok("%d webhook(s) created through the admin API, read from %s, are checked too: %s", len(hooks), from, strings.Join(names, ", "))
}

// apiWebhooksFromAdmin lists the API-created webhooks of a running walhook.
func apiWebhooksFromAdmin(ctx context.Context, cfg *Config) ([]deliver.Webhook, error) {
	base := adminURL(*cfg.Admin.Listen)
	if base == "" {
		return nil, fmt.Errorf("%w, and [admin] listen is off, so they cannot be asked for", deliver.ErrStoreBusy)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/api/webhooks", nil)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w, and its admin API does not answer: %v", deliver.ErrStoreBusy, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w, and its admin API answered %s to GET /api/webhooks", deliver.ErrStoreBusy, resp.Status)
	}
	var all []struct {
		Name, URL, Source string
		Events, Actions   []string
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&all); err != nil {
		return nil, fmt.Errorf("admin API: GET /api/webhooks: %w", err)
	}
	var out []deliver.Webhook
	for _, w := range all {
		if w.Source == deliver.SourceAPI {
			out = append(out, deliver.Webhook{Name: w.Name, URL: w.URL, Events: w.Events, Actions: w.Actions, Source: w.Source})
		}
	}
	return out, nil
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
	pub := cfg.Postgres.Publication
	if !*cfg.Postgres.ManagePublication {
		pub = "" // the DBA made it; it is theirs to drop
	}
	if !*yes {
		if pub == "" {
			fmt.Fprintf(stderr, "teardown drops slot %q (publication %q stays: manage_publication = false); run again with -yes\n", cfg.Postgres.Slot, cfg.Postgres.Publication)
		} else {
			fmt.Fprintf(stderr, "teardown drops slot %q and publication %q; run again with -yes\n", cfg.Postgres.Slot, pub)
		}
		return errUsage
	}
	// Dropping the publication under a walhook that still streams would
	// break it, so an active slot stops everything.
	if pid, err := slotActivePID(ctx, cfg.Postgres.DSN, cfg.Postgres.Slot); err != nil {
		return fmt.Errorf("teardown: %w", err)
	} else if pid != 0 {
		return fmt.Errorf("teardown: slot %s is active (PID %d streams from it): stop that walhook first; nothing was dropped", cfg.Postgres.Slot, pid)
	}
	if err := cdc.Teardown(ctx, cfg.Postgres.DSN, cfg.Postgres.Slot, pub); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	if pub == "" {
		fmt.Fprintf(stdout, "slot %s is gone (publication %s kept: manage_publication = false)\n", cfg.Postgres.Slot, cfg.Postgres.Publication)
	} else {
		fmt.Fprintf(stdout, "slot %s and publication %s are gone\n", cfg.Postgres.Slot, pub)
	}
	fmt.Fprintf(stdout, "the store (%s) and logs (%s) are yours to delete\n", cfg.Store.Dir, cfg.Log.Dir)
	return nil
}

// slotActivePID is the PID streaming from slot, 0 when none (or no slot).
func slotActivePID(ctx context.Context, dsn, slot string) (int32, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var pid *int32
	err = conn.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && pid == nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up slot %s: %w", slot, err)
	}
	return *pid, nil
}
