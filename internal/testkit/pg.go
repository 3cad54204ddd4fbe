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

// OpenWrite plays an application that left a transaction open after a
// write: it runs sql in a transaction of its own connection, named
// application, and leaves it open. The caller may end it; the test's end
// rolls it back.
func OpenWrite(t testing.TB, dsn, application, sql string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	conn := Connect(t, dsn+"&application_name="+application)
	t.Cleanup(func() { conn.Close(ctx) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	return tx
}

// QueryValue runs sql, which returns one row of one value, on a
// connection of its own to dsn, and returns the value or fails the test.
func QueryValue[T any](t testing.TB, dsn, sql string, args ...any) T {
	t.Helper()
	ctx := context.Background()
	conn := Connect(t, dsn)
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}
