package main

// One parity test per product document in ../shared/seeds: walhook is
// configured as the page describes, and the receiver does exactly what the
// page tells its readers to do (verify the signature its way, read the
// headers and body it documents).

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"walhook/deliver"
	"walhook/internal/testkit"
)

// newSeedReceiver is testkit's recording receiver; handle verifies a
// request (body is r.Body) the way the product's page says and chooses the
// answer, which carries the header X-Receiver: seed.
func newSeedReceiver(t *testing.T, handle func(n int, r request, body []byte) testkit.Response) *seedReceiver {
	t.Helper()
	return &seedReceiver{testkit.NewReceiver(t, func(n int, r request) testkit.Response {
		a := handle(n, r, r.Body)
		a.Header = http.Header{"X-Receiver": {"seed"}}
		return a
	})}
}

// answer is a seed receiver's answer: a status and a text.
func answer(status int, text string) testkit.Response {
	return testkit.Response{Status: status, Body: text}
}

// seedReceiver is a product's endpoint; each request records how it was
// answered (Status).
type seedReceiver struct{ *testkit.Receiver }

func (rc *seedReceiver) requests() []request { return rc.Requests() }

// rejected counts the requests the receiver refused as not authentic.
func (rc *seedReceiver) rejected() int {
	n := 0
	for _, r := range rc.requests() {
		if r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden {
			n++
		}
	}
	return n
}

// newSMTPSink is a real SMTP server keeping what it is sent (see
// testkit.SMTPServer).
func newSMTPSink(t *testing.T) *testkit.SMTPServer { return testkit.NewSMTPServer(t, false, "", "") }

// logLines reads a webhook's .log file, its buffered lines written first.
func logLines(h *harness, name string) []string {
	h.app.Queue().FlushLog(name)
	raw, _ := os.ReadFile(filepath.Join(h.dir, "logs", name+".log"))
	return strings.Split(strings.TrimSpace(string(raw)), "\n")
}

