package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAPIWebhookTablesChecked: a config webhook's table walhook must not
// publish is shown on the admin page and in the metrics. A webhook created
// through the admin API for
// a table walhook must not publish (no primary key or replica identity:
// the application's UPDATE would fail) is refused with a 422 that says
// why, and so is one on "*" while such a table exists; once the table is
// fixed, both are created and the table's changes arrive.
func TestAPIWebhookTablesChecked(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `CREATE TABLE orders (id int PRIMARY KEY); CREATE TABLE audit_lines (line text)`)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"orders\"\nurl = %q\nevents = [\"public.orders\"]\n"+
		"[[webhook]]\nname = \"audit-cfg\"\nurl = %q\nevents = [\"public.audit_lines\"]\n", rc.URL, rc.URL))
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://" + h.app.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return string(raw)
	}
	// The config's table that cannot be published is on the page, and in
	// the metrics.
	if page := get("/"); !strings.Contains(page, `No events: table public.audit_lines has no primary key or replica identity`) {
		t.Errorf("the page does not show the left-out table:\n%s", page)
	}
	if m := get("/metrics"); !strings.Contains(m, "walhook_publication_refused 1") {
		t.Errorf("walhook_publication_refused is not 1")
	}
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := http.Post("http://"+h.app.AdminAddr()+"/api/webhooks", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var v struct{ Error string }
		json.Unmarshal(raw, &v)
		return resp.StatusCode, v.Error
	}
	audit := fmt.Sprintf(`{"name": "audit", "url": %q, "events": ["public.audit_lines"]}`, rc.URL)
	all := fmt.Sprintf(`{"name": "all", "url": %q, "events": ["*"], "actions": ["create"]}`, rc.URL)
	for _, tc := range []struct{ body, want string }{
		{audit, `events: table public.audit_lines has no primary key or replica identity: once published, the application's UPDATE and DELETE on it would fail, so walhook does not publish it; add a primary key, or: ALTER TABLE "public"."audit_lines" REPLICA IDENTITY FULL;`},
		{all, `events: a webhook wants every table ("*"), but FOR ALL TABLES would make the application's UPDATE and DELETE fail on the 1 tables without a primary key`},
		{fmt.Sprintf(`{"name": "later", "url": %q, "events": ["public.later"]}`, rc.URL), "events: table public.later does not exist"},
	} {
		if status, msg := post(tc.body); status != http.StatusUnprocessableEntity || !strings.Contains(msg, tc.want) {
			t.Errorf("POST %s: %d %q, want 422 with %q", tc.body, status, msg, tc.want)
		}
	}
	h.exec(`UPDATE audit_lines SET line = 'x'`) // not published: the application is unharmed

	h.exec(`ALTER TABLE audit_lines REPLICA IDENTITY FULL`)
	for _, body := range []string{audit, all} {
		if status, msg := post(body); status != http.StatusCreated {
			t.Fatalf("POST %s after the fix: %d %q", body, status, msg)
		}
	}
	waitFor(t, "the config's table to be published", 30*time.Second, func() bool {
		return strings.Contains(get("/metrics"), "walhook_publication_refused 0")
	})
	if page := get("/"); strings.Contains(page, "No events:") {
		t.Errorf("the page still shows a left-out table:\n%s", page)
	}
	h.exec(`INSERT INTO audit_lines VALUES ('hello')`)
	waitFor(t, "the audit line to the three webhooks", 30*time.Second, func() bool { return len(rc.requests()) >= 3 })
}
