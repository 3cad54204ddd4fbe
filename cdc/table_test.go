package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// TestInspect: the one verdict on publishing a table, for each way a
// table can be unpublishable, and ListTables agreeing with Inspect. The
// verdict is what PostgreSQL does: a table judged without identity is one
// whose UPDATE fails once published, and a table judged publishable
// takes an UPDATE under a publication.
func TestInspect(t *testing.T) {
	dsn, _ := newDB(t)
	execSQL(t, dsn,
		`CREATE TABLE pk (id int PRIMARY KEY, v int)`,
		`CREATE TABLE full_nokey (v int)`, `ALTER TABLE full_nokey REPLICA IDENTITY FULL`,
		`CREATE TABLE by_index (id int NOT NULL, v int)`, `CREATE UNIQUE INDEX by_index_id ON by_index (id)`,
		`ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_id`,
		`CREATE TABLE index_gone (id int NOT NULL, v int)`, `CREATE UNIQUE INDEX index_gone_id ON index_gone (id)`,
		`ALTER TABLE index_gone REPLICA IDENTITY USING INDEX index_gone_id`, `DROP INDEX index_gone_id`,
		`CREATE TABLE nokey (v int)`,
		`CREATE TABLE nothing (id int PRIMARY KEY, v int)`, `ALTER TABLE nothing REPLICA IDENTITY NOTHING`,
		`CREATE UNLOGGED TABLE unlogged (id int PRIMARY KEY, v int)`,
		`CREATE VIEW a_view AS SELECT 1 AS v`,
		`CREATE SCHEMA shop`, `CREATE TABLE shop.orders (id int PRIMARY KEY, v int)`,
		`CREATE TABLE parted (id int PRIMARY KEY, v int) PARTITION BY RANGE (id)`,
		`CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000)`,
	)
	conn := testkit.Connect(t, dsn)
	defer conn.Close(context.Background())
	for _, tc := range []struct {
		table    string
		ident    string
		want     error // nil: publishable
		identity bool
	}{
		{"pk", "default", nil, true},
		{"public.full_nokey", "full", nil, true},
		{"by_index", "index", nil, true},
		{"index_gone", "index", cdc.ErrNoIdentity, false},
		{"nokey", "default", cdc.ErrNoIdentity, false},
		{"nothing", "nothing", cdc.ErrNoIdentity, false},
		{"unlogged", "default", cdc.ErrUnlogged, true},
		{"a_view", "nothing", cdc.ErrNotATable, false},
		{"missing", "", cdc.ErrTableMissing, false},
		{"shop.orders", "default", nil, true},
		{"parted", "default", nil, true},
	} {
		t.Run(tc.table, func(t *testing.T) {
			got, err := cdc.Inspect(t.Context(), conn, tc.table)
			if err != nil {
				t.Fatal(err)
			}
			tab := got[0]
			if problem := tab.Problem(); !errors.Is(problem, tc.want) || (tc.want == nil) != (problem == nil) {
				t.Errorf("Problem() = %v, want %v", problem, tc.want)
			}
			if tab.ReplicaIdentity != tc.ident {
				t.Errorf("ReplicaIdentity = %q, want %q", tab.ReplicaIdentity, tc.ident)
			}
			if !tab.Exists || tab.Kind != "r" && tab.Kind != "p" || tab.Unlogged {
				return
			}
			// What PostgreSQL does with an UPDATE once the table is published.
			pub := "p_" + tab.Name
			execSQL(t, dsn, fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s`, pub, tab.Quoted()))
			_, err = conn.Exec(context.Background(), "UPDATE "+tab.Quoted()+" SET v = 1")
			if (err == nil) != tc.identity {
				t.Errorf("UPDATE under a publication: %v, but Identified = %v", err, tab.Identified)
			}
		})
	}

	listed, err := cdc.ListTables(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tab := range listed {
		names = append(names, tab.String())
		one, err := cdc.Inspect(t.Context(), conn, tab.String())
		if err != nil {
			t.Fatal(err)
		}
		if one[0] != tab {
			t.Errorf("ListTables gives %+v, Inspect %+v", tab, one[0])
		}
	}
	want := []string{"public.by_index", "public.full_nokey", "public.index_gone", "public.nokey", "public.nothing",
		"public.parted", "public.pk", "public.unlogged", "shop.orders"}
	if !slices.Equal(names, want) {
		t.Errorf("ListTables = %v, want %v (no view, no partition)", names, want)
	}
}
