package deliver

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// openWith opens a Queue in dir that routes every event to the named
// config webhooks, all posting to url; mod adjusts the Options first. The
// Queue is closed when the test ends, if the test has not closed it.
func openWith(t testing.TB, dir, url string, names []string, mod func(*Options)) *Queue {
	t.Helper()
	opts := Options{Dir: dir, Route: func(*cdc.Event) []string { return names }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&opts)
	}
	q, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	var ws []Webhook
	for _, name := range names {
		var w Webhook
		ApplyDefaults(&w)
		w.Name, w.URL, w.Events = name, url, []string{"*"}
		ws = append(ws, w)
	}
	if err := q.SetConfigWebhooks(ws); err != nil {
		t.Fatal(err)
	}
	return q
}

// viewStore reads the store in dir, whose Queue is closed.
func viewStore(t *testing.T, dir string, f func(*bolt.Tx)) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "walhook.db"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error { f(tx); return nil })
}

// eventually polls cond until it holds, and reports false if it still
// does not after timeout.
func eventually(timeout time.Duration, cond func() bool) bool {
	return testkit.Eventually(timeout, cond)
}

// writeBacklog writes n events, 1,000 to a transaction, each of its own
// entity and carrying data, and waits until they are durable. It returns
// the last transaction's end.
func writeBacklog(tb testing.TB, q *Queue, n int, data map[string]any) uint64 {
	tb.Helper()
	var lsn uint64
	for i := 0; i < n; i += 1000 {
		lsn += 10000
		tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now()}
		for j := range min(1000, n-i) {
			tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(lsn, uint32(j)), Schema: "public", Table: "t",
				Action: cdc.ActionCreate, Entity: "t", EntityID: strconv.Itoa(i + j), Data: data})
		}
		if err := q.Write(tb.Context(), tx); err != nil {
			tb.Fatal(err)
		}
	}
	if !eventually(10*time.Minute, func() bool { return q.Durable() > lsn }) {
		tb.Fatalf("the backlog of %d was not committed", n)
	}
	return lsn + 1
}

// hookDef is a config webhook for all events, as openWith defines them.
func hookDef(url, name string) Webhook {
	var w Webhook
	ApplyDefaults(&w)
	w.Name, w.URL, w.Events = name, url, []string{"*"}
	return w
}

// envInt is the integer in environment variable name, def when it is unset.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}
