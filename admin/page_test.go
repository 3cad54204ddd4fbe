package admin_test

import (
	"fmt"
	"strings"
	"testing"

	"walhook/admin"
)

// TestSecretsStayHidden gives a webhook every kind of secret, makes it
// deliver, then reads every route, the server's log and the metrics: none
// shows a secret after the answer that created it.
func TestSecretsStayHidden(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	secrets := []string{"sec-shared-4f1", "hdr-value-9c2", "basic-pw-7d0", "url-pw-3b8"}
	url := strings.Replace(rc.URL, "http://", "http://user:url-pw-3b8@", 1)
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "guarded", "url": %q, "events": ["employee"],
		"secret": "sec-shared-4f1", "signature": "sha256", "headers": {"X-Api-Key": "hdr-value-9c2"},
		"basic_auth": {"username": "u", "password": "basic-pw-7d0"}}`, url))
	e.mustDo(200, "POST", "/api/webhooks/guarded/test", "")
	e.write(10, 1)
	waitFor(t, "the delivery", func() bool { return rc.Count() == 2 })
	// The receiver got every credential: they are in use, just not shown.
	req := rc.Last(t)
	if user, pw, _ := req.BasicAuth(); user != "u" || pw != "basic-pw-7d0" || req.Header.Get("X-Api-Key") != "hdr-value-9c2" {
		t.Fatalf("receiver got basic auth %q/%q, X-Api-Key %q", user, pw, req.Header.Get("X-Api-Key"))
	}
	e.mustDo(200, "PATCH", "/api/webhooks/guarded", `{"max_attempts": 3}`)

	var shown strings.Builder
	for _, path := range []string{
		"/api/webhooks", "/api/webhooks/guarded", "/api/webhooks/guarded/deliveries", "/api/webhooks/guarded/log",
		"/", "/webhooks/guarded/deliveries", "/webhooks/guarded/edit", "/webhooks/guarded/row", "/metrics",
	} {
		shown.WriteString(e.mustDo(200, "GET", path, "").body)
	}
	shown.WriteString(e.mustDo(200, "POST", "/api/webhooks/guarded/test", "").body)
	for _, s := range secrets {
		if strings.Contains(shown.String(), s) {
			t.Errorf("a response shows the secret %q", s)
		}
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("the server's log shows the secret %q", s)
		}
	}
	if !strings.Contains(shown.String(), "[redacted]") {
		t.Error("the redacted header is not shown as [redacted]")
	}
}

// TestPatchKeepsHiddenValues sends back what GET showed, as the edit form
// does: the redacted header value and the URL's hidden password are kept.
func TestPatchKeepsHiddenValues(t *testing.T) {
	e := newEnv(t)
	rc := newReceiver(t, nil)
	url := strings.Replace(rc.URL, "http://", "http://user:pw-in-url@", 1)
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "kept", "url": %q, "events": ["*"], "secret": "s1",
		"headers": {"X-Api-Key": "k1", "X-Other": "o1"}, "basic_auth": {"username": "u", "password": "p1"}}`, url))
	var shown webhook
	e.mustDo(200, "GET", "/api/webhooks/kept", "").json(t, &shown)
	if strings.Contains(shown.URL, "pw-in-url") || shown.Headers["X-Api-Key"] != "[redacted]" || shown.Signature != "standard" {
		t.Fatalf("GET shows %+v", shown)
	}
	e.mustDo(200, "PATCH", "/api/webhooks/kept", fmt.Sprintf(`{"url": %q, "headers": {"X-Api-Key": "[redacted]", "X-New": "n1"},
		"basic_auth": {"username": "u2"}}`, shown.URL))
	e.mustDo(200, "POST", "/api/webhooks/kept/test", "")
	req := rc.Last(t)
	user, pw, _ := req.BasicAuth()
	if req.Header.Get("X-Api-Key") != "k1" || req.Header.Get("X-New") != "n1" || req.Header.Get("X-Other") != "" ||
		user != "u2" || pw != "p1" || req.Header.Get("Webhook-Signature") == "" {
		t.Errorf("after the PATCH the receiver got headers %v, basic auth %q/%q", req.Header, user, pw)
	}
	var patched webhook
	e.mustDo(200, "GET", "/api/webhooks/kept", "").json(t, &patched)
	if patched.URL != shown.URL {
		t.Errorf("URL changed to %q", patched.URL)
	}

	// signature "" makes it unsigned; a signature again generates a secret.
	e.mustDo(200, "PATCH", "/api/webhooks/kept", `{"signature": "", "basic_auth": {"username": ""}}`)
	e.mustDo(200, "POST", "/api/webhooks/kept/test", "")
	req = rc.Last(t)
	if req.Header.Get("Webhook-Signature") != "" {
		t.Errorf("unsigned webhook sent Webhook-Signature %q", req.Header.Get("Webhook-Signature"))
	}
	// Without basic_auth the URL's own credentials, kept through the
	// PATCH of the redacted URL, authenticate.
	if user, pw, _ := req.BasicAuth(); user != "user" || pw != "pw-in-url" {
		t.Errorf("without basic_auth the request authenticated as %q/%q, want the URL's user/pw-in-url", user, pw)
	}
	var resigned webhook
	e.mustDo(200, "PATCH", "/api/webhooks/kept", `{"signature": "sha1", "signature_header": "X-Sig"}`).json(t, &resigned)
	if !strings.HasPrefix(resigned.Secret, "whsec_") {
		t.Errorf("PATCH to a signature without a secret did not show a generated one: %+v", resigned)
	}
	if r := e.do("PATCH", "/api/webhooks/kept", `{"headers": {"X-Unknown": "[redacted]"}}`); r.status != 422 {
		t.Errorf("[redacted] for a header never stored: %d %s", r.status, r.body)
	}
}