// TestAkuiteo: the Akuiteo webhook screen — name, endpoint, Test button,
// active switch, failure e-mail, secret (HMAC-SHA256 in Base64), security
// header, one event type with chosen actions, timeout, max attempts 1-8,
// production and test retry modes, latest response / successful / total
// calls, the .log file.
func TestAkuiteo(t *testing.T) {
	t.Parallel()
	const secret, tokenName, tokenValue = "akuiteo-secret", "X-Akuiteo-Token", "let-me-in"
	// What the page tells the endpoint to do: accept only requests with the
	// security header and its value, regenerate the signature from the
	// request content and the secret (HMAC-SHA256, Base64) and compare.
	authentic := func(r request, body []byte) bool {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
		return r.Header.Get(tokenName) == tokenValue &&
			hmac.Equal([]byte(r.Header.Get("X-Akuiteo-Signature")), []byte(want))
	}
	ok := newSeedReceiver(t, func(_ int, r request, body []byte) testkit.Response {
		if !authentic(r, body) {
			return answer(http.StatusUnauthorized, "not from Akuiteo")
		}
		return answer(http.StatusOK, "ok")
	})
	// Hangs past timeout_ms first, then fails, then (after the e-mail) works.
	heal := make(chan struct{})
	flaky := newSeedReceiver(t, func(n int, r request, body []byte) testkit.Response {
		if !authentic(r, body) {
			return answer(http.StatusUnauthorized, "not from Akuiteo")
		}
		switch {
		case n == 1:
			return testkit.Response{Status: http.StatusOK, Body: "too late", Delay: 20 * time.Second}
		case n == 2:
			return answer(http.StatusInternalServerError, "erreur interne")
		}
		select {
		case <-heal:
			return answer(http.StatusOK, "ok")
		default:
			return answer(http.StatusInternalServerError, "erreur interne")
		}
	})
	down := newSeedReceiver(t, func(_ int, r request, body []byte) testkit.Response {
		if !authentic(r, body) {
			return answer(http.StatusUnauthorized, "not from Akuiteo")
		}
		return answer(http.StatusServiceUnavailable, "maintenance")
	})
	sink := newSMTPSink(t)

	block := func(name, url, extra string) string {
		return fmt.Sprintf(`
[[webhook]]
name = %q
url = %q
events = ["employee"]
secret = %q
signature = "sha256-base64"
signature_header = "X-Akuiteo-Signature"
headers = { %q = %q }
%s`, name, url, secret, tokenName, tokenValue, extra)
	}
	// max_attempts is 1..8, as on the page.
	for _, c := range []struct {
		n    int
		want string
	}{{0, "max_attempts: must be 1..8 (got 0)"}, {9, "max_attempts: must be 1..8 (got 9)"}, {1, ""}, {8, ""}} {
		_, err := ParseConfig(strings.NewReader(postgresSection("postgres://x@127.0.0.1/x") +
			"[[entity]]\nname = \"employee\"\ntable = \"public.employees\"\n" + block("a", "https://erp.example.com/hook", fmt.Sprintf("max_attempts = %d\n", c.n))))
		if got := fmt.Sprint(err); (c.want == "" && err != nil) || (c.want != "" && !strings.Contains(got, c.want)) {
			t.Errorf("max_attempts = %d: err %v, want %q", c.n, err, c.want)
		}
	}

	h := newHarness(t, employeesSchema)
	h.start(fmt.Sprintf("[smtp]\nhost = \"127.0.0.1\"\nport = %d\nfrom = \"akuiteo@example.com\"\n", sink.Port) + `
[[entity]]
name = "employee"
table = "public.employees"
` + block("akuiteo-hr", ok.URL+"/hooks", `actions = ["create", "delete"]
timeout_ms = 5000
max_attempts = 3
notify_email = "ops@example.com"
notify_on_failure = true
`) + block("akuiteo-flaky", flaky.URL, `actions = ["create"]
timeout_ms = 500
max_attempts = 2
retry_mode = "test"
notify_email = "ops@example.com"
notify_on_failure = true
`) + block("akuiteo-down", down.URL, `actions = ["create"]
timeout_ms = 2000
max_attempts = 8
retry_mode = "production"
`) + block("akuiteo-off", ok.URL+"/off", `active = false
`))
	q := h.app.Queue()
	if st := q.Stats("akuiteo-hr"); st.LatestStatus != 0 || st.TotalCalls != 0 {
		t.Errorf("before any call: stats %+v, want latest response N/A (0) and no calls", st)
	}

	// The Test button.
	att, err := q.Test(context.Background(), "akuiteo-hr")
	if err != nil || att.Status != 200 {
		t.Fatalf("Test: %+v, %v", att, err)
	}
	ping := ok.requests()[0]
	if !strings.Contains(string(ping.Body), `"event":"ping"`) || ping.Status != 200 {
		t.Errorf("ping = %d %s", ping.Status, ping.Body)
	}

	h.exec(`INSERT INTO employees VALUES (1, 'Jean Dupont', 'jean@example.com', 1000)`)
	h.exec(`UPDATE employees SET salary = 2000 WHERE id = 1`)
	h.exec(`DELETE FROM employees WHERE id = 1`)
	waitFor(t, "the create and the delete", 30*time.Second, func() bool { return len(ok.requests()) >= 3 })

	// Only the chosen actions; modify would have come before delete.
	var events []string
	for _, r := range ok.requests() {
		events = append(events, r.Header.Get("X-Walhook-Event"))
		if r.Header.Get("X-Walhook-Webhook") == "akuiteo-off" {
			t.Error("the inactive webhook sent a request")
		}
	}
	if strings.Join(events, " ") != "ping employee.create employee.delete" {
		t.Errorf("events received: %v, want ping, create, delete", events)
	}
	if n := ok.rejected(); n != 0 {
		t.Errorf("the endpoint refused %d requests as not authentic", n)
	}
	waitFor(t, "the counters", 10*time.Second, func() bool { return q.Stats("akuiteo-hr").TotalCalls == 3 })
	if st := q.Stats("akuiteo-hr"); st.LatestStatus != 200 || st.SuccessfulCalls != 3 {
		t.Errorf("stats %+v, want latest 200, 3 successful of 3", st)
	}
	if st := q.Stats("akuiteo-off"); st.TotalCalls != 0 || st.Queued != 0 {
		t.Errorf("inactive webhook stats %+v", st)
	}
	lines := logLines(h, "akuiteo-hr")
	for i, ev := range []string{"ping", "employee.create", "employee.delete"} {
		if i >= len(lines) || !strings.Contains(lines[i], " event="+ev+" ") || !strings.Contains(lines[i], " status=200 ") {
			t.Errorf("log line %d = %q, want event=%s status=200 (log: %q)", i, lines[min(i, len(lines)-1)], ev, lines)
		}
	}

	// Production mode: after failed attempt n the next is due after
	// timeout (s) + n^4 seconds: 2+1 = 3 s, then 2+16 = 18 s.
	waitFor(t, "akuiteo-down's second attempt", 30*time.Second, func() bool {
		ds, _ := q.Deliveries("akuiteo-down", 1, "")
		return len(ds) == 1 && len(ds[0].Attempts) == 2 && !ds[0].NextAttemptAt.IsZero()
	})
	ds, _ := q.Deliveries("akuiteo-down", 1, "")
	if d := ds[0]; d.Attempts[1].At.Sub(d.Attempts[0].At) < 3*time.Second ||
		d.NextAttemptAt.Sub(d.Attempts[1].At) != 18*time.Second {
		t.Errorf("production schedule: attempts at %s, %s, next at %s; want +3s then +18s",
			d.Attempts[0].At, d.Attempts[1].At, d.NextAttemptAt)
	}

	// Test mode: 3 s between attempts; the first hit timeout_ms; after
	// max_attempts the delivery fails and ops@ gets an e-mail.
	waitFor(t, "akuiteo-flaky to fail for good", 30*time.Second, func() bool { return q.Stats("akuiteo-flaky").Failed == 1 })
	var failed []deliver.Delivery
	waitFor(t, "the failure on record", 10*time.Second, func() bool {
		failed, _ = q.Deliveries("akuiteo-flaky", 10, deliver.StatusFailed)
		return len(failed) > 0
	})
	if len(failed) != 1 || len(failed[0].Attempts) != 2 {
		t.Fatalf("failed deliveries %+v", failed)
	}
	d := failed[0]
	a1, a2 := d.Attempts[0], d.Attempts[1]
	if a1.Status != 0 || a1.Error != "timeout after 500ms" || a1.Duration >= 10*time.Second {
		t.Errorf("first attempt %d %q in %s, want a timeout after 500ms", a1.Status, a1.Error, a1.Duration)
	}
	if gap := a2.At.Sub(a1.At); gap < 3*time.Second {
		t.Errorf("test mode: second attempt %s after the first, want 3s", gap)
	}
	if st := q.Stats("akuiteo-flaky"); st.LatestStatus != 500 || st.SuccessfulCalls != 0 || st.TotalCalls != 2 {
		t.Errorf("akuiteo-flaky stats %+v", st)
	}
	lines = logLines(h, "akuiteo-flaky")
	if len(lines) != 2 || !strings.Contains(lines[0], `attempt=1/2 status=error`) || !strings.Contains(lines[0], `error="timeout after 500ms"`) ||
		!strings.Contains(lines[1], `attempt=2/2 status=500`) || !strings.Contains(lines[1], `error="erreur interne"`) {
		t.Errorf("akuiteo-flaky.log:\n%s", strings.Join(lines, "\n"))
	}

	waitFor(t, "the failure e-mail", 30*time.Second, func() bool { return len(sink.Messages()) >= 1 })
	m := sink.Messages()[0]
	if m.To != "ops@example.com" || !strings.Contains(m.Subject, `"akuiteo-flaky"`) {
		t.Errorf("e-mail to %s, subject %q", m.To, m.Subject)
	}
	for _, want := range []string{"Webhook:  akuiteo-flaky", "Endpoint: " + flaky.URL, "Event:       employee.create",
		"Event id:    " + d.EventID, "Last status: 500", "Error:       HTTP 500", "Response:    erreur interne",
		"/api/deliveries/" + d.ID + "/redeliver", "POST http://<admin address>/api/webhooks/akuiteo-flaky/recover?since="} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("e-mail lacks %q:\n%s", want, m.Body)
		}
	}
	// Following the e-mail: redeliver the delivery it names.
	id := regexp.MustCompile(`/api/deliveries/(\S+)/redeliver`).FindStringSubmatch(m.Body)
	if id == nil {
		t.Fatalf("no delivery id in the e-mail:\n%s", m.Body)
	}
	close(heal)
	resp, err := http.Post("http://"+h.app.AdminAddr()+"/api/deliveries/"+id[1]+"/redeliver", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /api/deliveries/%s/redeliver: %s", id[1], resp.Status)
	}
	waitFor(t, "the redelivery", 30*time.Second, func() bool { return q.Stats("akuiteo-flaky").SuccessfulCalls == 1 })
	if got := len(sink.Messages()); got != 1 {
		t.Errorf("%d e-mails, want 1", got)
	}
	if n := flaky.rejected() + down.rejected(); n != 0 {
		t.Errorf("the endpoints refused %d requests as not authentic", n)
	}
}

