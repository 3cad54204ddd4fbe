package cdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The reasons a table cannot be published; Table.Problem wraps one of
// them, and callers that word their own advice branch on them.
var (
	ErrTableMissing = errors.New("does not exist")
	ErrNotATable    = errors.New("is not a table")
	ErrUnlogged     = errors.New("is UNLOGGED")
	ErrNoIdentity   = errors.New("has no primary key or replica identity")
)

// Table is what PostgreSQL's catalog says about one table as far as
// publishing it goes. The publication manager, walhook check and the admin
// entity list all read it through Inspect or ListTables and judge it by
// Problem, so none of them can disagree with the others.
type Table struct {
	Schema, Name string
	Exists       bool
	Kind         string // pg_class.relkind: "r" table, "p" partitioned table; others cannot be published
	Partition    bool   // a partition of a partitioned table
	Unlogged     bool
	// ReplicaIdentity is "default", "full", "index" or "nothing".
	ReplicaIdentity string
	PrimaryKey      bool
	// Identified: PostgreSQL has a key to write with its UPDATE and DELETE
	// (FULL, or the primary key or identity index exists), so it lets the
	// application run them while a publication covers the table.
	Identified bool
	Owner      string
	OwnerSuper bool
	Owned      bool // the role owns it, or inherits its owner's rights: it may publish it
	Readable   bool // the role may SELECT it
}

// String is schema.table.
func (t Table) String() string { return t.Schema + "." + t.Name }

// Quoted is schema.table quoted for SQL.
func (t Table) Quoted() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// Problem says why no publication can carry the table, with the SQL that
// mends it, wrapping one of ErrTableMissing, ErrNotATable, ErrUnlogged and
// ErrNoIdentity; nil when one can.
func (t Table) Problem() error {
	switch {
	case !t.Exists:
		return fmt.Errorf("table %s %w", t, ErrTableMissing)
	case t.Kind != "r" && t.Kind != "p":
		return fmt.Errorf("table %s %w (relkind %s): only tables can be published", t, ErrNotATable, t.Kind)
	case t.Unlogged:
		return fmt.Errorf("table %s %w: PostgreSQL writes none of its changes to the WAL, so it cannot be published (ALTER TABLE %s SET LOGGED)",
			t, ErrUnlogged, t.Quoted())
	case !t.Identified:
		return fmt.Errorf("table %s %w: once published, the application's UPDATE and DELETE on it would fail, so walhook does not publish it; add a primary key, or: %s",
			t, ErrNoIdentity, identityFix([]tableName{{t.Schema, t.Name}}))
	}
	return nil
}

// tableQuery reads a Table's columns, in Table's order from Kind on.
const tableQuery = `SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relispartition, c.relpersistence = 'u',
	CASE c.relreplident WHEN 'd' THEN 'default' WHEN 'f' THEN 'full' WHEN 'i' THEN 'index' ELSE 'nothing' END,
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
	NOT ` + noIdentity + `,
	r.rolname::text, r.rolsuper, pg_has_role(c.relowner, 'USAGE'), has_table_privilege(c.oid, 'SELECT')
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner`

func (t *Table) fields() []any {
	return []any{&t.Schema, &t.Name, &t.Kind, &t.Partition, &t.Unlogged, &t.ReplicaIdentity, &t.PrimaryKey,
		&t.Identified, &t.Owner, &t.OwnerSuper, &t.Owned, &t.Readable}
}

// Inspect reads each of tables ("schema.table"; a bare name is in public)
// from the catalog, in the order given; a table that is not there has
// Exists false.
func Inspect(ctx context.Context, conn *pgx.Conn, tables ...string) ([]Table, error) {
	out := make([]Table, 0, len(tables))
	for _, s := range tables {
		name, err := parseTable(s)
		if err != nil {
			return nil, err
		}
		t, err := inspect(ctx, conn, name)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func inspect(ctx context.Context, conn *pgx.Conn, name tableName) (Table, error) {
	// Any relkind: a view named in the events is "not a table", not
	// missing.
	t := Table{Schema: name.schema, Name: name.table}
	err := conn.QueryRow(ctx, tableQuery+` WHERE n.nspname = $1 AND c.relname = $2`,
		name.schema, name.table).Scan(t.fields()...)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Table{Schema: name.schema, Name: name.table}, nil
	case err != nil:
		return Table{}, fmt.Errorf("look up table %s: %w", name, err)
	}
	t.Exists = true
	return t, nil
}

// ListTables reads every table an application would subscribe to: the
// ordinary and partitioned tables outside the system schemas, partitions
// left out (their changes come under their parent's name), sorted by
// schema and name.
func ListTables(ctx context.Context, conn *pgx.Conn) ([]Table, error) {
	rows, err := conn.Query(ctx, tableQuery+`
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY n.nspname, c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []Table
	var t Table
	if _, err := pgx.ForEachRow(rows, t.fields(), func() error {
		t.Exists = true
		out = append(out, t)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return out, nil
}

// Inspect reads tables from the catalog as the package's Inspect does,
// over a connection of its own.
func (r *Reader) Inspect(ctx context.Context, tables ...string) ([]Table, error) {
	conn, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return Inspect(ctx, conn, tables...)
}
