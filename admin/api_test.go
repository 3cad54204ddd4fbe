package admin_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"walhook/deliver"
	"walhook/internal/testkit"
)

// webhook is the API's view of a webhook, as a client decodes it.
type webhook struct {
	Name      string
	URL       string
	Active    bool
	Events    []string
	Actions   []string
	Signature string
	Secret    string
	Headers   map[string]string
	Source    string
	TimeoutMS int64 `json:"timeout_ms"`
	Stats     struct {
		LatestStatus    int   `json:"latest_status"`
		SuccessfulCalls int64 `json:"successful_calls"`
		TotalCalls      int64 `json:"total_calls"`
		Queued, Failed  int
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+token))
	wrongBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:nope"))
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 401},
		{"/metrics", "", 401},
		{"/api/webhooks", "", 401},
		{"/", "", 401},
		{"/static/app.js", "", 401},
		{"/api/webhooks", "Bearer nope", 401},
		{"/api/webhooks", "Bearer " + token + "x", 401},
		{"/api/webhooks", wrongBasic, 401},
		{"/api/webhooks", "Bearer " + token, 200},
		{"/api/webhooks", basic, 200},
		{"/", basic, 200},
		{"/readyz", basic, 200},
		{"/metrics", basic, 200},
	} {
		r := e.send("GET", tc.path, "", "Authorization", tc.auth)
		if r.status != tc.want {
			t.Errorf("GET %s with %q: status %d, want %d", tc.path, tc.auth, r.status, tc.want)
		}
		if r.status == 401 {
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s: 401 without WWW-Authenticate", tc.path)
			}
			r.errorText(t)
		}
	}
}

