package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestSecondInstanceWaits: a second `walhook run` on the same slot (its own
// store) reports that the slot is in use and waits, without taking a
// change; when the first exits it takes over, and nothing is lost.
func TestSecondInstanceWaits(t *testing.T) {
	dsn := itemsDatabase(t)
	rc, url := newKeyReceiver(t, nil)
	adminA, adminB := freeAddr(t), freeAddr(t)
	first := startProcess(t, filepath.Join(t.TempDir(), "first.log"), "run", "-config", crashConfig(t, dsn, url, adminA))
	waitFor(t, "the first ready", time.Minute, func() bool { return httpStatus("http://"+adminA+"/readyz") == 200 })
	secondLog := filepath.Join(t.TempDir(), "second.log")
	startProcess(t, secondLog, "run", "-config", crashConfig(t, dsn, url, adminB))
	waitFor(t, "the second to say the slot is in use", time.Minute, func() bool {
		raw, _ := os.ReadFile(secondLog)
		return strings.Contains(string(raw), "slot in use")
	})

	ctx := context.Background()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	c := newChurn(500, 11)
	if err := c.run(ctx, db, 2000); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first to deliver everything", 2*time.Minute, func() bool { return rc.missing(c.keys) == 0 })
	if got := httpStatus("http://" + adminB + "/readyz"); got != 503 {
		t.Errorf("the waiting second answers /readyz %d, want 503", got)
	}

	// The first exits (SIGTERM, graceful); the second takes over.
	first.Signal(syscall.SIGTERM)
	if err := first.Wait(); err != nil {
		t.Errorf("the first exited with %v", err)
	}
	waitFor(t, "the second to take over", time.Minute, func() bool { return httpStatus("http://"+adminB+"/readyz") == 200 })
	if err := c.run(ctx, db, 4000); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every change", 2*time.Minute, func() bool { return rc.missing(c.keys) == 0 })
	rc.verify(t, c.keys)
}
