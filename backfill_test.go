package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestBackfillAPI: POST /api/webhooks/{name}/backfill sends the webhook
// the rows its table holds, as create events, to it alone; GET reports the
// progress; a later change of a row follows the row. Requests the
// backfill cannot serve get a 4xx that says why.
func TestBackfillAPI(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `CREATE TABLE employees (id int PRIMARY KEY, email text);
		INSERT INTO employees SELECT i, 'e' || i || '@x' FROM generate_series(1, 250) i;
		CREATE TABLE other (id int PRIMARY KEY)`)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"hr\"\nurl = %q\nevents = [\"public.employees\"]\nretry_mode = \"test\"\n"+
		"[[webhook]]\nname = \"changes-only\"\nurl = %q\nevents = [\"public.employees\"]\nactions = [\"modify\"]\n"+
		"[[webhook]]\nname = \"off\"\nurl = %q\nevents = [\"public.employees\"]\nactive = false\n", rc.URL+"/hr", rc.URL+"/changes-only", rc.URL+"/off"))
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+h.app.AdminAddr()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s %s: %d %q is not a JSON object", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode, v
	}
	for _, tc := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/api/webhooks/changes-only/backfill", "", 422, `webhook "changes-only" does not take create events`},
		{"/api/webhooks/off/backfill", "", 422, `webhook "off" is switched off`},
		{"/api/webhooks/hr/backfill", `{"events": ["*"]}`, 422, "name the entities or tables to backfill"},
		{"/api/webhooks/hr/backfill", `{"events": ["public.other"]}`, 422, `webhook "hr" does not take events of public.other`},
		{"/api/webhooks/hr/backfill", `{"events": ["nonsense"]}`, 422, `webhook "hr": events: unknown entity "nonsense": neither an [[entity]] nor a table public.nonsense exists`},
		{"/api/webhooks/hr/backfill", `{"events": "public.employees"}`, 400, "events: must be a JSON array"},
		{"/api/webhooks/nobody/backfill", "", 404, "not found"},
	} {
		if status, v := call("POST", tc.path, tc.body); status != tc.status || !strings.Contains(fmt.Sprint(v["error"]), tc.want) {
			t.Errorf("POST %s %s: %d %v, want %d with %q", tc.path, tc.body, status, v, tc.status, tc.want)
		}
	}
	if status, _ := call("GET", "/api/webhooks/hr/backfill", ""); status != 404 {
		t.Errorf("GET before any backfill: %d, want 404", status)
	}

	status, v := call("POST", "/api/webhooks/hr/backfill", "")
	if status != http.StatusAccepted || v["state"] != "running" || fmt.Sprint(v["tables"]) != "[public.employees]" {
		t.Fatalf("POST backfill: %d %v", status, v)
	}
	waitFor(t, "the backfill done", 30*time.Second, func() bool {
		_, v = call("GET", "/api/webhooks/hr/backfill", "")
		return v["state"] != "running"
	})
	if v["state"] != "done" || v["rows_read"] != 250.0 || v["rows_queued"] != 250.0 || v["rows_skipped"] != 0.0 || v["snapshot_lsn"] == "" {
		t.Fatalf("backfill status %v", v)
	}
	h.exec(`UPDATE employees SET email = 'changed@x' WHERE id = 1`)
	// hr's requests with header value want.
	hr := func(header, want string) int {
		n := 0
		for _, r := range rc.requests() {
			if r.Header.Get("X-Walhook-Webhook") == "hr" && r.Header.Get(header) == want {
				n++
			}
		}
		return n
	}
	waitFor(t, "250 rows and the change", 30*time.Second, func() bool {
		return hr("X-Walhook-Event", "employees.create") == 250 && hr("X-Walhook-Event", "employees.modify") == 1
	})

	created := map[string]bool{}
	var first1, change1 int
	for i, r := range rc.requests() {
		event, id := r.Header.Get("X-Walhook-Event"), r.Header.Get("X-Walhook-Entity-Id")
		if hook := r.Header.Get("X-Walhook-Webhook"); hook != "hr" {
			if event != "employees.modify" {
				t.Errorf("%s of %s went to %s, which takes changes only", event, id, hook)
			}
			continue
		}
		switch event {
		case "employees.create":
			var body struct {
				Data struct{ Email string }
				ID   string
			}
			json.Unmarshal(r.Body, &body)
			// The snapshot's point, and indexes no transaction reaches.
			if body.Data.Email != "e"+id+"@x" || len(body.ID) != 25 || body.ID[17] != '8' {
				t.Errorf("row %s: %s", id, r.Body)
			}
			created[id] = true
			if id == "1" {
				first1 = i + 1
			}
		case "employees.modify":
			change1 = i + 1
		}
	}
	if len(created) != 250 {
		t.Errorf("%d rows created, want 250", len(created))
	}
	if first1 == 0 || change1 <= first1 {
		t.Errorf("row 1 arrived %d, its change %d: the change must follow the row", first1, change1)
	}

	// Again: a snapshot of its own, rows with ids of their own.
	point := v["snapshot_lsn"]
	if status, v := call("POST", "/api/webhooks/hr/backfill", `{"events": ["public.employees"]}`); status != http.StatusAccepted {
		t.Fatalf("second backfill: %d %v", status, v)
	}
	waitFor(t, "the second backfill done", 30*time.Second, func() bool {
		_, v = call("GET", "/api/webhooks/hr/backfill", "")
		return v["state"] != "running"
	})
	if v["state"] != "done" || v["rows_queued"] != 250.0 || v["snapshot_lsn"] == point {
		t.Fatalf("second backfill %v (the first was at %v)", v, point)
	}
	waitFor(t, "the second backfill's rows", 30*time.Second, func() bool { return hr("X-Walhook-Event", "employees.create") == 500 })
	ids := map[string]bool{}
	for _, r := range rc.requests() {
		if r.Header.Get("X-Walhook-Event") == "employees.create" {
			ids[r.Header.Get("Webhook-Id")] = true
		}
	}
	if len(ids) != 500 {
		t.Errorf("%d distinct ids for two backfills of 250 rows", len(ids))
	}
}

