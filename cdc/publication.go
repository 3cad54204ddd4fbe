package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrPublicationMissing is returned (and retried) when the publication does
// not exist and walhook is not allowed to create it.
var ErrPublicationMissing = errors.New("publication does not exist")

// tableName is a schema-qualified table.
type tableName struct{ schema, table string }

func (t tableName) String() string { return t.schema + "." + t.table }

func (t tableName) quoted() string { return pgx.Identifier{t.schema, t.table}.Sanitize() }

// parseTable splits "schema.table"; a bare name is in public.
func parseTable(s string) (tableName, error) {
	schema, table, ok := strings.Cut(s, ".")
	if !ok {
		schema, table = "public", s
	}
	if schema == "" || table == "" {
		return tableName{}, fmt.Errorf("table %q: want schema.table", s)
	}
	return tableName{schema, table}, nil
}

func parseTables(in []string) ([]tableName, error) {
	out := make([]tableName, 0, len(in))
	for _, s := range in {
		t, err := parseTable(s)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b tableName) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// noIdentity is true of a pg_class row c whose UPDATE and DELETE
// PostgreSQL refuses while a publication publishes them: REPLICA IDENTITY
// NOTHING, or DEFAULT (or USING INDEX) without that index.
const noIdentity = `(c.relreplident = 'n' OR (c.relreplident <> 'f' AND NOT EXISTS (
	SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident))))`

// checkTables sorts the wanted tables into those the publication can cover
// and those it must not (Table.Problem): missing, not a table, UNLOGGED,
// or without a primary key or replica identity, whose UPDATE and DELETE
// PostgreSQL would then refuse. refused says why, with the fix, for each of
// the latter; err is a failure to look. A table without an identity that
// the publication covers already stays, with a warning: leaving it out
// would mend nothing.
func checkTables(ctx context.Context, conn *pgx.Conn, log *slog.Logger, tables, published []tableName) (ok, partitioned []tableName, refused, err error) {
	var why []error
	for _, name := range tables {
		t, err := inspect(ctx, conn, name)
		if err != nil {
			return nil, nil, nil, err
		}
		problem := t.Problem()
		switch {
		case errors.Is(problem, ErrNoIdentity) && slices.Contains(published, name):
			log.Warn("table has no primary key or replica identity: the application's UPDATE and DELETE on it fail while it is in the publication; add a primary key or set REPLICA IDENTITY FULL",
				"table", name.String())
		case problem != nil:
			why = append(why, problem)
			continue
		}
		ok = append(ok, name)
		if t.Kind == "p" {
			partitioned = append(partitioned, name)
		}
	}
	if len(why) > 0 {
		refused = unpublishable{errors.Join(why...)}
	}
	return ok, partitioned, refused, nil
}

// identityFix is the SQL that lets tables be published, for the first ten.
func identityFix(tables []tableName) string {
	var fix []string
	for i, t := range tables {
		if i == 10 {
			fix = append(fix, fmt.Sprintf("(and %d more tables)", len(tables)-i))
			break
		}
		fix = append(fix, "ALTER TABLE "+t.quoted()+" REPLICA IDENTITY FULL;")
	}
	return strings.Join(fix, " ")
}

// TablesWithoutIdentity lists the tables a publication FOR ALL TABLES
// covers whose UPDATE and DELETE PostgreSQL then refuses, and the SQL that
// mends them.
func TablesWithoutIdentity(ctx context.Context, conn *pgx.Conn) (tables []string, fix string, err error) {
	bad, err := tablesWithoutIdentity(ctx, conn)
	for _, t := range bad {
		tables = append(tables, t.String())
	}
	return tables, identityFix(bad), err
}

func tablesWithoutIdentity(ctx context.Context, conn *pgx.Conn) ([]tableName, error) {
	// What FOR ALL TABLES publishes: the permanent tables made after
	// initdb (FirstNormalObjectId), partitions included.
	return queryTables(ctx, conn, "list tables without replica identity", `
		SELECT n.nspname::text, c.relname::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.oid >= 16384 AND `+noIdentity)
}

// queryTables runs a query of (schema, table) rows and returns them
// sorted; what names it in an error.
func queryTables(ctx context.Context, conn *pgx.Conn, what, sql string, args ...any) ([]tableName, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var out []tableName
	var t tableName
	if _, err := pgx.ForEachRow(rows, []any{&t.schema, &t.table}, func() error {
		out = append(out, t)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	slices.SortFunc(out, func(a, b tableName) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// pubState is a publication as the catalog shows it.
type pubState struct {
	exists, all, viaRoot bool
	tables               []tableName // when it exists and is not FOR ALL TABLES
}

func readPublication(ctx context.Context, conn *pgx.Conn, name string) (pubState, error) {
	var st pubState
	err := conn.QueryRow(ctx, `SELECT true, puballtables, pubviaroot FROM pg_publication WHERE pubname = $1`, name).Scan(&st.exists, &st.all, &st.viaRoot)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return st, fmt.Errorf("look up publication %s: %w", name, err)
	}
	if st.exists && !st.all {
		if st.tables, err = publicationTables(ctx, conn, name); err != nil {
			return st, err
		}
	}
	return st, nil
}

// checkWanted sorts what the publication st should cover (tables, or all
// tables) as checkTables does. For all tables there is no part to publish:
// refused then means leaving the publication as it is.
func checkWanted(ctx context.Context, conn *pgx.Conn, log *slog.Logger, st pubState, tables []tableName, all bool) (ok, partitioned []tableName, refused, err error) {
	if !all {
		return checkTables(ctx, conn, log, tables, st.tables)
	}
	bad, err := tablesWithoutIdentity(ctx, conn)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(bad) > 0 && st.exists && st.all {
		log.Warn("tables without a primary key or replica identity are in the publication FOR ALL TABLES: the application's UPDATE and DELETE on them fail; give them a primary key or REPLICA IDENTITY FULL",
			"tables", len(bad), "fix", identityFix(bad))
	} else if len(bad) > 0 {
		refused = unpublishable{fmt.Errorf("a webhook wants every table (\"*\"), but FOR ALL TABLES would make the application's UPDATE and DELETE fail on the %d tables without a primary key or replica identity, so walhook does not create it; name the tables in the webhook's events instead, or give them a primary key, or: %s",
			len(bad), identityFix(bad))}
	}
	return nil, nil, refused, nil
}

// CheckTables reports, without changing anything, why the managed
// publication could not cover tables ("schema.table"), or every table: a
// table missing, UNLOGGED, or one whose UPDATE and DELETE PostgreSQL would
// then refuse. nil when it can, or when the database cannot be asked.
func (r *Reader) CheckTables(ctx context.Context, tables []string, all bool) error {
	parsed, err := parseTables(tables)
	if err != nil {
		return err
	}
	if !r.cfg.ManagePublication {
		return nil
	}
	conn, err := r.connect(ctx)
	if err != nil {
		return nil // the reader retries; this is no verdict on the tables
	}
	defer conn.Close(context.Background())
	st, err := readPublication(ctx, conn, r.cfg.Publication)
	if err != nil {
		return nil
	}
	_, _, refused, _ := checkWanted(ctx, conn, slog.New(slog.DiscardHandler), st, parsed, all)
	return refused
}

// unpublishable is a table the publication cannot take as it is: the DBA
// must change it (or the config), not a failure to ask.
type unpublishable struct{ error }

// ensurePublication creates the publication or changes it to cover exactly
// tables (or all tables). Changes that replace the publication happen in one
// transaction, so no decoded change ever sees it missing. Tables it must
// not publish are left out, and the error says why (unpublishable): the
// others are published all the same.
func ensurePublication(ctx context.Context, conn *pgx.Conn, log *slog.Logger, name string, tables []tableName, all bool) error {
	st, err := readPublication(ctx, conn, name)
	if err != nil {
		return err
	}
	tables, partitioned, refused, err := checkWanted(ctx, conn, log, st, tables, all)
	switch {
	case err != nil:
		return err
	case refused != nil && all:
		return refused // FOR ALL TABLES or nothing: the publication stays
	}
	if err := applyPublication(ctx, conn, log, name, st, tables, partitioned, all); err != nil {
		return err
	}
	return refused // the others are published
}

// applyPublication makes publication st cover tables (or all tables).
func applyPublication(ctx context.Context, conn *pgx.Conn, log *slog.Logger, name string, st pubState, tables, partitioned []tableName, all bool) error {
	pub := pgx.Identifier{name}.Sanitize()
	exists, pubAll, viaRoot, current := st.exists, st.all, st.viaRoot, st.tables
	create := "CREATE PUBLICATION " + pub + " FOR ALL TABLES"
	if !all {
		create = "CREATE PUBLICATION " + pub
		if len(tables) > 0 {
			create += " FOR TABLE " + quotedList(tables)
		}
	}
	// A partitioned table's changes are published under its own name, as
	// the config gives it, not under its partitions' names.
	// A publication made before (by an older walhook) is altered when it
	// matters: for a partitioned table it must; for all tables it is tried,
	// as there may be one.
	create += " WITH (" + viaRootOption + ")"
	if exists && !viaRoot && all == pubAll && (all || len(partitioned) > 0) {
		_, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" SET ("+viaRootOption+")")
		switch {
		case err == nil:
			log.Info("publication altered: partitioned tables publish their changes under their own name", "publication", name)
		case all:
			log.Warn("publication could not be altered: changes of partitioned tables come under their partitions' names", "publication", name, "err", err)
		default:
			return fmt.Errorf("alter publication %s so that partitioned table %s publishes its changes under its own name: %w", name, partitioned[0], err)
		}
	}
	switch {
	case !exists:
		if _, err := conn.Exec(ctx, create); err != nil {
			return fmt.Errorf("create publication %s: %w", name, err)
		}
		log.Info("publication created", "publication", name, "tables", len(tables), "all_tables", all)
		return nil
	case all && pubAll:
		return nil
	case all != pubAll:
		// FOR ALL TABLES cannot be switched by ALTER.
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "DROP PUBLICATION "+pub); err != nil {
				return fmt.Errorf("replace publication %s: %w", name, err)
			}
			if _, err := tx.Exec(ctx, create); err != nil {
				return fmt.Errorf("replace publication %s: %w", name, err)
			}
			log.Info("publication replaced", "publication", name, "tables", len(tables), "all_tables", all)
			return nil
		})
	}
	if slices.Equal(current, tables) {
		return nil
	}
	alter := "ALTER PUBLICATION " + pub + " SET TABLE " + quotedList(tables)
	if len(tables) == 0 {
		alter = "ALTER PUBLICATION " + pub + " DROP TABLE " + quotedList(current)
	}
	if _, err := conn.Exec(ctx, alter); err != nil {
		return fmt.Errorf("alter publication %s: %w", name, err)
	}
	log.Info("publication altered", "publication", name, "tables", len(tables))
	return nil
}

