package store_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"walhook/deliver"
	"walhook/deliver/store"
	"walhook/deliver/store/storetest"
	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// cluster holds the stores of the PostgreSQL tests, one schema each.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	c, err := pgcluster.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "the store's tests need PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

var schemas atomic.Int64

// openPostgres opens the store in schema of the test cluster's database.
func openPostgres(t *testing.T, schema string, retention int) (*store.Postgres, error) {
	return store.OpenPostgres(t.Context(), store.PostgresOptions{
		DSN: cluster.DSN("postgres"), Schema: schema, Retention: retention,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// TestPostgres runs the suite every store must pass against the
// PostgreSQL store, each case in a schema of its own.
func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention int) storetest.Opener {
		schema := fmt.Sprint("walhook_test_", schemas.Add(1))
		return func(t *testing.T) deliver.Store {
			s, err := openPostgres(t, schema, retention)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}

// A store whose tables a newer walhook wrote is refused with a message that
// says so; a walhook of the same version opens it again without creating
// anything.
func TestPostgresNewerSchemaRefused(t *testing.T) {
	const schema = "walhook_newer"
	s, err := openPostgres(t, schema, 10)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = openPostgres(t, schema, 10); err != nil {
		t.Fatalf("opening the store a second time: %v", err)
	}
	s.Close()
	conn := testkit.Connect(t, cluster.DSN("postgres"))
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), `UPDATE walhook_newer.schema_version SET version = $1`, store.PostgresVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err = openPostgres(t, schema, 10)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("version %d, newer than this walhook knows (%d)", store.PostgresVersion+1, store.PostgresVersion)) {
		t.Fatalf("opening a newer store: %v, want a refusal naming both versions", err)
	}
}

// A store that cannot be reached fails the open at once, naming the DSN
// without its password.
func TestPostgresUnreachable(t *testing.T) {
	dsn := "postgres://walhook:s3cret-pw@" + testkit.FreeAddr(t) + "/app?connect_timeout=5"
	_, err := store.OpenPostgres(t.Context(), store.PostgresOptions{DSN: dsn})
	if err == nil {
		t.Fatal("an unreachable store opened")
	}
	if msg := err.Error(); strings.Contains(msg, "s3cret-pw") || !strings.Contains(msg, "postgres://walhook:xxxxx@") {
		t.Fatalf("error %q: want the DSN named with its password masked", msg)
	}
}
