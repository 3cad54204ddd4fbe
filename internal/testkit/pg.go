package testkit

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Connect opens a connection to dsn or fails the test; the caller closes it.
func Connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