func TestWebhookLifecycle(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	r := e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(
		`{"name": "hr-sync", "url": %q, "events": ["employee"], "signature": "standard", "retry_mode": "test", "timeout_ms": 2000}`, rc.URL))
	var created webhook
	r.json(t, &created)
	if got := r.header.Get("Location"); got != "/api/webhooks/hr-sync" {
		t.Errorf("Location = %q", got)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(created.Secret, "whsec_"))
	if !strings.HasPrefix(created.Secret, "whsec_") || err != nil || len(key) != 32 {
		t.Fatalf("generated secret = %q, want whsec_ + 32 bytes in base64", created.Secret)
	}
	if created.Source != "api" || !created.Active || created.TimeoutMS != 2000 ||
		strings.Join(created.Actions, ",") != "create,modify,delete" || created.Signature != "standard" {
		t.Errorf("created = %+v", created)
	}

	// The secret was shown once: nowhere after.
	for _, path := range []string{"/api/webhooks", "/api/webhooks/hr-sync", "/", "/webhooks/hr-sync/edit", "/webhooks/hr-sync/row"} {
		if r := e.mustDo(200, "GET", path, ""); strings.Contains(r.body, created.Secret) || strings.Contains(r.body, "whsec_") {
			t.Errorf("GET %s shows the secret: %s", path, r.body)
		}
	}

	// The generated secret signs: the test ping verifies with it.
	r = e.mustDo(200, "POST", "/api/webhooks/hr-sync/test", "")
	var ping struct {
		OK         bool
		Status     int
		DurationMS float64 `json:"duration_ms"`
		Error      string
	}
	r.json(t, &ping)
	if !ping.OK || ping.Status != 200 || ping.DurationMS <= 0 || ping.Error != "" {
		t.Errorf("test answered %s", r.body)
	}
	req := rc.Last(t)
	body := string(req.Body)
	if want := testkit.StandardSignature(t, created.Secret, req.Header.Get("Webhook-Id"), req.Header.Get("Webhook-Timestamp"), []byte(body)); req.Header.Get("Webhook-Signature") != want {
		t.Errorf("ping signature %q, want %q", req.Header.Get("Webhook-Signature"), want)
	}
	if !strings.Contains(body, `"event":"ping"`) && !strings.Contains(body, `"event": "ping"`) {
		t.Errorf("ping body = %s", body)
	}

	var list []webhook
	e.mustDo(200, "GET", "/api/webhooks", "").json(t, &list)
	if len(list) != 1 || list[0].Name != "hr-sync" || list[0].Stats.TotalCalls != 1 ||
		list[0].Stats.SuccessfulCalls != 1 || list[0].Stats.LatestStatus != 200 {
		t.Errorf("list = %+v", list)
	}

	var patched webhook
	e.mustDo(200, "PATCH", "/api/webhooks/hr-sync", `{"active": false}`).json(t, &patched)
	if patched.Active || patched.URL != rc.URL || patched.Signature != "standard" || patched.Secret != "" {
		t.Errorf("after PATCH active=false: %+v", patched)
	}

	// API webhooks survive a restart, with their state.
	e.reopen()
	var got webhook
	e.mustDo(200, "GET", "/api/webhooks/hr-sync", "").json(t, &got)
	if got.Active || got.Source != "api" || got.Stats.TotalCalls != 1 {
		t.Errorf("after a restart: %+v", got)
	}

	e.mustDo(204, "DELETE", "/api/webhooks/hr-sync", "")
	if r := e.do("GET", "/api/webhooks/hr-sync", ""); r.status != 404 || !strings.Contains(r.errorText(t), "hr-sync") {
		t.Errorf("GET after DELETE: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/api/webhooks/hr-sync", ""); r.status != 404 {
		t.Errorf("DELETE twice: %d %s", r.status, r.body)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "taken", "url": "http://127.0.0.1:9/", "events": ["*"]}`)
	huge := `{"name": "big", "url": "http://127.0.0.1:9/", "events": ["*"], "template": "` + strings.Repeat("x", 1<<20) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		mention                  string
	}{
		{"malformed", "POST", "/api/webhooks", `{"name": "a",`, 400, "malformed JSON"},
		{"not an object", "POST", "/api/webhooks", `[1]`, 400, "JSON object"},
		{"empty", "POST", "/api/webhooks", ``, 400, "empty body"},
		{"two values", "POST", "/api/webhooks", `{"name": "a"} {}`, 400, "more than one"},
		{"unknown field", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["*"], "colour": "red"}`, 400, `unknown field "colour"`},
		{"wrong type", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["*"], "max_attempts": "5"}`, 400, "max_attempts"},
		{"out of range", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["*"], "max_attempts": 12}`, 422, "max_attempts: must be 1..8 (got 12)"},
		{"bad name", "POST", "/api/webhooks", `{"name": "a b", "url": "http://x/", "events": ["*"]}`, 422, "name"},
		{"bad url", "POST", "/api/webhooks", `{"name": "a", "url": "ftp://x/", "events": ["*"]}`, 422, "url"},
		{"no events", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/"}`, 422, "events"},
		{"unknown entity", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["payroll"]}`, 422, `webhook "a": events: unknown entity "payroll": neither an [[entity]] nor a table public.payroll exists`},
		{"bad action", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["*"], "actions": ["upsert"]}`, 422, "upsert"},
		{"bad signature", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["*"], "signature": "md5"}`, 422, "signature"},
		{"secret and secrets", "POST", "/api/webhooks", `{"name": "a", "url": "http://x/", "events": ["*"], "secret": "x", "secrets": ["y"]}`, 422, "not both"},
		{"existing name", "POST", "/api/webhooks", `{"name": "taken", "url": "http://x/", "events": ["*"]}`, 409, "exists"},
		{"too large", "POST", "/api/webhooks", huge, 413, "larger than"},
		{"patch unknown field", "PATCH", "/api/webhooks/taken", `{"enabled": false}`, 400, `unknown field "enabled"`},
		{"patch rename", "PATCH", "/api/webhooks/taken", `{"name": "other"}`, 422, "cannot be changed"},
		{"patch invalid", "PATCH", "/api/webhooks/taken", `{"timeout_ms": 0}`, 422, "timeout_ms"},
		{"patch unknown webhook", "PATCH", "/api/webhooks/nope", `{"active": false}`, 404, "nope"},
		{"deliveries of unknown", "GET", "/api/webhooks/nope/deliveries", ``, 404, "nope"},
		{"deliveries bad status", "GET", "/api/webhooks/taken/deliveries?status=lost", ``, 400, "status"},
		{"deliveries bad limit", "GET", "/api/webhooks/taken/deliveries?limit=-1", ``, 400, "limit"},
		{"recover without since", "POST", "/api/webhooks/taken/recover", ``, 400, "since: missing"},
		{"recover bad since", "POST", "/api/webhooks/taken/recover?since=yesterday", ``, 400, "RFC 3339"},
		{"recover unknown", "POST", "/api/webhooks/nope/recover?since=2026-01-01T00:00:00Z", ``, 404, "nope"},
		{"redeliver unknown", "POST", "/api/deliveries/taken-00000000000000ff/redeliver", ``, 404, "not found"},
		{"test unknown", "POST", "/api/webhooks/nope/test", ``, 404, "nope"},
		{"log unknown", "GET", "/api/webhooks/nope/log", ``, 404, "nope"},
		{"no such route", "GET", "/api/nothing", ``, 404, "no such route"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(tc.method, tc.path, tc.body)
			if r.status != tc.status {
				t.Errorf("status %d, want %d: %.300s", r.status, tc.status, r.body)
			}
			if msg := r.errorText(t); !strings.Contains(msg, tc.mention) {
				t.Errorf("error %q does not mention %q", msg, tc.mention)
			}
		})
	}
	// Nothing was half-created or changed.
	var list []webhook
	e.mustDo(200, "GET", "/api/webhooks", "").json(t, &list)
	if len(list) != 1 || list[0].Name != "taken" || list[0].TimeoutMS != 10000 || !list[0].Active {
		t.Errorf("webhooks after the bad requests: %+v", list)
	}
}

func TestConfigWebhooksAreReadOnly(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	var hook deliver.Webhook
	deliver.ApplyDefaults(&hook)
	hook.Name, hook.URL, hook.Events = "from-config", rc.URL, []string{"*"}
	if err := e.q.SetConfigWebhooks([]deliver.Webhook{hook}); err != nil {
		t.Fatal(err)
	}
	var got webhook
	e.mustDo(200, "GET", "/api/webhooks/from-config", "").json(t, &got)
	if got.Source != "config" {
		t.Errorf("source = %q, want config", got.Source)
	}
	for _, tc := range []struct{ method, body string }{{"PATCH", `{"active": false}`}, {"DELETE", ""}} {
		r := e.do(tc.method, "/api/webhooks/from-config", tc.body)
		if msg := r.errorText(t); r.status != 409 || !strings.Contains(msg, "config") || !strings.Contains(msg, "SIGHUP") {
			t.Errorf("%s: %d %q, want 409 naming the config file and SIGHUP", tc.method, r.status, msg)
		}
	}
	e.mustDo(200, "GET", "/api/webhooks/from-config", "").json(t, &got)
	if !got.Active {
		t.Error("the refused PATCH switched the webhook off")
	}
	// Testing works on a config webhook too.
	e.mustDo(200, "POST", "/api/webhooks/from-config/test", "")
	if rc.Count() != 1 {
		t.Errorf("receiver got %d requests, want the ping", rc.Count())
	}
}

// TestActivateDeactivate: the switch works on config webhooks too, kept in
// the store across restarts; it brings back a config webhook a 410 switched
// off, but does not override active = false in the file.
func TestActivateDeactivate(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, func(n int) int {
		if n == 1 {
			return http.StatusGone
		}
		return http.StatusOK
	})
	var hook deliver.Webhook
	deliver.ApplyDefaults(&hook)
	hook.Name, hook.URL, hook.Events = "cfg", rc.URL, []string{"*"}
	setConfig := func(active bool) {
		t.Helper()
		h := hook
		h.Active = active
		if err := e.q.SetConfigWebhooks([]deliver.Webhook{h}); err != nil {
			t.Fatal(err)
		}
	}
	active := func() bool {
		var got webhook
		e.mustDo(200, "GET", "/api/webhooks/cfg", "").json(t, &got)
		return got.Active
	}
	setConfig(true)

	// The receiver answers 410: the webhook switches itself off, and
	// reloading the same config does not switch it on again.
	e.write(100, 1)
	waitFor(t, "the 410 to switch the webhook off", func() bool { return !active() })
	setConfig(true)
	if active() {
		t.Fatal("reloading the config switched the 410'd webhook on")
	}
	var got webhook
	e.mustDo(200, "POST", "/api/webhooks/cfg/activate", "").json(t, &got)
	if !got.Active || got.Source != "config" {
		t.Fatalf("after activate: %+v", got)
	}
	setConfig(true)
	if !active() {
		t.Fatal("a reload after activate switched the webhook off again")
	}
	e.write(200, 2)
	waitFor(t, "the delivery after activate", func() bool { return rc.Count() == 2 })

	// Off through the API: nothing more goes out, across a restart and a
	// reload of the same config.
	e.mustDo(200, "POST", "/api/webhooks/cfg/deactivate", "").json(t, &got)
	if got.Active {
		t.Fatalf("after deactivate: %+v", got)
	}
	e.reopen()
	setConfig(true)
	if active() {
		t.Fatal("the switch did not survive a restart")
	}
	e.write(300, 3)
	e.mustDo(200, "POST", "/api/webhooks/cfg/activate", "")
	e.write(400, 4)
	waitFor(t, "the delivery after the restart", func() bool { return rc.Count() == 3 })
	if body := string(rc.Last(t).Body); !strings.Contains(body, `"id":4`) {
		t.Errorf("the webhook got the event written while it was off: %s", body)
	}

	// The file's active = false wins.
	setConfig(false)
	r := e.do("POST", "/api/webhooks/cfg/activate", "")
	if msg := r.errorText(t); r.status != 409 || !strings.Contains(msg, "active = false") {
		t.Errorf("activate against the file: %d %q, want 409 naming active = false", r.status, msg)
	}
	if active() {
		t.Error("the refused activate switched the webhook on")
	}

	// API webhooks switch the same way; unknown names are 404.
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "api", "url": %q, "events": ["*"]}`, rc.URL))
	e.mustDo(200, "POST", "/api/webhooks/api/deactivate", "").json(t, &got)
	if got.Active || got.Source != "api" {
		t.Errorf("API webhook after deactivate: %+v", got)
	}
	e.mustDo(404, "POST", "/api/webhooks/nope/activate", "")
}

