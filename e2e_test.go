package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite golden files")

// request is what a test receiver saw.
type request = testkit.Request

// receiver is testkit's recording receiver; respond decides the status of
// each request (nil: 200).
type receiver struct{ *testkit.Receiver }

func newReceiver(t *testing.T, respond func(n int, r request) int) *receiver {
	t.Helper()
	return &receiver{testkit.NewReceiver(t, statusOf(respond))}
}

// newTLSReceiver is a receiver over HTTPS, with a certificate of its own
// (rc.Certificate()) that no system trusts.
func newTLSReceiver(t *testing.T, respond func(n int, r request) int) *receiver {
	t.Helper()
	return &receiver{testkit.NewTLSReceiver(t, statusOf(respond))}
}

// statusOf is the testkit hook answering with respond's status.
func statusOf(respond func(n int, r request) int) testkit.Respond {
	if respond == nil {
		return nil
	}
	return func(n int, r request) testkit.Response { return testkit.Response{Status: respond(n, r)} }
}

func (rc *receiver) requests() []request { return rc.Requests() }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, timeout, what, cond)
}

// harness runs walhook (the App) against a fresh database.
type harness struct {
	t       *testing.T
	dsn     string
	dir     string
	db      *pgx.Conn
	running *inProcess
	app     *App
}

func newHarness(t *testing.T, schema string) *harness {
	t.Helper()
	h := &harness{t: t, dsn: newDatabase(t), dir: t.TempDir()}
	db, err := pgx.Connect(context.Background(), h.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	h.db = db
	execSQL(t, h.dsn, schema)
	return h
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.db.Exec(context.Background(), sql, args...); err != nil {
		h.t.Fatalf("%s: %v", sql, err)
	}
}

// start runs walhook with the given [[entity]]/[[webhook]] TOML.
func (h *harness) start(hooks string) {
	h.t.Helper()
	text := fmt.Sprintf("%s[store]\ndir = %q\n[log]\ndir = %q\n[admin]\nlisten = \"127.0.0.1:0\"\n%s",
		postgresSection(h.dsn), filepath.Join(h.dir, "data"), filepath.Join(h.dir, "logs"), hooks)
	cfg, err := ParseConfig(strings.NewReader(text))
	if err != nil {
		h.t.Fatal(err)
	}
	h.startConfig(cfg)
}

// startConfig runs walhook with cfg.
func (h *harness) startConfig(cfg *Config) {
	h.t.Helper()
	h.running = startApp(h.t, cfg, AppOptions{})
	h.app = h.running.app
	h.running.waitReady()
}

// stop stops the walhook start ran.
func (h *harness) stop() { h.running.stop() }

var (
	idRE   = regexp.MustCompile(`"[0-9A-F]{16}-[0-9A-F]{8}"`)
	timeRE = regexp.MustCompile(`"occurred_at":\s*"[^"]+"`)
)

// normalise replaces the run-dependent id and commit time.
func normalise(body []byte) []byte {
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep int8 values exact
	if err := dec.Decode(&v); err != nil {
		return body
	}
	pretty, _ := json.MarshalIndent(v, "", "  ")
	pretty = idRE.ReplaceAll(pretty, []byte(`"<id>"`))
	pretty = timeRE.ReplaceAll(pretty, []byte(`"occurred_at": "<time>"`))
	return append(pretty, '\n')
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs\n got: %s\nwant: %s", path, got, want)
	}
}

const employeesSchema = `
CREATE TABLE employees (id int PRIMARY KEY, name text NOT NULL, email text, salary numeric(10,2));
ALTER TABLE employees REPLICA IDENTITY FULL;`

const employeeHook = `
[[entity]]
name = "employee"
table = "public.employees"
url = "https://hr.example.com/api/employees/{id}"

[[webhook]]
name = "hr-sync"
url = %q
events = ["employee"]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
headers = { "X-Api-Key" = "abc" }
retry_mode = "test"
`

