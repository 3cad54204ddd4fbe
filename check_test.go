package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"walhook/internal/pgcluster"
)

// writeConfig writes a config file for dsn with the given extra TOML.
func writeConfig(t *testing.T, dsn, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	text := postgresSection(dsn) + extra
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCheck(t *testing.T, path string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), []string{"check", "-config", path}, &out, &out)
	return out.String(), err
}

const checkHooks = `
[[webhook]]
name = "a"
url = "http://127.0.0.1:9/x"
events = ["public.people"]
`

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		setup  string // SQL run first
		dsn    func(dsn string) string
		extra  string
		ok     bool
		expect []string
	}{
		{
			name:   "usable",
			setup:  `CREATE TABLE people (id int PRIMARY KEY, name text)`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"ok    wal_level = logical", "REPLICA IDENTITY DEFAULT (primary key)", `ALTER TABLE "public"."people" REPLICA IDENTITY FULL;`, "walhook will create it (pgoutput)"},
		},
		{
			name:   "full identity",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); ALTER TABLE people REPLICA IDENTITY FULL`,
			extra:  checkHooks,
			ok:     true,
			expect: []string{"REPLICA IDENTITY FULL: modify and delete carry the whole old row"},
		},
		{
			name:   "missing table",
			extra:  checkHooks,
			expect: []string{"FAIL  table public.people: does not exist"},
		},
		{
			name:   "no primary key",
			setup:  `CREATE TABLE people (id int, name text)`,
			extra:  checkHooks,
			expect: []string{"FAIL  table public.people: no primary key and REPLICA IDENTITY DEFAULT", `ALTER TABLE "public"."people" REPLICA IDENTITY FULL;`},
		},
		{
			name:   "role without replication",
			setup:  `CREATE TABLE people (id int PRIMARY KEY); CREATE ROLE plain LOGIN`,
			dsn:    func(dsn string) string { return strings.Replace(dsn, "postgres@", "plain@", 1) },
			extra:  checkHooks,
			expect: []string{`FAIL  role plain lacks REPLICATION: ALTER ROLE "plain" WITH REPLICATION;`, `GRANT SELECT ON "public"."people"`},
		},
		{
			name:   "publication missing, unmanaged",
			setup:  `CREATE TABLE people (id int PRIMARY KEY)`,
			extra:  "manage_publication = false\n" + checkHooks,
			expect: []string{`does not exist and manage_publication = false: CREATE PUBLICATION "s_t`},
		},
		{
			name: "slot lag",
			setup: `CREATE TABLE people (id int PRIMARY KEY);
				SELECT pg_create_logical_replication_slot('s_' || current_database(), 'pgoutput');
				CREATE TABLE filler AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g`,
			extra:  "max_lag_mb = 1\n" + checkHooks,
			expect: []string{"FAIL  slot s_t", "is above max_lag_mb = 1"},
		},
		{
			name:  "secret over plain http",
			setup: `CREATE TABLE people (id int PRIMARY KEY)`,
			extra: `
[[webhook]]
name = "remote"
url = "http://hooks.example.com/x"
events = ["public.people"]
secret = "s3cret"
signature = "sha256"`,
			ok:     true,
			expect: []string{"warn  webhook remote: a signed webhook to hooks.example.com over plain http"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dsn := newDatabase(t)
			if tc.setup != "" {
				execSQL(t, dsn, tc.setup)
			}
			if tc.dsn != nil {
				dsn = tc.dsn(dsn)
			}
			out, err := runCheck(t, writeConfig(t, dsn, tc.extra))
			if tc.ok && err != nil {
				t.Errorf("check failed: %v\n%s", err, out)
			}
			if !tc.ok && !errors.Is(err, errCheckFailed) {
				t.Errorf("check err = %v, want errCheckFailed\n%s", err, out)
			}
			for _, want := range tc.expect {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "s3cret") {
				t.Error("check printed a secret")
			}
		})
	}
}

// TestCheckWalLevel runs check against a cluster without wal_level=logical.
func TestCheckWalLevel(t *testing.T) {
	c, err := pgcluster.Start(context.Background(), "wal_level=replica")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := runCheck(t, writeConfig(t, c.DSN("postgres"), ""))
	if !errors.Is(err, errCheckFailed) {
		t.Errorf("err = %v", err)
	}
	if want := "FAIL  wal_level = replica: logical replication needs wal_level = logical; run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}
