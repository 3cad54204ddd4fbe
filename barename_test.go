package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestBareTableName: the shortest config a DBA writes, events = ["orders"]
// with no [[entity]], delivers the table public.orders's create, modify
// and delete with entity orders, exactly as a webhook on public.orders
// written out gets them.
func TestBareTableName(t *testing.T) {
	bare, written := newReceiver(t, nil), newReceiver(t, nil)
	h := newHarness(t, `CREATE TABLE orders (id int PRIMARY KEY, status text)`)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"bare\"\nurl = %q\nevents = [\"orders\"]\n"+
		"[[webhook]]\nname = \"written\"\nurl = %q\nevents = [\"public.orders\"]\n", bare.URL, written.URL))

	h.exec(`INSERT INTO orders VALUES (7, 'new')`)
	h.exec(`UPDATE orders SET status = 'paid' WHERE id = 7`)
	h.exec(`DELETE FROM orders WHERE id = 7`)
	waitFor(t, "three requests at each receiver", 30*time.Second, func() bool {
		return len(bare.requests()) >= 3 && len(written.requests()) >= 3
	})
	got, want := bare.requests(), written.requests()
	if len(got) != 3 || len(want) != 3 {
		t.Fatalf("got %d and %d requests, want 3 each", len(got), len(want))
	}
	for i, action := range []string{"create", "modify", "delete"} {
		var body map[string]any
		if err := json.Unmarshal(got[i].Body, &body); err != nil {
			t.Fatal(err)
		}
		if body["entity"] != "orders" || body["event"] != "orders."+action || body["table"] != "public.orders" || body["entity_id"] != "7" {
			t.Errorf("%s: entity %v, event %v, table %v, entity_id %v; want orders, orders.%s, public.orders, 7",
				action, body["entity"], body["event"], body["table"], body["entity_id"], action)
		}
		if h := got[i].Header.Get("X-Walhook-Event"); h != "orders."+action {
			t.Errorf("%s: X-Walhook-Event %q", action, h)
		}
		// The same body but for the webhook's name.
		same := bytes.Replace(want[i].Body, []byte(`"webhook":"written"`), []byte(`"webhook":"bare"`), 1)
		if !bytes.Equal(got[i].Body, same) {
			t.Errorf("%s: the bare name's body differs from public.orders's\n got: %s\nwant: %s", action, got[i].Body, same)
		}
	}
}

// TestUnknownBareName: a bare name that is neither an [[entity]] nor a
// table in public stops walhook run before it changes anything, fails
// walhook check with the same line, keeps the old config on a reload, and
// is refused by the admin API with a 422 that names it; a table there that
// cannot be published is refused as written out, with the same reason.
func TestUnknownBareName(t *testing.T) {
	const line = `webhook "flaky": events: unknown entity "payroll": neither an [[entity]] nor a table public.payroll exists`
	dsn := newDatabase(t)
	execSQL(t, dsn, `CREATE TABLE orders (id int PRIMARY KEY); CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)`)
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	config := postgresSection(dsn) + fmt.Sprintf("[store]\ndir = %q\n[admin]\nlisten = \"\"\n", filepath.Join(dir, "data")) +
		"[[webhook]]\nname = \"flaky\"\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"payroll\"]\n"
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := runCheck(t, path)
	if !errors.Is(err, errCheckFailed) || !strings.Contains(out, "FAIL  "+line+"\n") {
		t.Errorf("check: %v, output lacks %q:\n%s", err, "FAIL  "+line, out)
	}
	if strings.Contains(out, "table public.payroll: does not exist") {
		t.Errorf("check reports the missing table twice:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	err = run(ctx, []string{"run", "-config", path}, io.Discard, &stderr)
	if ctx.Err() != nil {
		t.Fatalf("walhook run did not stop: %v\n%s", err, stderr.String())
	}
	if err == nil || errors.Is(err, errUsage) || err.Error() != line {
		t.Errorf("walhook run: %v, want %q", err, line)
	}
	var slots int
	if err := testConn(t, dsn).QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slotFor(dsn)).Scan(&slots); err != nil || slots != 0 {
		t.Errorf("walhook run made its slot (%d, %v) before it stopped", slots, err)
	}

	// A running walhook: the API refuses the name, and so does a reload.
	rc := newReceiver(t, nil)
	h := &harness{t: t, dsn: dsn, dir: t.TempDir(), db: testConn(t, dsn)}
	h.start(fmt.Sprintf("[[webhook]]\nname = \"orders\"\nurl = %q\nevents = [\"orders\"]\n", rc.URL))
	post := func(events string) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"name": "flaky", "url": %q, "events": %s}`, rc.URL, events)
		resp, err := http.Post("http://"+h.app.AdminAddr()+"/api/webhooks", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v.Error
	}
	for _, tc := range []struct {
		events string
		want   string
	}{
		{`["payroll"]`, line},
		{`["scratch"]`, `events: table public.scratch is UNLOGGED: PostgreSQL writes none of its changes to the WAL, so it cannot be published (ALTER TABLE "public"."scratch" SET LOGGED)`},
	} {
		if status, msg := post(tc.events); status != http.StatusUnprocessableEntity || !strings.Contains(msg, tc.want) {
			t.Errorf("POST events %s: %d %q, want 422 with %q", tc.events, status, msg, tc.want)
		}
	}
	next, err := ParseConfig(strings.NewReader(postgresSection(dsn) + "[[webhook]]\nname = \"flaky\"\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"payroll\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.app.Reload(next); err == nil || err.Error() != line {
		t.Errorf("Reload: %v, want %q", err, line)
	}
	if _, ok := h.app.Queue().Webhook("orders"); !ok {
		t.Error("the refused reload dropped webhook orders")
	}
	if status, msg := post(`["orders"]`); status != http.StatusCreated {
		t.Errorf("POST events [\"orders\"]: %d %q, want 201", status, msg)
	}

	// The entity list judges the tables as the publication does.
	resp, err := http.Get("http://" + h.app.AdminAddr() + "/api/entities")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var entities []struct{ Table, Unpublished string }
	if err := json.NewDecoder(resp.Body).Decode(&entities); err != nil {
		t.Fatal(err)
	}
	want := `[{Table:public.orders Unpublished:} {Table:public.scratch Unpublished:UNLOGGED: not published (none of its changes reach the WAL)}]`
	if got := fmt.Sprintf("%+v", entities); got != want {
		t.Errorf("GET /api/entities = %s, want %s", got, want)
	}
}

// testConn is a connection to dsn, closed at the test's end.
func testConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