// TestPeopleForce: name, payload URL, a secret, several topics; the
// x-peopleforce-signature header checked as the page's Python sample does;
// the {"action": "employee_create", "data": {...}} body; the execution
// history shows the raw data sent.
func TestPeopleForce(t *testing.T) {
	t.Parallel()
	const secret = "pf-secret-ü"
	// verify_signature from the page: HMAC-SHA256 of the payload as UTF-8
	// text with the secret, hex, "sha256=" prefix, constant-time compare.
	rc := newSeedReceiver(t, func(_ int, r request, body []byte) testkit.Response {
		header := r.Header.Get("X-PeopleForce-Signature")
		if header == "" {
			return answer(http.StatusForbidden, "Missing signature header!")
		}
		if !utf8.Valid(body) {
			return answer(http.StatusBadRequest, "payload is not UTF-8")
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(string(body)))
		expected := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if subtle.ConstantTimeCompare([]byte(expected), []byte(header)) != 1 {
			return answer(http.StatusForbidden, "Signatures did not match!")
		}
		return answer(http.StatusOK, "Success")
	})
	h := newHarness(t, employeesSchema+`;
CREATE TABLE leave_requests (id int PRIMARY KEY, employee_id int, starts_on date)`)
	h.start(fmt.Sprintf(`
[[entity]]
name = "Employee"
table = "public.employees"

[[entity]]
name = "Leave_Request"
table = "public.leave_requests"

[[webhook]]
name = "peopleforce"
url = %q
events = ["Employee", "Leave_Request"]
actions = ["create"]
secret = %q
signature = "sha256"
signature_header = "X-PeopleForce-Signature"
template = '{"action": "{{lower .Entity}}_{{.Action}}", "data": {{json .Data}}}'
`, rc.URL, secret))
	h.exec(`INSERT INTO employees VALUES (130333, 'Zoë Müller', 'zoe@example.com', 4200.50)`)
	h.exec(`INSERT INTO leave_requests VALUES (7, 130333, '2026-12-24')`)
	waitFor(t, "two topics", 30*time.Second, func() bool { return len(rc.requests()) >= 2 })

	if n := rc.rejected(); n != 0 {
		t.Fatalf("the receiver refused %d requests", n)
	}
	// The two topics are different entities: they may arrive in any order.
	sent := map[string]request{} // by X-Walhook-Event
	byID := map[string][]byte{}  // by event id
	for _, r := range rc.requests() {
		sent[r.Header.Get("X-Walhook-Event")] = r
		byID[r.Header.Get("Webhook-Id")] = r.Body
	}
	var emp struct {
		Action string         `json:"action"`
		Data   map[string]any `json:"data"`
	}
	body := sent["Employee.create"].Body
	if err := json.Unmarshal(body, &emp); err != nil {
		t.Fatalf("employee body %s: %v", body, err)
	}
	if emp.Action != "employee_create" || emp.Data["id"] != float64(130333) || emp.Data["name"] != "Zoë Müller" {
		t.Errorf("employee body = %s", body)
	}
	if ct := sent["Employee.create"].Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if want, got := `{"action": "leave_request_create", "data": {"employee_id":130333,"id":7,"starts_on":"2026-12-24"}}`, sent["Leave_Request.create"].Body; string(got) != want {
		t.Errorf("leave request body\n got: %s\nwant: %s", got, want)
	}

	// The execution history: the raw data sent, byte for byte.
	var ds []deliver.Delivery
	waitFor(t, "both deliveries on record", 10*time.Second, func() bool {
		ds, _ = h.app.Queue().Deliveries("peopleforce", 10, deliver.StatusSuccess)
		return len(ds) == 2
	})
	for _, d := range ds {
		raw, ok := byID[d.EventID]
		if !ok || len(d.Attempts) != 1 || d.Attempts[0].RequestBody != string(raw) || d.Attempts[0].Status != 200 {
			t.Errorf("history entry %s: %+v, want the raw body %s", d.ID, d.Attempts, raw)
		}
	}
}

