package admin_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// TestBrowser drives Debian's headless chromium through the admin page of a
// running walhook on a real PostgreSQL: create a webhook with the form, see
// it in the table, test it until the status is green, switch it off, read a
// delivery's payload in its history, redeliver it, delete the webhook.
func TestBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("the browser test needs chromium (Debian: apt-get install chromium; .ci/run installs it): %v", err)
	}
	w := startWalhook(t)
	ctx, expectConsoleError := newBrowser(t, chromium)
	shots := t.TempDir()

	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	screenshot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join(shots, name)
		if err := os.WriteFile(path, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		if dir := os.Getenv("WALHOOK_SCREENSHOTS"); dir != "" { // to look at them after the run
			os.WriteFile(filepath.Join(dir, name), buf, 0o644)
		}
		t.Logf("screenshot %s", path)
	}

	var entities []struct {
		Name, Table, Source string
		ReplicaIdentity     string `json:"replica_identity"`
		PrimaryKey          bool   `json:"primary_key"`
	}
	w.api(t, "GET", "/api/entities", &entities)
	if got := fmt.Sprintf("%+v", entities); got != "[{Name:item Table:public.items Source:config ReplicaIdentity:full PrimaryKey:true} "+
		"{Name:public.notes Table:public.notes Source:database ReplicaIdentity:default PrimaryKey:false}]" {
		t.Errorf("GET /api/entities = %s", got)
	}
	// The form offers them.
	run("open the form", chromedp.Navigate(w.url+"/webhooks/new"), chromedp.WaitVisible(chromedp.CSS(`#webhook-form`)))
	if got := text(`#events`); !strings.Contains(got, "item") || !strings.Contains(got, "public.items, replica identity full") ||
		!strings.Contains(got, "public.notes") {
		t.Errorf("the events offered: %q", got)
	}
	row := `tr[data-name="browser-hook"]`
	run("fill in the form",
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "browser-hook"),
		chromedp.SendKeys(chromedp.CSS(`input[name=url]`), w.receiver.URL+"/hooks?src=<script>alert(1)</script>"),
		chromedp.Click(chromedp.CSS(`input[name=events][value=item]`)),
		chromedp.SetValue(chromedp.CSS(`select[name=retry_mode]`), "test"),
	)
	screenshot("0-form.png")
	run("create",
		chromedp.Click(chromedp.CSS(`#webhook-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("secret-box")),
	)
	secret := text(`#secret-value`)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("the page showed the secret %q", secret)
	}
	screenshot("1-created.png")

	run("see it in the table", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible(chromedp.CSS(row)))
	if got := text(row + ` .latest`); got != "N/A" {
		t.Errorf("latest response before any call: %q, want N/A", got)
	}
	// The query's value is redacted (it may hold a key), so the markup in it
	// never reaches the page; TestPagesEscape checks the escaping itself.
	if got := text(row + ` td.endpoint code`); !strings.HasSuffix(got, "/hooks?src=xxxxx") {
		t.Errorf("the endpoint cell shows %q, want the URL with its query's value redacted", got)
	}

	run("press Test", chromedp.Click(chromedp.CSS(row+` button[data-action=test]`)), chromedp.WaitVisible(chromedp.CSS(row+` .latest.ok`)))
	if got := text(row + ` .latest`); got != "200" {
		t.Errorf("latest response after the test: %q", got)
	}
	if got := text(`#flash`); !strings.Contains(got, "HTTP 200") {
		t.Errorf("flash after the test: %q", got)
	}
	ping := w.receiver.WaitRequest(t, 20*time.Second, func(r testkit.Request) bool { return strings.Contains(string(r.Body), `"event":"ping"`) })
	if want := testkit.StandardSignature(t, secret, ping.Header.Get("Webhook-Id"), ping.Header.Get("Webhook-Timestamp"), ping.Body); ping.Header.Get("Webhook-Signature") != want {
		t.Errorf("the ping is not signed with the secret the page showed")
	}

	// A row change is delivered, then the webhook is switched off.
	w.exec(t, `INSERT INTO items (id, name) VALUES (7, 'widget')`)
	w.receiver.WaitRequest(t, 20*time.Second, func(r testkit.Request) bool {
		return r.Header.Get("X-Walhook-Webhook") == "browser-hook" && r.Header.Get("X-Walhook-Event") == "item.create"
	})
	waitFor(t, "the delivery to be counted", func() bool {
		var hook webhook
		w.api(t, "GET", "/api/webhooks/browser-hook", &hook)
		return hook.Stats.SuccessfulCalls == 2
	})
	run("refresh the row", chromedp.Click(chromedp.CSS(row+` button[data-action=refresh]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('`+row+` td.successful').textContent.trim() === "2"`,
			chromedp.WithPollingTimeout(10*time.Second)))

	// The row that was there before is sent again by a backfill.
	run("backfill from the history page", chromedp.Navigate(w.url+"/webhooks/browser-hook/deliveries"),
		chromedp.WaitVisible(chromedp.CSS(`#backfill-form button`)), chromedp.Click(chromedp.CSS(`#backfill-form button`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("flash").textContent.startsWith("Backfill done")`,
			chromedp.WithPollingTimeout(20*time.Second)))
	if got := text(`#flash`); got != "Backfill done: 1 rows queued, 0 left out for a newer change." {
		t.Errorf("flash after the backfill: %q", got)
	}
	w.receiver.WaitRequest(t, 20*time.Second, func(r testkit.Request) bool {
		id := r.Header.Get("Webhook-Id")
		return r.Header.Get("X-Walhook-Webhook") == "browser-hook" && strings.Contains(string(r.Body), `"name":"widget"`) && len(id) == 25 && id[17] == '8'
	})
	waitFor(t, "the backfill's delivery to be counted", func() bool {
		var hook webhook
		w.api(t, "GET", "/api/webhooks/browser-hook", &hook)
		return hook.Stats.SuccessfulCalls == 3
	})
	run("back to the table", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible(chromedp.CSS(row)))

	run("switch it off", chromedp.Click(chromedp.CSS(row+` input[data-action=toggle]`)), chromedp.WaitVisible(chromedp.CSS(row+`.inactive`)))
	var hook webhook
	w.api(t, "GET", "/api/webhooks/browser-hook", &hook)
	if hook.Active {
		t.Error("the switch did not switch the webhook off")
	}

	// The overview strip and the sparklines show what happened.
	strip := `#overview`
	if got := text(strip + ` [data-field=state]`); got != "reading the slot" {
		t.Errorf("the strip's state: %q", got)
	}
	if got := text(strip + ` [data-field=rate]`); got == "0.00/s" || !strings.HasSuffix(got, "/s") {
		t.Errorf("the strip's events per second after two row changes: %q", got)
	}
	if got := text(strip + ` [data-field=lag]`); !strings.Contains(got, "max 1.0 GiB") {
		t.Errorf("the strip's slot lag: %q, want it against max_lag_mb", got)
	}
	var bars int
	bars = evaluate[int](t, ctx, `document.querySelectorAll('`+row+` svg.spark rect.ok').length`)
	if bars == 0 {
		t.Error("the sparkline shows no delivery after two")
	}
	if got := evaluate[string](t, ctx, `document.querySelector('`+row+` svg.spark title').textContent`); !strings.Contains(got, "2 delivered, 0 failed") { // the row change and its backfill; the ping is no delivery
		t.Errorf("the sparkline's title: %q", got)
	}
	screenshot("2-overview.png")

	// A failing receiver: its failure is red in its sparkline, and the
	// strip's script counts it without a reload.
	failing := newReceiver(t, func(int) int { return 500 })
	if status := w.post(t, "/api/webhooks", fmt.Sprintf(`{"name": "failing", "url": %q, "events": ["item"], "max_attempts": 1}`, failing.URL)); status != 201 {
		t.Fatalf("creating the failing webhook: %d", status)
	}
	w.exec(t, `INSERT INTO items (id, name) VALUES (8, 'gadget')`)
	waitFor(t, "the failure", func() bool {
		var hook webhook
		w.api(t, "GET", "/api/webhooks/failing", &hook)
		return hook.Stats.Failed == 1
	})
	run("the strip counts the failure", chromedp.Poll[chromedp.Void](`document.querySelector('#overview [data-field=failed]').textContent === "1"`,
		chromedp.WithPollingTimeout(15*time.Second)))
	run("reload the table", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-name="failing"]`)))
	bars = evaluate[int](t, ctx, `document.querySelectorAll('tr[data-name="failing"] svg.spark rect.bad').length`)
	if bars == 0 {
		t.Error("the failing webhook's sparkline shows no failure in red")
	}
	var red string
	red = evaluate[string](t, ctx, `getComputedStyle(document.querySelector('tr[data-name="failing"] svg.spark rect.bad')).fill`)
	if red != "rgb(179, 38, 30)" {
		t.Errorf("the failure's bar is filled %q, want the page's red", red)
	}
	if got := text(strip + ` [data-field=failed]`); got != "1" {
		t.Errorf("the strip's failed: %q", got)
	}
	screenshot("3-failure.png")

	// Every delivery of entity 7 in one search; one's attempts opened.
	run("open its history", chromedp.Click(chromedp.CSS(row+` td.name a`)), chromedp.WaitVisible(chromedp.CSS(`table.history`)))
	run("search entity 7", chromedp.SendKeys(chromedp.CSS(`#search-form input[name=entity_id]`), "7"),
		chromedp.Submit(chromedp.CSS(`#search-form`)), chromedp.WaitVisible(chromedp.CSS(`#search-form input[name=entity_id][value="7"]`)))
	var found []string
	found = evaluate[[]string](t, ctx, `[...document.querySelectorAll('table.history tbody tr')].map(tr => tr.cells[2].textContent.trim() + " " + tr.cells[1].textContent.trim() + " " + tr.cells[0].textContent.trim())`)
	if want := []string{"7 item.create success", "7 item.create success"}; fmt.Sprint(found) != fmt.Sprint(want) {
		t.Errorf("the search for entity 7 found %q, want the change and its backfill, %q", found, want)
	}
	var charts int
	charts = evaluate[int](t, ctx, `document.querySelectorAll('.charts svg.chart').length`)
	if charts != 3 {
		t.Errorf("%d charts on the webhook's page, want 3", charts)
	}
	screenshot("4-search.png")
	run("open a delivery's attempts", chromedp.Click(chromedp.CSS(`table.history tbody tr:last-child a.open`)),
		chromedp.WaitVisible(chromedp.CSS(`article.delivery details.attempt`)))
	payload := text(`article.delivery .payload pre`)
	for _, want := range []string{`"event": "item.create"`, `"name": "widget"`, "\n  \"data\": {"} {
		if !strings.Contains(payload, want) {
			t.Errorf("the payload shown lacks %q:\n%s", want, payload)
		}
	}
	if got := text(`article.delivery details.attempt summary`); !strings.Contains(got, "Attempt 1") || !strings.Contains(got, "200") {
		t.Errorf("the attempt shown: %q", got)
	}
	screenshot("5-delivery.png")
	run("back to the history", chromedp.Navigate(w.url+"/webhooks/browser-hook/deliveries"), chromedp.WaitVisible(chromedp.CSS(`table.history`)))
	if got := text(`tr.delivery .status`); got != "success" {
		t.Errorf("delivery status %q", got)
	}
	run("redeliver", chromedp.Click(chromedp.CSS(`tr.delivery button[data-action=redeliver]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr.delivery.pending`)))

	run("delete it", chromedp.Navigate(w.url+"/"), chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.Click(chromedp.CSS(row+` button[data-action=delete]`)), chromedp.WaitNotPresent(chromedp.CSS(row)))
	if status := w.api(t, "GET", "/api/webhooks/browser-hook", nil); status != 404 {
		t.Errorf("after Delete, GET answers %d", status)
	}
	if text(`tr[data-name="from-config"] .tag`) != "config" {
		t.Error("the config webhook is not marked as such")
	}
	// Its switch works too, but not against active = false in the file:
	// the page says so and the webhook stays off.
	cfg := `tr[data-name="from-config"]`
	expectConsoleError("status of 409")
	run("try to switch the config webhook on", chromedp.Click(chromedp.CSS(cfg+` input[data-action=toggle]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("flash").textContent.includes("active = false")`,
			chromedp.WithPollingTimeout(10*time.Second)))
	w.api(t, "GET", "/api/webhooks/from-config", &hook)
	if hook.Active {
		t.Error("the config webhook was switched on against its file")
	}
}

// newBrowser starts headless chromium with a fresh profile; every request
// of the page carries the admin token as basic auth, as after the browser's
// login dialog. Confirmation dialogs are accepted. A console error fails
// the test unless it contains what expect was last given.
func newBrowser(t *testing.T, chromium string) (_ context.Context, expect func(string)) {
	t.Helper()
	allocCtx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+token))
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": auth},
	}); err != nil {
		t.Fatal(err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	var expected atomic.Pointer[string]
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if e := expected.Load(); e != nil && strings.Contains(m.String(), *e) {
				continue
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				t.Errorf("browser console: %s", m)
			}
		}
	}()
	return ctx, func(s string) { expected.Store(&s) }
}