// TestBackfillUnderWrites: the application updates rows while a backfill
// reads them. Applying what the webhook received in order, per row, ends
// at the database's rows: no snapshot row arrives after a newer change of
// it.
func TestBackfillUnderWrites(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `CREATE TABLE items (id int PRIMARY KEY, version int NOT NULL);
		INSERT INTO items SELECT i, 0 FROM generate_series(1, 20000) i`)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"sync\"\nurl = %q\nevents = [\"public.items\"]\nretry_mode = \"test\"\n", rc.URL))

	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	var updates atomic.Int64 // committed by the writer
	go func() {
		ctx := context.Background()
		db, err := pgx.Connect(ctx, h.dsn)
		if err != nil {
			writerDone <- err
			return
		}
		defer db.Close(ctx)
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			// Spread over the table, so rows are changed before, while and
			// after the snapshot reads them.
			if _, err := db.Exec(ctx, `UPDATE items SET version = version + 1 WHERE id = $1 OR id = $2`, 1+(i*7919)%20000, 20000-(i*104729)%20000); err != nil {
				writerDone <- err
				return
			}
			updates.Add(1)
		}
	}()
	startBackfill(t, h.app.AdminAddr(), "sync")
	var st map[string]any
	waitFor(t, "the backfill done", 60*time.Second, func() bool {
		st = backfillStatus(h.app.AdminAddr(), "sync")
		return st != nil && st["state"] != "running"
	})
	after := updates.Load() + 20
	waitFor(t, "20 more updates after the backfill", 30*time.Second, func() bool { return updates.Load() >= after || len(writerDone) > 0 })
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	if st["state"] != "done" || st["rows_read"] != 20000.0 {
		t.Fatalf("backfill %v", st)
	}
	t.Logf("backfill: %v rows queued, %v skipped for a newer change", st["rows_queued"], st["rows_skipped"])

	want := map[string]float64{}
	rows, err := h.db.Query(context.Background(), `SELECT id::text, version FROM items`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var v int
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		want[id] = float64(v)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	got := map[string]float64{}
	waitFor(t, "every row at its version", 90*time.Second, func() bool {
		clear(got)
		for _, r := range rc.requests() {
			var body struct{ Data struct{ Version float64 } }
			if json.Unmarshal(r.Body, &body) == nil {
				got[r.Header.Get("X-Walhook-Entity-Id")] = body.Data.Version
			}
		}
		return maps.Equal(got, want)
	})
}

// TestBackfillResumesAfterSIGKILL: walhook killed while a backfill reads
// goes on after the restart from where the stored rows end, under a new
// snapshot, and every row arrives.
func TestBackfillResumesAfterSIGKILL(t *testing.T) {
	const rows = 100000
	dsn := itemsDatabase(t)
	execSQL(t, dsn, fmt.Sprintf(`INSERT INTO items SELECT i, i, 'note' FROM generate_series(1, %d) i`, rows))
	url, created := createsTally(t)
	admin := freeAddr(t)
	p := startProcess(t, filepath.Join(t.TempDir(), "walhook.log"), "run", "-config", crashConfig(t, dsn, url, admin))
	waitReady(t, admin)
	status := func() map[string]any { return backfillStatus(admin, "items") }
	startBackfill(t, admin, "items")
	var st map[string]any
	waitFor(t, "the backfill under way", time.Minute, func() bool {
		st = status()
		n, _ := st["rows_queued"].(float64)
		return n >= 10000 || st["state"] != "running"
	})
	p.kill()
	if st["state"] != "running" {
		t.Fatalf("the backfill ended before the kill (%v): nothing to resume", st)
	}
	t.Logf("killed with %v rows read, %v queued", st["rows_read"], st["rows_queued"])
	p.start()
	waitFor(t, "the resumed backfill done", time.Minute, func() bool {
		st = status()
		return st != nil && st["state"] != nil && st["state"] != "running"
	})
	if st["state"] != "done" || st["resumed"] != true {
		t.Fatalf("after the restart: %v", st)
	}
	if n := st["rows_read"].(float64); n >= rows || n == 0 {
		t.Errorf("the resumed backfill read %v rows: it should go on where the stored rows end, not start over", n)
	}
	waitFor(t, "every row", 3*time.Minute, func() bool { return created() == rows })
}

// startBackfill starts a backfill of webhook name through the admin API
// at addr.
func startBackfill(t *testing.T, addr, name string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/api/webhooks/"+name+"/backfill", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST backfill: %d", resp.StatusCode)
	}
}

// backfillStatus is webhook name's backfill as the admin API at addr
// reports it; nil when it does not answer.
func backfillStatus(addr, name string) map[string]any {
	resp, err := http.Get("http://" + addr + "/api/webhooks/" + name + "/backfill")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var v map[string]any
	if json.NewDecoder(resp.Body).Decode(&v) != nil {
		return nil
	}
	return v
}

// createsTally is a receiver that tallies the distinct entity ids of the
// items.create deliveries it gets (not testkit's Receiver: it takes
// 100,000 creates and more without keeping their bodies); created says
// how many.
func createsTally(t *testing.T) (url string, created func() int) {
	var mu sync.Mutex
	ids := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Walhook-Event") == "items.create" {
			mu.Lock()
			ids[r.Header.Get("X-Walhook-Entity-Id")] = true
			mu.Unlock()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ids)
	}
}
