package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/deliver/store"
	"walhook/internal/pgcluster"
)

// appendFile appends text to the file at path.
func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// pgStoreSection is a [store] section that keeps the queue in schema of
// the database at dsn.
func pgStoreSection(dsn, schema string) string {
	return fmt.Sprintf("\n[store]\nkind = \"postgres\"\ndsn = %q\nschema = %q\n", dsn, schema)
}

// TestCrashSIGKILLPostgresStore: TestCrashSIGKILL with the queue in
// PostgreSQL (another database of the same cluster, as the docs
// recommend): SIGKILLed mid-stream, with retries waiting and while it
// stores a big transaction's chunks, walhook loses none, sends each under
// one id, in order per row.
func TestCrashSIGKILLPostgresStore(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 20,000 changes")
	}
	crashSIGKILL(t, pgStoreSection(newDatabase(t), "walhook"))
}

// TestPostgresStoreInSourceDatabase: with the store in the database walhook
// reads and a webhook on "*" (a FOR ALL TABLES publication), walhook's own
// tables are never events: the webhook gets the application's changes
// alone, and walhook's writes of their outcomes do not feed back.
func TestPostgresStoreInSourceDatabase(t *testing.T) {
	h := newHarness(t, "CREATE TABLE orders (id int PRIMARY KEY, status text)")
	rc := newReceiver(t, nil)
	text := fmt.Sprintf("%s[log]\ndir = %q\n[admin]\nlisten = \"127.0.0.1:0\"\n%s\n[[webhook]]\nname = \"all\"\nurl = %q\nevents = [\"*\"]\n",
		postgresSection(h.dsn), h.dir, pgStoreSection(h.dsn, "walhook"), rc.URL)
	cfg, err := ParseConfig(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	h.startConfig(cfg)
	var pub bool
	if err := h.db.QueryRow(context.Background(), `SELECT puballtables FROM pg_publication WHERE pubname = $1`, slotFor(h.dsn)).Scan(&pub); err != nil || !pub {
		t.Fatalf("the publication is not FOR ALL TABLES (%v, %v): the test would not show walhook's tables left out", pub, err)
	}
	h.exec(`INSERT INTO orders VALUES (1, 'new')`)
	h.exec(`UPDATE orders SET status = 'paid' WHERE id = 1`)
	h.exec(`DELETE FROM orders WHERE id = 1`)
	waitFor(t, "three deliveries", 30*time.Second, func() bool { return len(rc.requests()) >= 3 })
	// Their outcomes are stored, in walhook's tables, before the sentinel.
	waitFor(t, "the outcomes stored", 30*time.Second, func() bool { return h.app.queue.Stats("all").SuccessfulCalls >= 3 })
	h.exec(`INSERT INTO orders VALUES (2, 'sentinel')`)
	waitFor(t, "the sentinel", 30*time.Second, func() bool { return len(rc.requests()) >= 4 })
	waitFor(t, "the queue drained", 30*time.Second, func() bool { return h.app.queue.Stats("all").Queued == 0 })
	var events []string
	for _, r := range rc.requests() {
		events = append(events, r.Header.Get("X-Walhook-Event"))
		if !strings.Contains(string(r.Body), `"orders`) {
			t.Errorf("a delivery that is not of orders: %s", r.Body)
		}
	}
	if st := h.app.queue.Stats("all"); len(events) != 4 || st.SuccessfulCalls != 4 {
		t.Fatalf("%d deliveries (%v), %d successful calls: want the 4 changes of orders alone", len(events), events, st.SuccessfulCalls)
	}
	var stored int
	if err := h.db.QueryRow(context.Background(), `SELECT count(*) FROM walhook.deliveries WHERE webhook = 'all'`).Scan(&stored); err != nil || stored != 4 {
		t.Fatalf("walhook.deliveries holds %d deliveries (%v), want 4", stored, err)
	}
}

// TestLeaderFailover: three walhooks share a store in PostgreSQL; one
// leads (reads the slot), every one delivers its share of the partitions
// and is ready, and the overview of each says who leads. The leader is
// SIGKILLed while 20,000 changes are written: another takes the slot over,
// the others take the dead one's partitions once their leases run out,
// and every change arrives, in order per row, a repeat only under the
// same id. The takeover time is logged, not asserted.
func TestLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 20,000 changes")
	}
	dsn := itemsDatabase(t)
	storeDSN := newDatabase(t)
	rc, url := newKeyReceiver(t, nil)
	var procs []*process
	var admins []string
	for i := range 3 {
		admin := freeAddr(t)
		cfg := crashConfig(t, dsn, url, admin)
		appendFile(t, cfg, pgStoreSection(storeDSN, "walhook"))
		procs = append(procs, startProcess(t, filepath.Join(t.TempDir(), fmt.Sprint("walhook", i, ".log")), "run", "-config", cfg))
		admins = append(admins, admin)
	}
	leader := -1
	waitFor(t, "one leader and two others, all ready, each delivering a share", time.Minute, func() bool {
		leader = -1
		others := 0
		for i, a := range admins {
			o, ok := overviewOf(a)
			if !ok || httpStatus("http://"+a+"/readyz") != 200 || len(o.Instances) != 3 {
				return false
			}
			for _, in := range o.Instances {
				if in.Parts == 0 {
					return false
				}
			}
			switch {
			case *o.Leader:
				leader = i
			case strings.Contains(o.Text["instances"], "leader: "):
				others++
			}
		}
		return leader >= 0 && others == 2
	})

	ctx := context.Background()
	db, c, _ := seededChurn(t, dsn, 3000)
	const total = 20000
	written := make(chan error, 1)
	go func() { written <- c.run(ctx, db, total) }()
	waitFor(t, "a quarter of the changes received", time.Minute, func() bool { return rc.count() >= total/4 })
	procs[leader].kill()
	killed := time.Now()
	t.Logf("leader %d killed with %d changes received", leader, rc.count())
	next := -1
	waitFor(t, "another leader", time.Minute, func() bool {
		for i, a := range admins {
			if o, ok := overviewOf(a); i != leader && ok && *o.Leader {
				next = i
				return true
			}
		}
		return false
	})
	t.Logf("walhook %d leads %.1f s after the kill", next, time.Since(killed).Seconds())
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	rc.awaitAll(t, c.keys, 90*time.Second)
	if t.Failed() {
		logMetrics(t, admins[next])
	}
}

