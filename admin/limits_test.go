package admin_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"walhook/admin"
	"walhook/deliver"
)

// TestHostileTemplatesAPI: each template of issue 19 that ranges over a
// number is answered 422 on create and on change, naming the template.
func TestHostileTemplatesAPI(t *testing.T) {
	e := newEnv(t)
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "other", "url": "http://127.0.0.1:9/", "events": ["*"]}`)
	for _, tmpl := range []string{
		`{{range 9223372036854775807}}{{end}}`,
		`{{range 100000000000}}xxxx{{end}}`,
	} {
		body, _ := json.Marshal(map[string]any{"name": "hostile", "url": "http://127.0.0.1:9/", "events": []string{"*"}, "template": tmpl})
		r := e.do("POST", "/api/webhooks", string(body))
		if r.status != 422 || !strings.Contains(r.errorText(t), "template:") {
			t.Errorf("POST with %s: %d %s, want 422 naming the template", tmpl, r.status, r.body)
		}
		patch, _ := json.Marshal(map[string]any{"template": tmpl})
		r = e.do("PATCH", "/api/webhooks/other", string(patch))
		if r.status != 422 || !strings.Contains(r.errorText(t), "range over a number") {
			t.Errorf("PATCH with %s: %d %s, want 422", tmpl, r.status, r.body)
		}
	}
	e.mustDo(200, "PATCH", "/api/webhooks/other", `{"active": false}`)
}

// TestValidationOutsideLocks: while the validation of one webhook's change
// runs (here it waits, as a slow template or a slow database would), a
// change of another webhook is answered: validation holds none of the
// queue's locks.
func TestValidationOutsideLocks(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	q, err := deliver.Open(deliver.Options{
		Dir: filepath.Join(t.TempDir(), "data"), Concurrency: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	srv := httptest.NewServer(admin.New(admin.Options{
		Token: token, Queue: q, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Validate: func(w deliver.Webhook) error {
			if strings.Contains(w.Template, "wait") {
				close(entered)
				<-release
			}
			return nil
		},
	}))
	defer srv.Close()
	do := func(method, path, body string) int {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, name := range []string{"slow", "other"} {
		if st := do("POST", "/api/webhooks", `{"name": "`+name+`", "url": "http://127.0.0.1:9/", "events": ["*"]}`); st != 201 {
			t.Fatalf("create %s: %d", name, st)
		}
	}
	slow := make(chan int, 1)
	go func() { slow <- do("PATCH", "/api/webhooks/slow", `{"template": "{\"wait\": 1}"}`) }()
	<-entered
	other := make(chan int, 1)
	go func() { other <- do("PATCH", "/api/webhooks/other", `{"active": false}`) }()
	select {
	case st := <-other:
		if st != 200 {
			t.Errorf("PATCH of the other webhook: %d", st)
		}
	case <-time.After(10 * time.Second): // liveness, not timing: it waits on nothing
		t.Error("a PATCH of another webhook waits for the validation of the first")
	}
	close(release)
	if st := <-slow; st != 200 {
		t.Errorf("the slow PATCH: %d", st)
	}
	if w, _ := q.Webhook("slow"); w.Template != `{"wait": 1}` {
		t.Errorf("slow's template = %q", w.Template)
	}
	if w, _ := q.Webhook("other"); w.Active {
		t.Error("other is still active")
	}
}

// TestSetToken: a new token (a reload of [admin] token) is in force at
// once; the old one is refused.
func TestSetToken(t *testing.T) {
	q, err := deliver.Open(deliver.Options{Dir: filepath.Join(t.TempDir(), "data"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	a := admin.New(admin.Options{Token: "old-token", Queue: q, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewServer(a)
	defer srv.Close()
	get := func(tok string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/api/webhooks", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get("old-token"); st != 200 {
		t.Fatalf("old token before the change: %d", st)
	}
	a.SetToken("new-token")
	if st := get("old-token"); st != 401 {
		t.Errorf("old token after the change: %d, want 401", st)
	}
	if st := get("new-token"); st != 200 {
		t.Errorf("new token: %d, want 200", st)
	}
}

// TestLimitsAPI: a name longer than 100 bytes (its .log file could not be
// opened) and a notify_email with a CR LF are answered 422 naming the key.
func TestLimitsAPI(t *testing.T) {
	e := newEnv(t)
	long, _ := json.Marshal(map[string]any{"name": strings.Repeat("n", 101), "url": "http://127.0.0.1:9/", "events": []string{"*"}})
	mail, _ := json.Marshal(map[string]any{"name": "m", "url": "http://127.0.0.1:9/", "events": []string{"*"}, "notify_email": "ops@example.com (x\r\nBcc: victim@evil.example)"})
	for _, tc := range []struct{ body, want string }{
		{string(long), "name: at most 100 bytes"},
		{string(mail), "notify_email: contains a control character"},
	} {
		r := e.do("POST", "/api/webhooks", tc.body)
		if r.status != 422 || !strings.Contains(r.errorText(t), tc.want) {
			t.Errorf("%d %s, want 422: %s", r.status, r.body, tc.want)
		}
	}
}