// TestEtlworks: POST or GET; the X-Etl-Webhook-* headers; JSON or form
// body; include entity off; enabled switch; all or selected events; HMAC-SHA1
// signature; basic auth; custom headers; the last 100 deliveries with
// request and response headers and bodies.
func TestEtlworks(t *testing.T) {
	t.Parallel()
	const secret = "etl-secret"
	// Checks common to every request, as the page describes them.
	check := func(r request, body []byte) string {
		if u, p, ok := r.BasicAuth(); !ok || u != "integrator" || p != "pa55" {
			return "basic auth"
		}
		if r.Header.Get("X-Tenant") != "acme" {
			return "custom header"
		}
		for _, k := range []string{"X-Etl-Webhook-Event-Id", "X-Etl-Webhook-Event", "X-Etl-Webhook-Id", "X-Etl-Webhook-Entity-Id", "X-Etl-Webhook-Entity-URL"} {
			if r.Header.Get(k) == "" {
				return "missing " + k
			}
		}
		mac := hmac.New(sha1.New, []byte(secret))
		mac.Write(body)
		got := strings.TrimPrefix(r.Header.Get("X-Etl-Webhook-Signature"), "sha1=")
		if !hmac.Equal([]byte(got), []byte(hex.EncodeToString(mac.Sum(nil)))) {
			return "signature"
		}
		return ""
	}
	respond := func(_ int, r request, body []byte) testkit.Response {
		if what := check(r, body); what != "" {
			return answer(http.StatusUnauthorized, what)
		}
		return answer(http.StatusOK, "accepted "+r.Header.Get("X-Etl-Webhook-Event-Id"))
	}
	get := newSeedReceiver(t, respond)
	form := newSeedReceiver(t, respond)
	off := newSeedReceiver(t, respond)
	// The page's JSON payload: eventId, eventType, webhookId, entityId,
	// entity, entityUrl and a timestamp in milliseconds.
	type etlPayload struct {
		EventID   string         `json:"eventId"`
		EventType string         `json:"eventType"`
		WebhookID int            `json:"webhookId"`
		EntityID  int            `json:"entityId"`
		Entity    map[string]any `json:"entity"`
		EntityURL string         `json:"entityUrl"`
		Timestamp int64          `json:"timestamp"`
	}
	var (
		jsonMu      sync.Mutex
		jsonPayload etlPayload
	)
	jsonHook := newSeedReceiver(t, func(n int, r request, body []byte) testkit.Response {
		if a := respond(n, r, body); a.Status != http.StatusOK {
			return a
		}
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		var p etlPayload
		if err := dec.Decode(&p); err != nil {
			return answer(http.StatusBadRequest, err.Error())
		}
		jsonMu.Lock()
		jsonPayload = p
		jsonMu.Unlock()
		return answer(http.StatusOK, "accepted "+p.EventID)
	})
	h := newHarness(t, `CREATE TABLE flows (id int PRIMARY KEY, name text, status text)`)
	common := `header_prefix = "X-Etl-Webhook-"
secret = "etl-secret"
signature = "sha1"
signature_header = "X-Etl-Webhook-Signature"
basic_auth = { username = "integrator", password = "pa55" }
`
	h.start(fmt.Sprintf(`
[[entity]]
name = "Flow"
table = "public.flows"
url = "https://app.example.com/rest/v1/flows/{id}"

[[webhook]]
name = "etl-get"
url = %q
method = "GET"
events = ["*"]
headers = { "X-Etl-Webhook-Id" = "etl-get", "X-Tenant" = "acme" }
%s
[[webhook]]
name = "etl-form"
url = %q
events = ["Flow"]
actions = ["create"]
content_type = "form"
include_entity = false
headers = { "X-Etl-Webhook-Id" = "etl-form", "X-Tenant" = "acme" }
%s
[[webhook]]
name = "etl-json"
url = %q
events = ["Flow"]
actions = ["modify"]
headers = { "X-Etl-Webhook-Id" = "etl-json", "X-Tenant" = "acme" }
template = '''{"eventId": {{json .ID}}, "eventType": {{json .Event}}, "webhookId": 1, "entityId": {{.EntityID}},
 "entity": {{json .Data}}, "entityUrl": {{json .EntityURL}}, "timestamp": {{.OccurredAtMs}}}'''
%s
[[webhook]]
name = "etl-off"
url = %q
active = false
events = ["*"]
headers = { "X-Etl-Webhook-Id" = "etl-off", "X-Tenant" = "acme" }
%s`, get.URL, common, form.URL, common, jsonHook.URL, common, off.URL, common))

	h.exec(`INSERT INTO flows SELECT g, 'flow ' || g, 'new' FROM generate_series(1, 105) g`)
	h.exec(`UPDATE flows SET status = 'executed' WHERE id = 1`)
	q := h.app.Queue()
	waitFor(t, "106 GETs and 105 form POSTs", 60*time.Second, func() bool {
		return q.Stats("etl-get").SuccessfulCalls == 106 && q.Stats("etl-form").SuccessfulCalls == 105 &&
			q.Stats("etl-json").SuccessfulCalls == 1
	})
	jsonMu.Lock()
	p := jsonPayload
	jsonMu.Unlock()
	if p.EventType != "Flow.modify" || p.EntityID != 1 || p.Entity["status"] != "executed" ||
		p.EntityURL != "https://app.example.com/rest/v1/flows/1" || time.Since(time.UnixMilli(p.Timestamp)).Abs() > time.Hour {
		t.Errorf("JSON payload %+v", p)
	}
	if n := get.rejected() + form.rejected() + jsonHook.rejected(); n != 0 {
		t.Fatalf("the receivers refused %d requests", n)
	}
	if len(off.requests()) != 0 {
		t.Error("the disabled webhook sent requests")
	}

	var modify *request
	for _, r := range get.requests() {
		if r.Method != "GET" || len(r.Body) != 0 {
			t.Fatalf("GET webhook sent %s with %d body bytes", r.Method, len(r.Body))
		}
		if r.Header.Get("X-Etl-Webhook-Event") == "Flow.modify" {
			modify = &r
		}
	}
	if modify == nil {
		t.Fatal("no Flow.modify among the GETs (events = [\"*\"])")
	}
	for k, want := range map[string]string{
		"X-Etl-Webhook-Id": "etl-get", "X-Etl-Webhook-Entity-Id": "1",
		"X-Etl-Webhook-Entity-URL": "https://app.example.com/rest/v1/flows/1",
	} {
		if got := modify.Header.Get(k); got != want {
			t.Errorf("GET header %s = %q, want %q", k, got, want)
		}
	}
	if !regexp.MustCompile(`^[0-9A-F]{16}-[0-9A-F]{8}$`).MatchString(modify.Header.Get("X-Etl-Webhook-Event-Id")) {
		t.Errorf("event id header %q", modify.Header.Get("X-Etl-Webhook-Event-Id"))
	}

	f := form.requests()[0]
	vals, err := url.ParseQuery(string(f.Body))
	if err != nil || f.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Fatalf("form body %q (%s): %v", f.Body, f.Header.Get("Content-Type"), err)
	}
	if vals.Get("event") != "Flow.create" || vals.Get("entity_id") == "" || vals.Get("id") != f.Header.Get("X-Etl-Webhook-Event-Id") ||
		vals.Get("entity_url") == "" {
		t.Errorf("form fields %v", vals)
	}
	for k := range vals {
		if strings.HasPrefix(k, "data.") || strings.HasPrefix(k, "old.") || k == "changed" {
			t.Errorf("include_entity = false but the form has %s", k)
		}
	}

	// "View events": the last 100 deliveries, request and response headers
	// and bodies.
	var ds []deliver.Delivery
	waitFor(t, "the last 100 deliveries on record", 10*time.Second, func() bool {
		ds, _ = q.Deliveries("etl-form", 100, "")
		for _, d := range ds {
			if d.Status != deliver.StatusSuccess {
				return false
			}
		}
		return len(ds) == 100
	})
	if ds[0].EntityID != "105" || ds[99].EntityID != "6" {
		t.Errorf("deliveries run from flow %s to %s, want the last 100: 105 down to 6", ds[0].EntityID, ds[99].EntityID)
	}
	for _, d := range ds {
		a := d.Attempts[len(d.Attempts)-1]
		if a.RequestHeaders.Get("X-Etl-Webhook-Event") != "Flow.create" || !strings.Contains(a.RequestBody, "event=Flow.create") ||
			a.ResponseHeaders.Get("X-Receiver") != "seed" || a.ResponseBody != "accepted "+d.EventID ||
			a.RequestHeaders.Get("Authorization") != "[redacted]" {
			t.Fatalf("delivery %s attempt: headers %v body %q, response %v %q", d.ID, a.RequestHeaders, a.RequestBody, a.ResponseHeaders, a.ResponseBody)
		}
	}
}

