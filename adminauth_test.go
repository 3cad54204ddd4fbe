package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// adminRequest sends method path with body to the admin server at base;
// auth sets the credentials (nil: none). It returns the status and body.
func adminRequest(t *testing.T, base, method, path, body string, auth func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// bearer is an auth for adminRequest.
func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// TestAdminNeedsToken: with [admin] token in config.toml, the running
// walhook's admin server refuses every route but /healthz, the ones that
// change something included, without the token (none, a wrong bearer
// token, a wrong basic-auth password), and changes nothing then; with the
// token each works. So app.go must hand the configured token to the admin
// server: without one, requests from this machine are let through.
func TestAdminNeedsToken(t *testing.T) {
	const token = "adm-TOKEN-q8Zr"
	rc := newReceiver(t, nil)
	h := newHarness(t, thingsSchema)
	text := fmt.Sprintf("%s[store]\ndir = %q\n[log]\ndir = %q\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = %q\n%s",
		postgresSection(h.dsn), filepath.Join(h.dir, "data"), filepath.Join(h.dir, "logs"), token, faultHook("cfg", rc.URL, ""))
	cfg, err := ParseConfig(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	h.startConfig(cfg)
	base := "http://" + h.app.AdminAddr()
	withToken := bearer(token)

	if code, body := adminRequest(t, base, "POST", "/api/webhooks",
		fmt.Sprintf(`{"name": "api", "url": %q, "events": ["public.things"], "retry_mode": "test"}`, rc.URL), withToken); code != 201 {
		t.Fatalf("creating a webhook with the token: %d %s", code, body)
	}
	insertThings(h, 1, 1)
	waitFor(t, "the row at both webhooks", 30*time.Second, func() bool { return len(rc.requests()) == 2 })
	var ds []struct{ ID, Status string }
	waitFor(t, "api's delivery stored", 30*time.Second, func() bool {
		_, body := adminRequest(t, base, "GET", "/api/webhooks/api/deliveries", "", withToken)
		return json.Unmarshal([]byte(body), &ds) == nil && len(ds) == 1 && ds[0].Status == "success"
	})

	refused := []struct{ method, path, body string }{
		{"POST", "/api/webhooks", `{"name": "intruder", "url": "http://127.0.0.1:9/", "events": ["public.things"]}`},
		{"PATCH", "/api/webhooks/api", `{"url": "http://127.0.0.1:9/stolen"}`},
		{"DELETE", "/api/webhooks/api", ""},
		{"POST", "/api/webhooks/api/deactivate", ""},
		{"POST", "/api/webhooks/api/test", ""},
		{"POST", "/api/deliveries/" + ds[0].ID + "/redeliver", ""},
		{"POST", "/api/webhooks/api/recover?since=2000-01-01T00:00:00Z", ""},
		{"POST", "/api/webhooks/api/backfill", ""},
		{"GET", "/api/webhooks", ""},
		{"GET", "/api/webhooks/api/deliveries", ""},
		{"GET", "/api/webhooks/api/log", ""},
		{"GET", "/api/entities", ""},
		{"GET", "/metrics", ""},
		{"GET", "/", ""},
	}
	creds := map[string]func(*http.Request){
		"no token":                 nil,
		"a wrong bearer token":     bearer(token + "x"),
		"a wrong basic-auth token": func(r *http.Request) { r.SetBasicAuth("admin", "not-the-token") },
	}
	for _, r := range refused {
		for what, auth := range creds {
			if code, body := adminRequest(t, base, r.method, r.path, r.body, auth); code != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d %s, want 401", r.method, r.path, what, code, body)
			}
		}
	}
	if code, _ := adminRequest(t, base, "GET", "/healthz", "", nil); code != 200 {
		t.Errorf("/healthz without the token: %d, want 200", code)
	}

	// Nothing of the refused requests happened.
	_, body := adminRequest(t, base, "GET", "/api/webhooks", "", withToken)
	var hooks []struct {
		Name, URL string
		Active    bool
	}
	if err := json.Unmarshal([]byte(body), &hooks); err != nil {
		t.Fatalf("GET /api/webhooks: %v: %s", err, body)
	}
	for _, w := range hooks {
		if w.Name == "intruder" || w.Name == "api" && (w.URL != rc.URL || !w.Active) {
			t.Errorf("a refused request changed the webhooks: %+v", hooks)
		}
	}
	if len(hooks) != 2 {
		t.Errorf("webhooks after the refused requests: %+v, want cfg and api", hooks)
	}
	if n := len(rc.requests()); n != 2 {
		t.Errorf("the receiver got %d requests, want the row's 2: a refused test, redeliver or recover sent something", n)
	}

	// With the token the same routes work.
	for _, r := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/api/webhooks/api/test", "", 200},
		{"POST", "/api/deliveries/" + ds[0].ID + "/redeliver", "", 202},
		{"PATCH", "/api/webhooks/api", `{"active": false}`, 200},
		{"DELETE", "/api/webhooks/api", "", 204},
	} {
		if code, body := adminRequest(t, base, r.method, r.path, r.body, withToken); code != r.want {
			t.Errorf("%s %s with the token: %d %s, want %d", r.method, r.path, code, body, r.want)
		}
	}
	if code, _ := adminRequest(t, base, "GET", "/api/webhooks/api", "", withToken); code != 404 {
		t.Errorf("GET /api/webhooks/api after DELETE with the token: %d, want 404", code)
	}
}