func TestTestReportsFailures(t *testing.T) {
	e := newEnv(t)
	failing := newReceiver(t, func(int) int { return 503 })
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "down", "url": %q, "events": ["*"]}`, failing.URL))
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "gone", "url": "http://127.0.0.1:1/", "events": ["*"], "timeout_ms": 2000}`)
	var res struct {
		OK           bool
		Status       int
		Error        string
		ResponseBody string `json:"response_body"`
	}
	e.mustDo(200, "POST", "/api/webhooks/down/test", "").json(t, &res)
	if res.OK || res.Status != 503 || res.Error == "" || !strings.Contains(res.ResponseBody, "received") {
		t.Errorf("test of a 503 endpoint: %+v", res)
	}
	res.Error = ""
	e.mustDo(200, "POST", "/api/webhooks/gone/test", "").json(t, &res)
	if res.OK || res.Status != 0 || res.Error == "" {
		t.Errorf("test of a closed port: %+v", res)
	}
	var got webhook
	e.mustDo(200, "GET", "/api/webhooks/down", "").json(t, &got)
	if got.Stats.LatestStatus != 503 || got.Stats.TotalCalls != 1 || got.Stats.SuccessfulCalls != 0 {
		t.Errorf("stats after a failed test: %+v", got.Stats)
	}
}