// TestPipeline: INSERT, UPDATE, DELETE each arrive as one signed request
// whose body matches its golden file.
func TestPipeline(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, employeesSchema)
	h.start(fmt.Sprintf(employeeHook, rc.URL+"/hooks"))

	h.exec(`INSERT INTO employees VALUES (130333, 'John Doe', 'john@example.com', 4200.50)`)
	h.exec(`UPDATE employees SET email = 'john.doe@example.com' WHERE id = 130333`)
	h.exec(`DELETE FROM employees WHERE id = 130333`)
	waitFor(t, "three requests", 30*time.Second, func() bool { return len(rc.requests()) >= 3 })

	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("got %d requests, want 3", len(reqs))
	}
	for i, action := range []string{"create", "modify", "delete"} {
		r := reqs[i]
		golden(t, "employee_"+action+".json", normalise(r.Body))
		var body struct{ ID string }
		json.Unmarshal(r.Body, &body)
		checks := map[string]string{
			"Content-Type":         "application/json",
			"User-Agent":           "walhook/" + version,
			"Webhook-Id":           body.ID,
			"X-Walhook-Event":      "employee." + action,
			"X-Walhook-Event-Id":   body.ID,
			"X-Walhook-Webhook":    "hr-sync",
			"X-Walhook-Entity-Id":  "130333",
			"X-Walhook-Entity-Url": "https://hr.example.com/api/employees/130333",
			"X-Walhook-Attempt":    "1",
			"X-Api-Key":            "abc",
		}
		for k, want := range checks {
			if got := r.Header.Get(k); got != want {
				t.Errorf("%s: header %s = %q, want %q", action, k, got, want)
			}
		}
		if !regexp.MustCompile(`^[0-9A-F]{16}-[0-9A-F]{8}$`).MatchString(body.ID) {
			t.Errorf("%s: id %q is not %%016X-%%08X", action, body.ID)
		}
		ts := r.Header.Get("Webhook-Timestamp")
		sig := r.Header.Get("Webhook-Signature")
		if want := testkit.StandardSignature(t, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", body.ID, ts, r.Body); sig != want {
			t.Errorf("%s: Webhook-Signature %q, want %q", action, sig, want)
		}
	}
	// Every attempt is a line in the webhook's .log.
	waitFor(t, "three log lines", 10*time.Second, func() bool {
		raw, _ := os.ReadFile(filepath.Join(h.dir, "logs", "hr-sync.log"))
		return strings.Count(string(raw), " status=200 ") == 3
	})
	raw, _ := os.ReadFile(filepath.Join(h.dir, "logs", "hr-sync.log"))
	line := regexp.MustCompile(`^\S+ id=[0-9A-F]{16}-[0-9A-F]{8} event=employee\.create attempt=1/5 status=200 duration_ms=\d+ url=http://127\.0\.0\.1:\d+/hooks$`)
	if first, _, _ := strings.Cut(string(raw), "\n"); !line.MatchString(first) {
		t.Errorf("log line %q does not match %s", first, line)
	}
	if strings.Contains(string(raw), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") {
		t.Error("the secret appears in the .log file")
	}
}

// TestRestart: changes made while walhook is stopped arrive once it runs
// again (the slot kept them).
func TestRestart(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, employeesSchema)
	hooks := fmt.Sprintf(employeeHook, rc.URL+"/hooks")
	h.start(hooks)
	h.exec(`INSERT INTO employees VALUES (1, 'a', 'a@x', 1)`)
	waitFor(t, "first request", 30*time.Second, func() bool { return len(rc.requests()) >= 1 })
	h.stop()

	h.exec(`INSERT INTO employees VALUES (2, 'b', 'b@x', 2)`)
	h.exec(`UPDATE employees SET name = 'bb' WHERE id = 2`)
	h.start(hooks)
	waitFor(t, "the changes made while stopped", 30*time.Second, func() bool {
		ids := map[string]bool{}
		for _, r := range rc.requests() {
			ids[r.Header.Get("X-Walhook-Event")+"/"+r.Header.Get("X-Walhook-Entity-Id")] = true
		}
		return ids["employee.create/2"] && ids["employee.modify/2"]
	})
}