// TestPeopulse: an endpoint subscribed to several event types; the secret
// generated at creation and shown once; counters at zero; 2xx = success,
// anything else = failure; at most 5 attempts at growing intervals; the
// journal of messages and attempts with the JSON payload.
func TestPeopulse(t *testing.T) {
	t.Parallel()
	var secretMu sync.Mutex
	secrets := map[string]string{}
	verify := func(r request, body []byte) bool {
		secretMu.Lock()
		secret := secrets[r.Header.Get("X-Walhook-Webhook")]
		secretMu.Unlock()
		return secret != "" && testkit.StandardSignatureValid(secret, r.Header, body)
	}
	ok := newSeedReceiver(t, func(_ int, r request, body []byte) testkit.Response {
		if !verify(r, body) {
			return answer(http.StatusUnauthorized, "bad signature")
		}
		return answer(http.StatusAccepted, "")
	})
	failing := newSeedReceiver(t, func(_ int, r request, body []byte) testkit.Response {
		if !verify(r, body) {
			return answer(http.StatusUnauthorized, "bad signature")
		}
		return answer(http.StatusInternalServerError, "indisponible")
	})
	h := newHarness(t, `
CREATE TABLE invoices (id int PRIMARY KEY, status text);
CREATE TABLE contracts (id int PRIMARY KEY, worker text)`)
	h.start(`
[[entity]]
name = "INVOICE"
table = "public.invoices"

[[entity]]
name = "CONTRACT"
table = "public.contracts"
`)
	q := h.app.Queue()
	create := func(name, url, mode string, events ...string) {
		t.Helper()
		var w deliver.Webhook
		deliver.ApplyDefaults(&w)
		w.Name, w.URL, w.Events, w.Signature, w.RetryMode = name, url, events, deliver.SignatureStandard, mode
		w.Actions = []string{"create", "modify"}
		w.Timeout = time.Second
		created, err := q.CreateWebhook(w)
		if err != nil {
			t.Fatalf("CreateWebhook: %v", err)
		}
		if len(created.Secrets) != 1 || !strings.HasPrefix(created.Secrets[0], "whsec_") {
			t.Fatalf("no generated secret in the creation answer: %+v", created.Secrets)
		}
		secretMu.Lock()
		secrets[name] = created.Secrets[0]
		secretMu.Unlock()
		if again, _ := q.Webhook(name); len(again.Secrets) != 0 || again.MaxAttempts != 5 {
			t.Errorf("after creation: secrets %v (want hidden), max_attempts %d (want 5)", again.Secrets, again.MaxAttempts)
		}
		if st := q.Stats(name); st.TotalCalls != 0 || st.SuccessfulCalls != 0 {
			t.Errorf("a new endpoint's counters are %+v, want zero", st)
		}
	}
	create("peopulse", ok.URL, deliver.RetryProduction, "INVOICE", "CONTRACT")
	create("peopulse-retry", failing.URL, deliver.RetryTest, "CONTRACT")
	create("peopulse-prod", failing.URL, deliver.RetryProduction, "CONTRACT")

	h.exec(`INSERT INTO contracts VALUES (1, 'Marie Curie')`)        // CONTRACT_CREATED
	h.exec(`INSERT INTO invoices VALUES (10, 'draft')`)              // an invoice
	h.exec(`UPDATE invoices SET status = 'validated' WHERE id = 10`) // INVOICE_VALIDATED
	waitFor(t, "three messages", 30*time.Second, func() bool { return q.Stats("peopulse").SuccessfulCalls == 3 })
	var events []string
	for _, r := range ok.requests() {
		if r.Header.Get("X-Walhook-Webhook") == "peopulse" {
			events = append(events, r.Header.Get("X-Walhook-Event"))
		}
	}
	sort.Strings(events) // different entities go out concurrently
	if strings.Join(events, " ") != "CONTRACT.create INVOICE.create INVOICE.modify" {
		t.Errorf("events %v", events)
	}

	// Growing intervals in production mode: 1+1 s after the first failure,
	// then 1+16 s.
	waitFor(t, "peopulse-prod's second attempt", 30*time.Second, func() bool {
		ds, _ := q.Deliveries("peopulse-prod", 10, "")
		for _, d := range ds {
			if len(d.Attempts) == 2 && !d.NextAttemptAt.IsZero() {
				return true
			}
		}
		return false
	})
	ds, _ := q.Deliveries("peopulse-prod", 10, "")
	for _, d := range ds {
		if len(d.Attempts) == 2 && !d.NextAttemptAt.IsZero() {
			first, second := d.Attempts[1].At.Sub(d.Attempts[0].At), d.NextAttemptAt.Sub(d.Attempts[1].At)
			if first < 2*time.Second || second != 17*time.Second {
				t.Errorf("intervals %s then %s, want 2s then 17s", first, second)
			}
		}
	}

	// At most 5 attempts, then failed; the journal shows every attempt and
	// the JSON payload.
	waitFor(t, "peopulse-retry to give up", 90*time.Second, func() bool { return q.Stats("peopulse-retry").Failed == 1 })
	var journal []deliver.Delivery
	waitFor(t, "the failure on record", 10*time.Second, func() bool {
		journal, _ = q.Deliveries("peopulse-retry", 10, deliver.StatusFailed)
		return len(journal) == 1
	})
	for _, d := range journal {
		if d.Status != deliver.StatusFailed || len(d.Attempts) != 5 {
			t.Errorf("message %s: %s after %d attempts, want failed after 5", d.ID, d.Status, len(d.Attempts))
		}
		for _, a := range d.Attempts {
			if a.Status != 500 || a.ResponseBody != "indisponible" {
				t.Errorf("message %s attempt %d: %d %q", d.ID, a.N, a.Status, a.ResponseBody)
			}
		}
		var payload struct{ ID, Event string }
		if err := json.Unmarshal(d.Payload, &payload); err != nil || payload.ID != d.EventID || payload.Event != d.Event {
			t.Errorf("message %s payload %s: %v", d.ID, d.Payload, err)
		}
	}
	if st := q.Stats("peopulse-retry"); st.TotalCalls != 5 || st.SuccessfulCalls != 0 || st.LatestStatus != 500 {
		t.Errorf("counters %+v, want 5 calls, none successful", st)
	}
	if n := ok.rejected() + failing.rejected(); n != 0 {
		t.Errorf("%d requests failed the signature check", n)
	}
}