// delivery is the API's view of a delivery.
type delivery struct {
	ID, Event, Status, Payload string
	EntityID                   string `json:"entity_id"`
	Attempts                   []struct {
		N               int
		Status          int
		RequestHeaders  http.Header `json:"request_headers"`
		RequestBody     string      `json:"request_body"`
		ResponseHeaders http.Header `json:"response_headers"`
		ResponseBody    string      `json:"response_body"`
		DurationMS      float64     `json:"duration_ms"`
		Error           string
	}
}

func TestDeliveriesRedeliverRecover(t *testing.T) {
	e := newEnv(t)
	var up atomic.Bool
	rc := newReceiver(t, func(int) int {
		if up.Load() {
			return 200
		}
		return 500
	})
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(
		`{"name": "hr", "url": %q, "events": ["employee"], "max_attempts": 1, "headers": {"X-Api-Key": "key-123"}}`, rc.URL))
	deliveries := func(query string) []delivery {
		var ds []delivery
		e.mustDo(200, "GET", "/api/webhooks/hr/deliveries"+query, "").json(t, &ds)
		return ds
	}
	e.write(100, 1)
	waitFor(t, "the delivery to fail", func() bool { return len(deliveries("?status=failed")) == 1 })
	d := deliveries("")[0]
	if d.Event != "employee.create" || len(d.Attempts) != 1 || !strings.Contains(d.Payload, `"ada@example.com"`) {
		t.Fatalf("failed delivery = %+v", d)
	}
	a := d.Attempts[0]
	if a.Status != 500 || a.Error == "" || a.RequestHeaders.Get("Webhook-Id") == "" || a.RequestBody != d.Payload ||
		a.ResponseHeaders.Get("X-Receiver") != "test" || a.ResponseBody != `{"received": true}` || a.DurationMS <= 0 {
		t.Errorf("attempt = %+v", a)
	}
	if got := a.RequestHeaders.Get("X-Api-Key"); got == "key-123" {
		t.Error("the custom header's value is shown in the attempt")
	}
	if n := len(deliveries("?status=success")); n != 0 {
		t.Errorf("status=success lists %d", n)
	}

	up.Store(true)
	e.mustDo(202, "POST", "/api/deliveries/"+d.ID+"/redeliver", "")
	waitFor(t, "the redelivery to succeed", func() bool { return len(deliveries("?status=success")) == 1 })
	if n := len(deliveries("?status=failed")); n != 0 {
		t.Errorf("the redelivered failure is still listed (%d)", n)
	}

	// recover: two failures, one before "since", one after.
	up.Store(false)
	e.write(200, 2)
	waitFor(t, "a second failure", func() bool { return len(deliveries("?status=failed")) == 1 })
	since := time.Now().UTC()
	e.write(300, 3)
	waitFor(t, "a third failure", func() bool { return len(deliveries("?status=failed")) == 2 })
	up.Store(true)
	var rec struct{ Requeued int }
	e.mustDo(202, "POST", "/api/webhooks/hr/recover?since="+since.Format(time.RFC3339Nano), "").json(t, &rec)
	if rec.Requeued != 1 {
		t.Errorf("recover requeued %d, want the one failure since then", rec.Requeued)
	}
	waitFor(t, "the recovered delivery to succeed", func() bool { return len(deliveries("?status=success")) == 2 })
	e.mustDo(202, "POST", "/api/webhooks/hr/recover?since="+since.Add(-time.Hour).Format(time.RFC3339), "").json(t, &rec)
	if rec.Requeued != 1 {
		t.Errorf("second recover requeued %d, want the remaining failure", rec.Requeued)
	}
	waitFor(t, "every delivery to succeed", func() bool { return len(deliveries("?status=success")) == 3 })
	if n := len(deliveries("?limit=1")); n != 1 {
		t.Errorf("limit=1 gave %d deliveries", n)
	}
	// A delivery still pending cannot be redelivered.
	up.Store(false)
	e.mustDo(200, "PATCH", "/api/webhooks/hr", `{"max_attempts": 8, "retry_mode": "production"}`)
	e.write(400, 4)
	waitFor(t, "a pending delivery with an attempt", func() bool {
		ds := deliveries("?status=pending")
		return len(ds) == 1 && len(ds[0].Attempts) > 0
	})
	r := e.do("POST", "/api/deliveries/"+deliveries("?status=pending")[0].ID+"/redeliver", "")
	if r.status != 409 || !strings.Contains(r.errorText(t), "pending") {
		t.Errorf("redeliver of a pending delivery: %d %s", r.status, r.body)
	}
}

