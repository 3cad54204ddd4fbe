package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

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
	return dsn
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
