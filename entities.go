package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/admin"
	"walhook/cdc"
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
			out[i].ReplicaIdentity, out[i].PrimaryKey, out[i].Unpublished = t.ReplicaIdentity, t.PrimaryKey, t.Unpublished
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// readableTables returns the tables of cdc.ListTables that the role may
// SELECT, named schema.table, each with cdc's verdict on publishing it.
func readableTables(ctx context.Context, dsn string) ([]admin.Entity, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	tables, err := cdc.ListTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	var out []admin.Entity
	for _, t := range tables {
		if !t.Readable {
			continue
		}
		e := admin.Entity{Name: t.String(), Table: t.String(), Source: "database",
			ReplicaIdentity: t.ReplicaIdentity, PrimaryKey: t.PrimaryKey}
		switch problem := t.Problem(); {
		case errors.Is(problem, cdc.ErrNoIdentity):
			e.Unpublished = "no primary key or replica identity: not published (its UPDATE would fail)"
		case errors.Is(problem, cdc.ErrUnlogged):
			e.Unpublished = "UNLOGGED: not published (none of its changes reach the WAL)"
		}
		out = append(out, e)
	}
	return out, nil
}
