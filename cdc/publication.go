package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// checkTables makes sure every table exists and can be published, warns
// about tables whose UPDATE/DELETE PostgreSQL will refuse once they are in
// a publication, and returns the partitioned ones.
func checkTables(ctx context.Context, conn *pgx.Conn, log *slog.Logger, tables []tableName) (partitioned []tableName, err error) {
	for _, t := range tables {
		var ident, persistence, kind string
		var hasIdentIndex bool
		err := conn.QueryRow(ctx, `
			SELECT c.relreplident::text, c.relpersistence::text, c.relkind::text,
			       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident))
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`,
			t.schema, t.table).Scan(&ident, &persistence, &kind, &hasIdentIndex)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("table %s does not exist", t)
		}
		if err != nil {
			return nil, fmt.Errorf("look up table %s: %w", t, err)
		}
		if persistence == "u" {
			return nil, fmt.Errorf("table %s is UNLOGGED: PostgreSQL writes none of its changes to the WAL, so it cannot be published (ALTER TABLE %s SET LOGGED)",
				t, pgx.Identifier{t.schema, t.table}.Sanitize())
		}
		if ident == "n" || (ident != "f" && !hasIdentIndex) {
			log.Warn("table has no primary key or replica identity: its UPDATE and DELETE will fail while it is in the publication; add a primary key or set REPLICA IDENTITY",
				"table", t.String(), "replica_identity", ident)
		}
		if kind == "p" {
			partitioned = append(partitioned, t)
		}
	}
	return partitioned, nil
}

// ensurePublication creates the publication or changes it to cover exactly
// tables (or all tables). Changes that replace the publication happen in one
// transaction, so no decoded change ever sees it missing.
func ensurePublication(ctx context.Context, conn *pgx.Conn, log *slog.Logger, name string, tables []tableName, all bool) error {
	var partitioned []tableName
	if !all {
		var err error
		if partitioned, err = checkTables(ctx, conn, log, tables); err != nil {
			return err
		}
	}
	pub := pgx.Identifier{name}.Sanitize()
	var exists, pubAll, viaRoot bool
	err := conn.QueryRow(ctx, `SELECT true, puballtables, pubviaroot FROM pg_publication WHERE pubname = $1`, name).Scan(&exists, &pubAll, &viaRoot)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("look up publication %s: %w", name, err)
	}
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
	current, err := publicationTables(ctx, conn, name)
	if err != nil {
		return err
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
	rows, err := conn.Query(ctx, `SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1`, name)
	if err != nil {
		return nil, fmt.Errorf("list publication %s: %w", name, err)
	}
	var out []tableName
	var t tableName
	if _, err := pgx.ForEachRow(rows, []any{&t.schema, &t.table}, func() error {
		out = append(out, t)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list publication %s: %w", name, err)
	}
	slices.SortFunc(out, func(a, b tableName) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
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

// sqlState returns the SQLSTATE of a PostgreSQL error, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