// TestRetries: a receiver failing twice then answering 200 gets three
// attempts; one always failing ends failed after max_attempts.
func TestRetries(t *testing.T) {
	flaky := newReceiver(t, func(n int, r request) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	dead := newReceiver(t, func(int, request) int { return http.StatusBadGateway })
	h := newHarness(t, employeesSchema)
	h.start(fmt.Sprintf(`
[[webhook]]
name = "flaky"
url = %q
events = ["public.employees"]
retry_mode = "test"
[[webhook]]
name = "dead"
url = %q
events = ["public.employees"]
retry_mode = "test"
max_attempts = 2
`, flaky.URL, dead.URL))
	h.exec(`INSERT INTO employees VALUES (1, 'a', 'a@x', 1)`)
	q := h.app.Queue()
	waitFor(t, "flaky to succeed", 60*time.Second, func() bool { return q.Stats("flaky").SuccessfulCalls == 1 })
	if st := q.Stats("flaky"); st.TotalCalls != 3 || st.LatestStatus != 200 {
		t.Errorf("flaky stats = %+v, want 3 calls, latest 200", st)
	}
	if got := len(flaky.requests()); got != 3 {
		t.Errorf("flaky got %d attempts, want 3", got)
	}
	for i, r := range flaky.requests() {
		if got, want := r.Header.Get("X-Walhook-Attempt"), fmt.Sprint(i+1); got != want {
			t.Errorf("attempt header %q, want %q", got, want)
		}
	}
	waitFor(t, "dead to fail for good", 60*time.Second, func() bool { return q.Stats("dead").Failed == 1 })
	if st := q.Stats("dead"); st.TotalCalls != 2 || st.SuccessfulCalls != 0 || st.LatestStatus != 502 {
		t.Errorf("dead stats = %+v", st)
	}
	ds, err := q.Deliveries("dead", 10, "failed")
	if err != nil || len(ds) != 1 || len(ds[0].Attempts) != 2 {
		t.Fatalf("failed deliveries = %+v, %v", ds, err)
	}
}

// TestDemo runs `walhook demo` until three webhooks arrived verified.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, []string{"demo", "-changes", "3", "-interval", "100ms", "-admin", "127.0.0.1:0"}, &out, io.Discard)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "signature verified"); n != 3 {
		t.Errorf("demo printed %d verified webhooks, want 3:\n%s", n, out.String())
	}
	// The demo's first change is an INSERT: it must be the first webhook.
	_, after, _ := strings.Cut(out.String(), "\nreceived ")
	if !strings.HasPrefix(after, "employee.create ") {
		t.Errorf("the demo's first webhook is not the first INSERT:\n%s", out.String())
	}
}