// TestPagesEscape puts markup in every place a user or a receiver controls
// and checks that the pages show it as text.
func TestPagesEscape(t *testing.T) {
	e := newEnv(t)
	const xss = `<script>alert(1)</script>`
	rc := newAnswering(t, func(int) int { return 500 }, xss)
	url := rc.URL + "/?q=" + xss
	tmpl := `{"id": {{json .EntityID}}, "note": "` + xss + `"}`
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "x.y-z", "url": %q, "events": ["employee", "s.%s"],
		"max_attempts": 1, "template": %q, "headers": {"X-Note": %q}}`, url, xss, tmpl, xss))
	e.write(10, 1)
	waitFor(t, "the failed delivery", func() bool { return strings.Contains(e.mustDo(200, "GET", "/webhooks/x.y-z/row", "").body, "bad") })
	var failed []delivery
	waitFor(t, "the failure stored", func() bool {
		e.mustDo(200, "GET", "/api/webhooks/x.y-z/deliveries?status=failed", "").json(t, &failed)
		return len(failed) == 1
	})
	for _, path := range []string{"/", "/webhooks/x.y-z/deliveries", "/webhooks/x.y-z/deliveries?status=failed", "/deliveries/" + failed[0].ID, "/webhooks/x.y-z/edit", "/webhooks/x.y-z/row", "/webhooks/new"} {
		r := e.mustDo(200, "GET", path, "")
		if strings.Contains(r.body, "<script>alert") {
			t.Errorf("%s contains the markup unescaped", path)
		}
		// The history's compact rows show no payload, header or answer.
		if path != "/webhooks/new" && !strings.Contains(path, "/deliveries?") && !strings.HasSuffix(path, "/deliveries") && !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
			t.Errorf("%s does not show the markup as text", path)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
	}
}

// TestPages checks what the operator sees: the table's columns and
// colours, the form's choices and the history of a delivery.
func TestPages(t *testing.T) {
	e := newEnv(t)
	ok := newReceiver(t, nil)
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "green", "url": %q, "events": ["employee"]}`, ok.URL))
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "red", "url": "http://127.0.0.1:1/", "events": ["*"], "max_attempts": 1}`)
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "grey", "url": "http://127.0.0.1:1/", "events": ["public.other"]}`)
	e.mustDo(200, "POST", "/api/webhooks/green/test", "")
	e.write(10, 42)
	waitFor(t, "both deliveries", func() bool {
		var green, red []delivery
		e.mustDo(200, "GET", "/api/webhooks/green/deliveries?status=success", "").json(t, &green)
		e.mustDo(200, "GET", "/api/webhooks/red/deliveries?status=failed", "").json(t, &red)
		return len(green) == 1 && len(red) == 1
	})
	index := e.mustDo(200, "GET", "/", "").body
	for _, want := range []string{
		`<tr data-name="green"`, `<span class="latest ok"`, `>200</span>`,
		`<tr data-name="red"`, `<span class="latest bad"`, `>error</span>`,
		`<tr data-name="grey"`, `<span class="latest na"`, `>N/A</span>`,
		`href="/api/webhooks/green/log"`, `data-action="test"`, `data-action="refresh"`, `data-action="delete"`,
		`href="/webhooks/green/edit"`, `href="/webhooks/green/deliveries"`, `data-action="toggle"`, "Successful calls", "Total calls", "Queued", "Failed",
	} {
		if !strings.Contains(index, want) {
			t.Errorf("the index lacks %s", want)
		}
	}
	form := e.mustDo(200, "GET", "/webhooks/new", "").body
	for _, want := range []string{
		`value="employee"`, "public.employees, replica identity full", `value="*"`,
		`name="actions" value="create" checked`, `name="actions" value="truncate" >`,
		`name="timeout_ms"`, `name="max_attempts"`, `name="retry_mode"`, `name="signature"`, `name="secret"`,
		`name="headers"`, `name="basic_user"`, `name="notify_email"`, `name="template"`, `name="content_type"`,
		`name="method"`, `name="include_entity"`, `name="header_prefix"`, `name="signature_header"`, `name="notify_on_failure"`,
	} {
		if !strings.Contains(form, want) {
			t.Errorf("the form lacks %s", want)
		}
	}
	edit := e.mustDo(200, "GET", "/webhooks/green/edit", "").body
	if !strings.Contains(edit, `value="employee" checked`) || !strings.Contains(edit, `readonly`) {
		t.Error("the edit form does not show the webhook's events or locks its name")
	}
	history := e.mustDo(200, "GET", "/webhooks/green/deliveries", "").body
	var green []delivery
	e.mustDo(200, "GET", "/api/webhooks/green/deliveries", "").json(t, &green)
	if len(green) != 1 {
		t.Fatalf("green has %d deliveries, want 1", len(green))
	}
	for _, want := range []string{"employee.create", `href="/deliveries/` + green[0].ID + `"`, `data-action="redeliver"`, `id="recover-form"`, `id="search-form"`} {
		if !strings.Contains(history, want) {
			t.Errorf("the history lacks %s", want)
		}
	}
	one := e.mustDo(200, "GET", "/deliveries/"+green[0].ID, "").body
	for _, want := range []string{"employee.create", "&#34;id&#34;: 42", "HTTP 200 OK", "Webhook-Id:", `data-action="redeliver"`} {
		if !strings.Contains(one, want) {
			t.Errorf("the delivery's page lacks %s", want)
		}
	}
	e.mustDo(404, "GET", "/webhooks/nope/deliveries", "")

	// A webhook may be called like a page: its own pages stay reachable.
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "new", "url": "http://127.0.0.1:1/", "events": ["*"]}`)
	if r := e.mustDo(200, "GET", "/webhooks/new/deliveries", ""); !strings.Contains(r.body, "<h1>new <small>deliveries") {
		t.Error("the history of a webhook named new is not reachable")
	}
	if r := e.mustDo(200, "GET", "/webhooks/new", ""); !strings.Contains(r.body, "<h1>New webhook</h1>") {
		t.Error("/webhooks/new is not the form")
	}
}

// TestPageShowsUnpublishable: the form says which tables walhook will not
// publish, and the index shows what keeps webhooks from getting events.
func TestPageShowsUnpublishable(t *testing.T) {
	e := newEnv(t)
	e.tables = []admin.Entity{
		{Name: "public.audit", Table: "public.audit", Source: "database", ReplicaIdentity: "default",
			Unpublished: "no primary key or replica identity: not published (its UPDATE would fail)"},
		{Name: "public.locked", Table: "public.locked", Source: "database", ReplicaIdentity: "nothing", PrimaryKey: true,
			Unpublished: "no primary key or replica identity: not published (its UPDATE would fail)"},
		{Name: "public.orders", Table: "public.orders", Source: "database", ReplicaIdentity: "default", PrimaryKey: true},
	}
	form := e.mustDo(200, "GET", "/webhooks/new", "").body
	for _, want := range []string{
		"public.audit, no primary key or replica identity: not published (its UPDATE would fail)",
		"public.locked, no primary key or replica identity: not published (its UPDATE would fail)",
		"public.orders, replica identity default",
	} {
		if !strings.Contains(form, want) {
			t.Errorf("the form lacks %q", want)
		}
	}
	if index := e.mustDo(200, "GET", "/", "").body; strings.Contains(index, `class="notice"`) {
		t.Errorf("the index shows a notice without a problem")
	}
	e.problems = []string{"No events: table public.audit has <no> primary key"}
	if index := e.mustDo(200, "GET", "/", "").body; !strings.Contains(index, `<p class="notice">No events: table public.audit has &lt;no&gt; primary key</p>`) {
		t.Errorf("the index does not show the problem:\n%s", index)
	}
}