// walhook is a running walhook process with its database and a receiver.
type walhook struct {
	url      string
	dsn      string
	receiver *testkit.Receiver
}

// startWalhook builds walhook, starts a PostgreSQL with two tables and runs
// walhook on it with one (inactive) config webhook.
func startWalhook(t *testing.T) *walhook {
	t.Helper()
	ctx := context.Background()
	pg, err := pgcluster.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	dsn, err := pg.CreateDatabase(ctx, "browser")
	if err != nil {
		t.Fatal(err)
	}
	w := &walhook{dsn: dsn, receiver: newReceiver(t, nil)}
	w.exec(t, `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL)`)
	w.exec(t, `ALTER TABLE items REPLICA IDENTITY FULL`)
	w.exec(t, `CREATE TABLE notes (body text)`)

	dir := t.TempDir()
	addr := freeAddr(t)
	w.url = "http://" + addr
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `[postgres]
dsn = %q
slot = "browser"
publication = "browser"
[admin]
listen = %q
token = %q
[[entity]]
name = "item"
table = "public.items"
[[webhook]]
name = "from-config"
url = %q
events = ["item"]
active = false
`, dsn, addr, token, w.receiver.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	testkit.StartProcess(t, filepath.Join(dir, "walhook.log"), nil, testkit.Walhook(t), "run", "-config", config)
	waitFor(t, "walhook to be ready", func() bool { return w.api(t, "GET", "/readyz", nil) == 200 })
	return w
}

func (w *walhook) exec(t *testing.T, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// evaluate runs a script in the page and returns its value.
func evaluate[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// post sends body to walhook's API with the token and returns the status.
func (w *walhook) post(t *testing.T, path, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", w.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp).status
}

// api calls walhook's API with the token and decodes a 2xx answer into v;
// it returns the status, 0 when walhook is unreachable.
func (w *walhook) api(t *testing.T, method, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, w.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	r := readResponse(t, resp)
	if v != nil && r.status/100 == 2 {
		r.json(t, v)
	}
	return r.status
}