// TestTypes: one row with every type the contract names arrives with the
// contract's JSON encoding.
func TestTypes(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE typed (
	id int PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, fnan float8, finf float8, num numeric,
	ok bool, t text, vc varchar(10), u uuid, j json, jb jsonb, b bytea, d date, ts timestamp,
	tstz timestamptz, ia int[], ta text[], m mood, n text)`)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"types\"\nurl = %q\nevents = [\"public.typed\"]\n", rc.URL))
	h.exec(`INSERT INTO typed VALUES (1, 32767, 9007199254740993, 1.5, 2.25, 'NaN', '-Infinity', 12345678901234567890.123,
		true, 'héllo "quoted"', 'vc', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": {"c": null}}',
		'\xdeadbeef', '2026-11-29', '2026-11-29 01:02:03.456789', '2026-11-29 01:02:03.456789+02', '{1,2,NULL}',
		'{"x","y z"}', 'happy', NULL)`)
	waitFor(t, "the typed row", 30*time.Second, func() bool { return len(rc.requests()) >= 1 })
	golden(t, "types_create.json", normalise(rc.requests()[0].Body))
}

// TestQuotedNames: applications made with ORMs name tables and columns in
// mixed case ("Sales"."OrderItems"."Id"), which PostgreSQL keeps only when
// quoted. The config names them as they are, and they reach the publication,
// the entity id, the URL template and the payload unchanged.
func TestQuotedNames(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `CREATE SCHEMA "Sales";
CREATE TABLE "Sales"."OrderItems" ("Id" int PRIMARY KEY, "Order Ref" text NOT NULL, "Qty" int);
CREATE TABLE "Sales".orderitems (id int PRIMARY KEY)`) // the same name in lower case: another table
	h.start(fmt.Sprintf(`[[entity]]
name = "order-item"
table = "Sales.OrderItems"
id = ["Order Ref", "Id"]
url = "https://shop.example.com/orders/{Order Ref}/items/{Id}"
[[webhook]]
name = "items"
url = %q
events = ["order-item"]
`, rc.URL))
	h.exec(`INSERT INTO "Sales".orderitems VALUES (9)`)
	h.exec(`INSERT INTO "Sales"."OrderItems" VALUES (1, 'A-7', 2)`)
	waitFor(t, "the order item", 30*time.Second, func() bool { return len(rc.requests()) >= 1 })
	var got struct {
		Event     string         `json:"event"`
		Table     string         `json:"table"`
		EntityID  string         `json:"entity_id"`
		EntityURL string         `json:"entity_url"`
		Data      map[string]any `json:"data"`
	}
	if err := json.Unmarshal(rc.requests()[0].Body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"Id": 1.0, "Order Ref": "A-7", "Qty": 2.0}
	if got.Event != "order-item.create" || got.Table != "Sales.OrderItems" || got.EntityID != "A-7,1" ||
		got.EntityURL != "https://shop.example.com/orders/A-7/items/1" || !reflect.DeepEqual(got.Data, want) {
		t.Errorf("payload %+v", got)
	}
	h.exec(`INSERT INTO "Sales"."OrderItems" VALUES (2, 'A-8', 1)`)
	waitFor(t, "the second order item", 30*time.Second, func() bool { return len(rc.requests()) >= 2 })
	if n := len(rc.requests()); n != 2 {
		t.Errorf("%d requests, want 2: the lower-case table is another one", n)
	}
}

// TestKeyChangeOrdered: the application changes a row's primary key while
// the row's insert is still being retried; the update, which belongs to
// the new id, goes out only after the insert, and a new row with the old
// id only after the update.
func TestKeyChangeOrdered(t *testing.T) {
	rc := newReceiver(t, func(n int, r request) int {
		if n == 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	h := newHarness(t, employeesSchema)
	h.start(fmt.Sprintf("[[webhook]]\nname = \"hr\"\nurl = %q\nevents = [\"public.employees\"]\nretry_mode = \"test\"\n", rc.URL))
	h.exec(`INSERT INTO employees VALUES (1, 'a', 'a@x', 1)`)
	waitFor(t, "the insert's first attempt", 30*time.Second, func() bool { return len(rc.requests()) >= 1 })
	h.exec(`UPDATE employees SET id = 2 WHERE id = 1`)
	h.exec(`INSERT INTO employees VALUES (1, 'b', 'b@x', 1)`)
	waitFor(t, "four requests", 60*time.Second, func() bool { return len(rc.requests()) >= 4 })
	var got []string
	for _, r := range rc.requests() {
		got = append(got, r.Header.Get("X-Walhook-Event")+" "+r.Header.Get("X-Walhook-Entity-Id"))
	}
	want := []string{"employees.create 1", "employees.create 1", "employees.modify 2", "employees.create 1"}
	if !slices.Equal(got, want) {
		t.Errorf("requests came as %v, want %v", got, want)
	}
}
