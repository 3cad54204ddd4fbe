package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/admin"
)

// entities lists the event types a webhook can subscribe to, for the admin:
// the configured [[entity]]s, then every other table the role can read,
// each with its REPLICA IDENTITY. Without the database it still returns
// the configured entities, with the error.
func (a *App) entities(ctx context.Context) ([]admin.Entity, error) {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	var out []admin.Entity
	byTable := map[string]int{} // schema.table -> index in out
	for _, e := range cfg.MatcherEntities() {
		table := e.Schema + "." + e.Table
		byTable[table] = len(out)
		out = append(out, admin.Entity{Name: e.Name, Table: table, Source: "config"})
	}
	tables, err := readableTables(ctx, cfg.Postgres.DSN)
	if err != nil {
		return out, err
	}
	for _, t := range tables {
		if i, ok := byTable[t.Table]; ok {
			out[i].ReplicaIdentity, out[i].PrimaryKey = t.ReplicaIdentity, t.PrimaryKey
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// readableTables returns the ordinary and partitioned tables outside the
// system schemas that the role may SELECT, named schema.table.
func readableTables(ctx context.Context, dsn string) ([]admin.Entity, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname,
		CASE c.relreplident WHEN 'd' THEN 'default' WHEN 'f' THEN 'full' WHEN 'i' THEN 'index' ELSE 'nothing' END,
		EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
		  AND has_table_privilege(c.oid, 'SELECT')
		ORDER BY n.nspname, c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out []admin.Entity
	for rows.Next() {
		e := admin.Entity{Source: "database"}
		if err := rows.Scan(&e.Table, &e.ReplicaIdentity, &e.PrimaryKey); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		e.Name = e.Table
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return out, nil
}
