package main

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"walhook/deliver"
	"walhook/matcher"
)

// checkFilters warns about what a webhook's when and columns cannot work
// with: a when that reads old or changed on a table without REPLICA
// IDENTITY FULL (they would be empty, or the expression would fail), and
// columns or exclude_columns naming a column none of its tables has (a
// silent no-op otherwise). Neither is an error: the table may change
// before walhook runs.
func checkFilters(ctx context.Context, conn *pgx.Conn, cfg *Config, rep *checkReport) {
	for _, w := range cfg.Webhooks {
		if w.When == "" && len(w.Columns) == 0 && len(w.ExcludeColumns) == 0 {
			continue
		}
		var f *deliver.Filter
		if w.When != "" {
			f, _ = deliver.CompileWhen(w.When) // the config load checked it
		}
		m, err := matcher.New(cfg.MatcherEntities(), []matcher.Rule{{Webhook: w.Name, Events: w.Events, Actions: w.Actions}})
		if err != nil {
			continue
		}
		tables, all := m.Tables()
		if all {
			continue // every table: no one table to judge by
		}
		have := map[string]bool{}
		found := false
		for _, table := range tables {
			schema, name, _ := strings.Cut(table, ".")
			var identity string
			var cols []string
			err := conn.QueryRow(ctx, `SELECT CASE c.relreplident WHEN 'f' THEN 'FULL' WHEN 'i' THEN 'USING INDEX' WHEN 'n' THEN 'NOTHING' ELSE 'DEFAULT' END,
				array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
				FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, schema, name).Scan(&identity, &cols)
			if errors.Is(err, pgx.ErrNoRows) {
				continue // checkTable says it is missing
			}
			if err != nil {
				rep.warn("webhook %s: cannot read table %s to check its when and columns: %v", w.Name, table, err)
				continue
			}
			found = true
			for _, c := range cols {
				have[c] = true
			}
			if f != nil && (f.ReadsOld || f.ReadsChanged) && identity != "FULL" {
				var reads []string
				if f.ReadsOld {
					reads = append(reads, "old")
				}
				if f.ReadsChanged {
					reads = append(reads, "changed")
				}
				rep.warn("webhook %s: its when reads %s, but table %s has REPLICA IDENTITY %s: an UPDATE carries no old row (so no changed) and a DELETE only the key, so the expression sees them empty or fails; ALTER TABLE %s REPLICA IDENTITY FULL;",
					w.Name, strings.Join(reads, " and "), table, identity, pgx.Identifier{schema, name}.Sanitize())
			}
		}
		if !found {
			continue
		}
		for _, list := range []struct {
			key   string
			names []string
		}{{"columns", w.Columns}, {"exclude_columns", w.ExcludeColumns}} {
			var unknown []string
			for _, c := range list.names {
				if !have[c] {
					unknown = append(unknown, c)
				}
			}
			if len(unknown) > 0 {
				rep.warn("webhook %s: %s names %s, which %s does not have", w.Name, list.key, quoteList(unknown), strings.Join(slices.Sorted(slices.Values(tables)), ", "))
			}
		}
	}
}

// quoteList is "a", "b".
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return strings.Join(q, ", ")
}
