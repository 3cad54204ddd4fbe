package deliver_test

import (
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// deliverOne sends one event to a webhook and returns what the receiver got.
func deliverOne(t *testing.T, ev cdc.Event, mods ...func(*deliver.Webhook)) received {
	t.Helper()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"hr-sync"})
	e.setHooks(t, hook("hr-sync", rc.URL+"/hooks", mods...))
	e.write(t, txOf(ev.CommitLSN, ev))
	waitFor(t, 10*time.Second, "the request", func() bool { return rc.count() == 1 })
	return rc.requests()[0]
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != strings.TrimSpace(string(want)) {
		t.Errorf("body differs from %s\n got: %s\nwant: %s", path, got, want)
	}
}

func sampleModify() cdc.Event {
	ev := event(0x16B3A80, 3, 130333, "john.doe@example.com")
	ev.Old["email"] = "john@example.com"
	ev.EntityURL = "https://hr.example.com/api/employees/130333"
	ev.Data["tags"] = []any{"a", "b"}
	ev.Data["profile"] = json.RawMessage(`{"x":1}`)
	ev.Data["manager"] = nil
	return ev
}

func TestJSONBody(t *testing.T) {
	r := deliverOne(t, sampleModify())
	golden(t, "modify.json", r.Body)
	// The exact key order of the contract.
	keys := []string{`"id"`, `"event"`, `"entity"`, `"action"`, `"entity_id"`, `"entity_url"`, `"table"`, `"occurred_at"`, `"webhook"`, `"data"`, `"old"`, `"changed"`}
	last := -1
	for _, k := range keys {
		i := strings.Index(string(r.Body), k+":")
		if i <= last {
			t.Errorf("key %s out of order in %s", k, r.Body)
		}
		last = i
	}
	want := map[string]string{
		"Content-Type":         "application/json",
		"User-Agent":           "walhook/1.2.3",
		"Webhook-Id":           "00000000016B3A80-00000003",
		"X-Walhook-Event":      "employee.modify",
		"X-Walhook-Event-Id":   "00000000016B3A80-00000003",
		"X-Walhook-Webhook":    "hr-sync",
		"X-Walhook-Entity-Id":  "130333",
		"X-Walhook-Entity-Url": "https://hr.example.com/api/employees/130333",
		"X-Walhook-Attempt":    "1",
		"Webhook-Signature":    "",
		"X-Walhook-Signature":  "",
	}
	if r.Method != "POST" || r.Path != "/hooks" {
		t.Errorf("request = %s %s, want POST /hooks", r.Method, r.Path)
	}
	for k, v := range want {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func TestHeadersCustomAndAuth(t *testing.T) {
	r := deliverOne(t, sampleModify(), func(w *deliver.Webhook) {
		w.HeaderPrefix = "X-Etl-Webhook-"
		w.Headers = map[string]string{"X-Api-Key": "abc"}
		w.BasicAuthUser, w.BasicAuthPassword = "u", "p"
	})
	for k, v := range map[string]string{
		"X-Etl-Webhook-Event":   "employee.modify",
		"X-Etl-Webhook-Attempt": "1",
		"X-Api-Key":             "abc",
		"Authorization":         "Basic dTpw",
	} {
		if got := r.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := r.Header.Get("X-Walhook-Event"); got != "" {
		t.Errorf("default prefix still used: X-Walhook-Event = %q", got)
	}
}

func TestIncludeEntityFalse(t *testing.T) {
	r := deliverOne(t, sampleModify(), func(w *deliver.Webhook) { w.IncludeEntity = false })
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"data", "old", "changed"} {
		if _, ok := m[k]; ok {
			t.Errorf("key %q present with include_entity=false: %s", k, r.Body)
		}
	}
	if m["entity_id"] != "130333" {
		t.Errorf("entity_id = %v", m["entity_id"])
	}
}

func TestFormBody(t *testing.T) {
	r := deliverOne(t, sampleModify(), func(w *deliver.Webhook) { w.ContentType = "form" })
	if got := r.Header.Get("Content-Type"); got != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", got)
	}
	v, err := url.ParseQuery(string(r.Body))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "00000000016B3A80-00000003", "event": "employee.modify", "entity": "employee",
		"action": "modify", "entity_id": "130333", "table": "public.employees",
		"entity_url":  "https://hr.example.com/api/employees/130333",
		"occurred_at": "2026-11-29T01:02:03.456789Z", "webhook": "hr-sync",
		"data.id": "130333", "data.email": "john.doe@example.com", "data.tags": `["a","b"]`,
		"data.profile": `{"x":1}`, "data.manager": "null",
		"old.id": "130333", "old.email": "john@example.com", "changed": "email",
	}
	for k, w := range want {
		if got := v.Get(k); got != w {
			t.Errorf("%s = %q, want %q", k, got, w)
		}
	}
	if len(v) != len(want) {
		t.Errorf("form has %d keys, want %d: %v", len(v), len(want), v)
	}
}

func TestGETHeadersOnly(t *testing.T) {
	r := deliverOne(t, sampleModify(), func(w *deliver.Webhook) {
		w.Method = "GET"
		w.Secrets = []string{"s3cret"}
		w.Signature = deliver.SignatureSHA256
	})
	if r.Method != "GET" || len(r.Body) != 0 {
		t.Errorf("got %s with %d body bytes, want GET without body", r.Method, len(r.Body))
	}
	if got := r.Header.Get("X-Walhook-Event-Id"); got != "00000000016B3A80-00000003" {
		t.Errorf("X-Walhook-Event-Id = %q", got)
	}
	verify(t, deliver.SignatureSHA256, []string{"s3cret"}, r)
}

func TestTemplateBody(t *testing.T) {
	tmpl := `{"id": {{json .EntityID}}, "entityType": {{json (upper .Entity)}}, "eventType": {{json .Op}}, "timestamp": {{json .OccurredAt}}, "action": "{{.Entity}}_{{.Action}}", "email": {{json .Data.email}}, "hook": "{{lower .Webhook}}"}`
	r := deliverOne(t, sampleModify(), func(w *deliver.Webhook) { w.Template = tmpl })
	want := `{"id": "130333", "entityType": "EMPLOYEE", "eventType": "UPDATE", "timestamp": "2026-11-29T01:02:03Z", "action": "employee_modify", "email": "john.doe@example.com", "hook": "hr-sync"}`
	if string(r.Body) != want {
		t.Errorf("body\n got %s\nwant %s", r.Body, want)
	}
	if got := r.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
}
