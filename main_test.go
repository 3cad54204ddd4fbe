package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/internal/pgcluster"
)

// cluster is the PostgreSQL shared by this package's tests; each test gets
// its own database.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	c, err := pgcluster.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "walhook tests need PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

var dbSeq atomic.Int64

// newDatabase creates a fresh database and returns its DSN.
func newDatabase(t *testing.T) string {
	t.Helper()
	dsn, err := cluster.CreateDatabase(context.Background(), fmt.Sprintf("t%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so run last: after the test's walhooks stopped.
	t.Cleanup(func() { dropSlots(t, dsn) })
	return dsn
}

// dropSlots drops the test database's slots, if walhook made any: slots are
// cluster-wide and capped, and each keeps WAL until dropped. A walsender
// that has not noticed its walhook's end yet is ended first.
func dropSlots(t *testing.T, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Logf("drop the test's slot: %v", err)
		return
	}
	defer conn.Close(ctx)
	for ctx.Err() == nil {
		_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = current_database() AND active_pid IS NOT NULL`)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()`)
		}
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("drop the test's slot: %v", err)
}

// execSQL runs the statements of sql on dsn, one at a time.
func execSQL(t *testing.T, dsn, sql string) {
	t.Helper()
	runStatements(t, dsn, "test SQL", sql)
}

// slotFor names a replication slot after the test database: slots are
// cluster-wide, so each test needs its own.
func slotFor(dsn string) string { return "s_" + dbName(dsn) }

// postgresSection is the [postgres] table for a test database.
func postgresSection(dsn string) string {
	return fmt.Sprintf("[postgres]\ndsn = %q\nslot = %q\npublication = %q\n", dsn, slotFor(dsn), slotFor(dsn))
}
