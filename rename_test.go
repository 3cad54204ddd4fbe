package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRenamedTableWarned: the application's migration renames a table
// walhook publishes. PostgreSQL goes on publishing it under its new name,
// which the config does not name: walhook says so in its log, once per
// table, instead of dropping its changes silently.
func TestRenamedTableWarned(t *testing.T) {
	dsn := itemsDatabase(t)
	rc := newReceiver(t, nil)
	_, _, dir := runItemsWalhook(t, dsn, fmt.Sprintf("[[webhook]]\nname = \"items\"\nurl = %q\nevents = [\"item\"]\n", rc.URL), nil)
	logPath := filepath.Join(dir, "walhook.log")
	readLog := func() string { raw, _ := os.ReadFile(logPath); return string(raw) }
	const warning = "changes of a table that no webhook or entity names"

	execSQL(t, dsn, `INSERT INTO items VALUES (1, 1, 'before the rename')`)
	waitFor(t, "row 1 delivered", 30*time.Second, func() bool { return itemIDs(rc)[1] })
	if strings.Contains(readLog(), warning) {
		t.Fatalf("warned while the table had its configured name:\n%s", readLog())
	}

	execSQL(t, dsn, `ALTER TABLE items RENAME TO goods`)
	execSQL(t, dsn, `INSERT INTO goods VALUES (2, 2, 'after the rename')`)
	execSQL(t, dsn, `INSERT INTO goods VALUES (3, 3, 'after the rename')`)
	// Renamed back, the table's changes reach the webhook again. Row 4
	// arrives after walhook has routed rows 2 and 3: the WAL is read in
	// order.
	execSQL(t, dsn, `ALTER TABLE goods RENAME TO items`)
	execSQL(t, dsn, `INSERT INTO items VALUES (4, 4, 'renamed back')`)
	waitFor(t, "row 4 delivered", 30*time.Second, func() bool { return itemIDs(rc)[4] })
	var lines []string
	for _, l := range strings.Split(readLog(), "\n") {
		if strings.Contains(l, warning) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "table=public.goods") {
		t.Errorf("want one warning naming public.goods, got %q", lines)
	}
	if ids := itemIDs(rc); len(ids) != 2 || ids[2] || ids[3] {
		t.Errorf("the receiver got rows %v, want 1 and 4: the renamed table's rows match no webhook", ids)
	}
}
