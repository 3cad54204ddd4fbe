package admin_test

import (
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// TestWhenAPI: when, columns and exclude_columns through POST, PATCH and
// GET; a bad expression is a 422 naming the webhook and the position; an
// expression that fails on events shows on the webhook's line and in
// its stats, and is logged once.
func TestWhenAPI(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	r := e.mustDo(422, "POST", "/api/webhooks", `{"name": "pay", "url": "`+rc.URL+`", "events": ["employee"], "when": "new.id > 100 && nwe.status == 'paid'"}`)
	if got := r.errorText(t); !strings.HasPrefix(got, `webhook "pay": when: 1:17: undeclared reference to 'nwe'`) {
		t.Errorf("POST error = %q", got)
	}
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "pay", "url": "`+rc.URL+`", "events": ["employee"], "when": "new.id > 100", "exclude_columns": ["email"]}`)
	r = e.mustDo(422, "PATCH", "/api/webhooks/pay", `{"when": "new.id >"}`)
	if got := r.errorText(t); !strings.HasPrefix(got, `webhook "pay": when: 1:9: Syntax error`) {
		t.Errorf("PATCH error = %q", got)
	}
	r = e.mustDo(422, "PATCH", "/api/webhooks/pay", `{"columns": ["id"]}`)
	if got := r.errorText(t); got != "columns: give columns or exclude_columns, not both" {
		t.Errorf("PATCH error = %q", got)
	}

	e.write(10, 7)   // id 7: not sent
	e.write(11, 130) // sent, without the email
	rc.WaitRequest(t, 20*time.Second, func(r testkit.Request) bool { return strings.Contains(string(r.Body), `"data":{"id":130}`) })
	if n := rc.Count(); n != 1 {
		t.Errorf("receiver got %d requests, want 1", n)
	}
	if body := string(rc.Last(t).Body); strings.Contains(body, "email") {
		t.Errorf("excluded column sent: %s", body)
	}

	e.mustDo(200, "PATCH", "/api/webhooks/pay", `{"when": "new.status == 'paid'", "exclude_columns": []}`)
	e.write(12, 1) // no status column: the when fails
	e.write(13, 2)
	var got []struct {
		Name           string   `json:"name"`
		When           string   `json:"when"`
		ExcludeColumns []string `json:"exclude_columns"`
		Stats          struct {
			FilterErrors    int64 `json:"filter_errors"`
			LastFilterError *struct {
				EventID string `json:"event_id"`
				Error   string `json:"error"`
			} `json:"last_filter_error"`
		} `json:"stats"`
	}
	e.mustDo(200, "GET", "/api/webhooks", "").json(t, &got)
	if len(got) != 1 || got[0].When != "new.status == 'paid'" || got[0].ExcludeColumns != nil {
		t.Fatalf("GET /api/webhooks = %+v", got)
	}
	st := got[0].Stats
	if st.FilterErrors != 2 || st.LastFilterError == nil || st.LastFilterError.EventID != cdc.EventID(13, 0) ||
		st.LastFilterError.Error != "no such key: status" {
		t.Errorf("stats = %d, %+v; want 2 errors, the last on %s: no such key: status", st.FilterErrors, st.LastFilterError, cdc.EventID(13, 0))
	}
	row := e.mustDo(200, "GET", "/webhooks/pay/row", "").body
	if !strings.Contains(row, "when failed on 2 event(s)") || !strings.Contains(row, cdc.EventID(13, 0)+": no such key: status") {
		t.Errorf("the row does not show the filter error: %s", row)
	}
	if n := strings.Count(e.logs.String(), "webhook's when failed on an event"); n != 1 {
		t.Errorf("the filter error was logged %d times, want once a minute", n)
	}
	if n := rc.Count(); n != 1 {
		t.Errorf("receiver got %d requests, want still 1", n)
	}
}

// TestWhenTry: POST /api/webhooks/{name}/when/test tries an expression on
// the latest stored deliveries or on a pasted event.
func TestWhenTry(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "big", "url": "`+rc.URL+`", "events": ["employee"], "when": "new.id > 100"}`)
	e.write(10, 130)
	e.write(11, 140)
	e.write(12, 7) // not stored: the when leaves it out
	type result struct {
		When    string `json:"when"`
		Results []struct {
			EventID string `json:"event_id"`
			Event   string `json:"event"`
			Sent    bool   `json:"sent"`
			Error   string `json:"error"`
		} `json:"results"`
	}
	var got result
	e.mustDo(200, "POST", "/api/webhooks/big/when/test", `{"when": "new.id > 135"}`).json(t, &got)
	if len(got.Results) != 2 || got.When != "new.id > 135" ||
		got.Results[0].EventID != cdc.EventID(11, 0) || !got.Results[0].Sent ||
		got.Results[1].EventID != cdc.EventID(10, 0) || got.Results[1].Sent {
		t.Errorf("on stored deliveries: %+v", got)
	}
	got = result{}
	e.mustDo(200, "POST", "/api/webhooks/big/when/test", `{"event": {"action": "modify", "table": "public.employees", "entity": "employee", "data": {"id": 101, "amount": 12.5}}}`).json(t, &got)
	if got.When != "new.id > 100" || len(got.Results) != 1 || !got.Results[0].Sent || got.Results[0].Event != "employee.modify" {
		t.Errorf("the webhook's own when on a pasted event: %+v", got)
	}
	got = result{}
	e.mustDo(200, "POST", "/api/webhooks/big/when/test", `{"when": "new.amount > 12 && old.amount < 12", "event": {"action": "modify", "table": "public.employees", "data": {"id": 1, "amount": 12.5}}}`).json(t, &got)
	if len(got.Results) != 1 || got.Results[0].Sent || got.Results[0].Error != "no such key: amount" {
		t.Errorf("an expression that fails: %+v", got)
	}
	r := e.mustDo(422, "POST", "/api/webhooks/big/when/test", `{"when": "new.id >> 1"}`)
	if msg := r.errorText(t); !strings.HasPrefix(msg, `webhook "big": when: 1:`) {
		t.Errorf("bad expression: %q", msg)
	}
	r = e.mustDo(422, "POST", "/api/webhooks/big/when/test", `{"event": {"action": "upsert"}}`)
	if msg := r.errorText(t); msg != `event: action: must be create, modify, delete or truncate (got "upsert")` {
		t.Errorf("bad event: %q", msg)
	}
	e.mustDo(404, "POST", "/api/webhooks/nope/when/test", `{}`)
}