func TestLog(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "logged", "url": %q, "events": ["*"]}`, rc.URL))
	if r := e.mustDo(200, "GET", "/api/webhooks/logged/log", ""); r.body != "" {
		t.Errorf("log before any attempt: %q", r.body)
	}
	e.mustDo(200, "POST", "/api/webhooks/logged/test", "")
	r := e.mustDo(200, "GET", "/api/webhooks/logged/log", "")
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" || r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("log served as %q (nosniff %q)", ct, r.header.Get("X-Content-Type-Options"))
	}
	if !strings.Contains(r.body, "event=ping attempt=1/5 status=200") {
		t.Errorf("log = %q", r.body)
	}
}

func TestEntities(t *testing.T) {
	e := newEnv(t)
	var got []struct {
		Name, Table, Source string
		ReplicaIdentity     string `json:"replica_identity"`
	}
	e.mustDo(200, "GET", "/api/entities", "").json(t, &got)
	if len(got) != 1 || got[0].Name != "employee" || got[0].ReplicaIdentity != "full" {
		t.Errorf("entities = %+v", got)
	}
}

func TestCrossSiteRequestsRefused(t *testing.T) {
	e := newEnv(t)
	body := func(name string) string {
		return fmt.Sprintf(`{"name": %q, "url": "http://127.0.0.1:9/", "events": ["*"]}`, name)
	}
	host := strings.TrimPrefix(e.srv.URL, "http://")
	for _, tc := range []struct {
		name   string
		header []string
		want   int
	}{
		{"foreign Origin", []string{"Origin", "http://evil.example"}, 403},
		{"cross-site fetch", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"same-site subdomain", []string{"Sec-Fetch-Site", "same-site", "Origin", "http://sub.evil.example"}, 403},
		{"same origin", []string{"Origin", "http://" + host, "Sec-Fetch-Site", "same-origin"}, 201},
		{"script without browser headers", nil, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.NewReplacer(" ", "-").Replace(tc.name)
			r := e.do("POST", "/api/webhooks", body(name), tc.header...)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.want == 403 {
				if !strings.Contains(r.errorText(t), "cross-site") {
					t.Errorf("error %q", r.body)
				}
				if r := e.do("GET", "/api/webhooks/"+name, ""); r.status != 404 {
					t.Errorf("the refused request created the webhook")
				}
			}
		})
	}
	// A cross-site GET is harmless and allowed (the page is served).
	e.mustDo(200, "GET", "/", "", "Sec-Fetch-Site", "cross-site")
}

func TestNoTokenServesOnlyLocalhostNames(t *testing.T) {
	e := newEnvWithToken(t, "")
	for host, want := range map[string]int{"127.0.0.1:8080": 200, "localhost:8080": 200, "[::1]:8080": 200, "rebound.evil.example:8080": 403} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/api/webhooks", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %s: status %d, want %d", host, resp.StatusCode, want)
		}
	}
}