// viaRootOption makes a publication send a partitioned table's changes
// under the partitioned table's name.
const viaRootOption = "publish_via_partition_root = true"

// publicationTables lists the tables a publication names, sorted.
func publicationTables(ctx context.Context, conn *pgx.Conn, name string) ([]tableName, error) {
	return queryTables(ctx, conn, "list publication "+name,
		`SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1`, name)
}

func quotedList(tables []tableName) string {
	q := make([]string, len(tables))
	for i, t := range tables {
		q[i] = t.quoted()
	}
	return strings.Join(q, ", ")
}

// publicationExists reports whether the DBA-made publication is there.
func publicationExists(ctx context.Context, conn *pgx.Conn, name string) error {
	var one int
	err := conn.QueryRow(ctx, `SELECT 1 FROM pg_publication WHERE pubname = $1`, name).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("publication %s (manage_publication = false): %w", name, ErrPublicationMissing)
	}
	return err
}

// Teardown drops the slot and the publication if they exist. An active
// slot (another walhook still reading) is an error.
func Teardown(ctx context.Context, dsn, slot, publication string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	var errs []error
	if slot != "" {
		_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err != nil {
			errs = append(errs, fmt.Errorf("drop slot %s: %w", slot, err))
		}
	}
	if publication != "" {
		if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{publication}.Sanitize()); err != nil {
			errs = append(errs, fmt.Errorf("drop publication %s: %w", publication, err))
		}
	}
	return errors.Join(errs...)
}