// TestGenericNote: the keys-only webhook {"id","entityType","eventType",
// "timestamp"}; the integrated service answers 200, or a 4xx with a
// message that the source keeps to show (delivery history and .log).
func TestGenericNote(t *testing.T) {
	t.Parallel()
	const tmpl = `{"id": {{json .EntityID}}, "entityType": {{json (upper .Entity)}}, "eventType": {{json .Op}}, "timestamp": {{json .OccurredAt}}}`
	// A template that parses but cannot render is refused at load, naming
	// the webhook.
	_, err := ParseConfig(strings.NewReader(postgresSection("postgres://x@127.0.0.1/x") + `
[[webhook]]
name = "keys-only"
url = "https://sync.example.com/hook"
events = ["*"]
template = '{"id": {{.Data.id.nosuch}}}'
`))
	if err == nil || !strings.Contains(err.Error(), `webhook "keys-only": template: rendering a sample event`) {
		t.Errorf("unrenderable template: err %v", err)
	}

	rc := newSeedReceiver(t, func(_ int, r request, body []byte) testkit.Response {
		var hook struct{ ID, EntityType, EventType, Timestamp string }
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&hook); err != nil {
			return answer(http.StatusBadRequest, "malformed webhook: "+err.Error())
		}
		if hook.ID == "BROKEN-1" {
			return answer(http.StatusBadRequest, "no commercial entity matches user "+hook.ID)
		}
		return answer(http.StatusOK, "OK")
	})
	h := newHarness(t, `CREATE TABLE users (id text PRIMARY KEY, email text)`)
	h.start(fmt.Sprintf(`
[[entity]]
name = "user"
table = "public.users"

[[webhook]]
name = "keys-only"
url = %q
events = ["user"]
actions = ["modify"]
max_attempts = 1
template = '%s'
`, rc.URL, tmpl))
	h.exec(`INSERT INTO users VALUES ('IDNUMBER1234', 'old@example.com'), ('BROKEN-1', 'b@example.com')`)
	h.exec(`UPDATE users SET email = 'new@example.com' WHERE id = 'IDNUMBER1234'`)
	h.exec(`UPDATE users SET email = 'x@example.com' WHERE id = 'BROKEN-1'`)
	q := h.app.Queue()
	waitFor(t, "both updates", 30*time.Second, func() bool { st := q.Stats("keys-only"); return st.TotalCalls == 2 && st.Failed == 1 })

	var got map[string]string
	for _, r := range rc.requests() {
		if strings.Contains(string(r.Body), "IDNUMBER1234") {
			if err := json.Unmarshal(r.Body, &got); err != nil || r.Status != 200 {
				t.Fatalf("webhook %s: %d %v", r.Body, r.Status, err)
			}
		}
	}
	if len(got) != 4 || got["id"] != "IDNUMBER1234" || got["entityType"] != "USER" || got["eventType"] != "UPDATE" {
		t.Errorf("webhook %v, want the note's four keys", got)
	}
	if ts, err := time.Parse(time.RFC3339, got["timestamp"]); err != nil || ts.Location() != time.UTC || time.Since(ts) > time.Hour {
		t.Errorf("timestamp %q: %v", got["timestamp"], err)
	}

	const msg = "no commercial entity matches user BROKEN-1"
	var failed []deliver.Delivery
	waitFor(t, "the failure on record", 10*time.Second, func() bool {
		failed, _ = q.Deliveries("keys-only", 10, deliver.StatusFailed)
		return len(failed) > 0
	})
	if len(failed) != 1 || failed[0].Attempts[0].Status != 400 || failed[0].Attempts[0].ResponseBody != msg {
		t.Fatalf("failed deliveries %+v, want the 400 and its message", failed)
	}
	var last string
	waitFor(t, "the .log line", 10*time.Second, func() bool {
		for _, l := range logLines(h, "keys-only") {
			if strings.Contains(l, " status=400 ") {
				last = l
			}
		}
		return last != ""
	})
	if !strings.Contains(last, "attempt=1/1 status=400 ") || !strings.HasSuffix(last, ` error="`+msg+`"`) {
		t.Errorf(".log line %q", last)
	}
}

// TestReadmeTOML: every ```toml block of README.md and docs/*.md is a
// config that parses; the README has at least one (the shortest working
// config), and there is one per seed product at least.
func TestReadmeTOML(t *testing.T) {
	blocks := docBlocks(t, "toml")
	if len(blocks) == 0 {
		t.Fatalf("no ```toml block in %s", strings.Join(docFiles(t), ", "))
	}
	if len(fileBlocks(t, "README.md", "toml")) == 0 {
		t.Errorf("README.md has no ```toml block, want the shortest working config")
	}
	if len(blocks) < 5 {
		t.Fatalf("README.md and docs/ have %d toml blocks, want one per seed product at least", len(blocks))
	}
	for _, b := range blocks {
		text := "# " + b.where() + "\n" + b.text
		if !strings.Contains(text, "[postgres]") {
			text = postgresSection("postgres://walhook@127.0.0.1/app") + text
		}
		if _, err := ParseConfig(strings.NewReader(text)); err != nil {
			t.Errorf("%s: %v", b.where(), err)
		}
	}
}
