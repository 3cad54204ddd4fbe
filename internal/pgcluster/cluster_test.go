package pgcluster_test

import (
	"context"
	"testing"

	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

func TestStart(t *testing.T) {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dsn, err := c.CreateDatabase(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	var lvl string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&lvl); err != nil || lvl != "logical" {
		t.Fatalf("wal_level = %q, %v", lvl, err)
	}
}