// sharedOverview is what the tests read of GET /api/overview with a
// shared store.
type sharedOverview struct {
	Leader    *bool             `json:"leader"`
	Instances []store.Instance  `json:"instances"`
	Text      map[string]string `json:"text"`
}

// overviewOf reads a walhook's overview; false when it does not answer or
// shares no store.
func overviewOf(admin string) (sharedOverview, bool) {
	var o sharedOverview
	code, body := httpGet("http://" + admin + "/api/overview")
	if code != 200 || json.Unmarshal([]byte(body), &o) != nil || o.Leader == nil {
		return o, false
	}
	return o, true
}

// httpGet returns the status and body of a GET of url; 0 when it fails.
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestPostgresStoreRestart stops the store's PostgreSQL (immediate) while
// changes are written and starts it again: walhook stops reading and
// confirming, /readyz answers 503 meanwhile, it leads again when the store
// is back, and nothing is lost.
func TestPostgresStoreRestart(t *testing.T) {
	ctx := context.Background()
	st, err := pgcluster.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dsn := itemsDatabase(t)
	rc, url := newKeyReceiver(t, nil)
	admin := freeAddr(t)
	cfg := crashConfig(t, dsn, url, admin)
	appendFile(t, cfg, pgStoreSection(st.DSN("postgres"), "walhook"))
	startProcess(t, filepath.Join(t.TempDir(), "walhook.log"), "run", "-config", cfg)
	readyz := func() int { return httpStatus("http://" + admin + "/readyz") }
	waitFor(t, "/readyz 200", time.Minute, func() bool { return readyz() == 200 })

	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	c := newChurn(1000, 11)
	if err := c.run(ctx, db, 3000); err != nil {
		t.Fatal(err)
	}
	if err := st.StopServer(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 503 while the store is down", time.Minute, func() bool { return readyz() == 503 })
	if err := c.run(ctx, db, 4500); err != nil { // the application goes on
		t.Fatal(err)
	}
	if err := st.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.run(ctx, db, 6000); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 200 after the store's restart", time.Minute, func() bool { return readyz() == 200 })
	rc.awaitAll(t, c.keys, 3*time.Minute)
}

// TestMoveStore: a walhook on the bbolt store whose receiver does not
// answer holds pending deliveries and an API webhook; it is stopped, `walhook
// move-store` copies its store into PostgreSQL, and walhook started on the
// PostgreSQL store delivers every pending change, each under one id, in
// order per row, with the API webhook kept. (TestMoveToPostgres compares
// every record, counter and switch-off of a moved store.)
func TestMoveStore(t *testing.T) {
	dsn := itemsDatabase(t)
	// The receiver holds the first requests unanswered: every delivery is
	// pending when walhook stops.
	var held atomic.Int64
	up := make(chan struct{})
	var upOnce sync.Once
	open := func() { upOnce.Do(func() { close(up) }) }
	t.Cleanup(open)
	rc, url := newKeyReceiver(t, func() bool {
		select {
		case <-up:
			return false
		default:
		}
		held.Add(1)
		<-up
		return true
	})
	admin, dir := freeAddr(t), t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	text := postgresSection(dsn) + fmt.Sprintf("[store]\ndir = %q\n[admin]\nlisten = %q\n[[webhook]]\nname = \"items\"\nurl = %q\nevents = [\"public.items\"]\nretry_mode = \"test\"\n",
		filepath.Join(dir, "data"), admin, url)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, filepath.Join(dir, "walhook.log"), "run", "-config", cfg)
	waitReady(t, admin)
	resp, err := http.Post("http://"+admin+"/api/webhooks", "application/json",
		strings.NewReader(fmt.Sprintf(`{"name": "api-made", "url": %q, "events": ["public.items"], "active": false}`, url)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating the API webhook: %s", resp.Status)
	}
	ctx := context.Background()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	c := newChurn(50, 3)
	if err := c.run(ctx, db, 300); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "requests held", time.Minute, func() bool { return held.Load() >= 5 })
	p.kill()

	text = strings.Replace(text, "[store]\n", "[store]\nkind = \"postgres\"\n"+fmt.Sprintf("dsn = %q\n", newDatabase(t)), 1)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(walhookBinary(t), "move-store", "-config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "moved the store in ") || !strings.Contains(string(out), "1 API webhooks") {
		t.Fatalf("move-store: %v\n%s", err, out)
	}
	t.Logf("%s", out)

	open()
	p = startProcess(t, filepath.Join(dir, "walhook2.log"), "run", "-config", cfg)
	waitFor(t, "/readyz 200 on the PostgreSQL store", time.Minute, func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })
	rc.awaitAll(t, c.keys, 90*time.Second)
	code, body := httpGet("http://" + admin + "/api/webhooks")
	if code != 200 || !strings.Contains(body, `"api-made"`) {
		t.Errorf("GET /api/webhooks after the move: %d %s", code, body)
	}
	// Into a store a walhook leads, nothing is moved.
	out, err = exec.Command(walhookBinary(t), "move-store", "-config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "a walhook leads the PostgreSQL store") {
		t.Errorf("move-store while a walhook leads the store: %v\n%s", err, out)
	}
}
