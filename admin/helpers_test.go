package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"walhook/admin"
	"walhook/cdc"
	"walhook/deliver"
	"walhook/internal/testkit"
	"walhook/matcher"
)

const token = "t0ken-for-tests"

// env is the admin server on a real store, routing every event to the
// webhooks that want its table (or "*").
type env struct {
	t     *testing.T
	token string
	dir   string
	q     *deliver.Queue
	srv   *httptest.Server
	logs  *syncBuffer
	reg   *prometheus.Registry
	// tables the server lists after the configured employee entity, and
	// the problems it shows; set before the requests that show them.
	tables   []admin.Entity
	problems []string
}

// entities are the [[entity]]s the test server's validator knows.
var entities = []matcher.Entity{{Name: "employee", Schema: "public", Table: "employees"}}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWithToken(t, token)
}

// newEnvWithToken serves the admin with the given token ("" for none).
func newEnvWithToken(t *testing.T, tok string) *env {
	t.Helper()
	e := &env{t: t, token: tok, dir: t.TempDir(), logs: &syncBuffer{}}
	e.open()
	return e
}

// open opens the store (again) and serves the admin on it.
func (e *env) open() {
	t := e.t
	t.Helper()
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.reg = prometheus.NewRegistry()
	var q *deliver.Queue
	q, err := deliver.Open(deliver.Options{
		Dir: filepath.Join(e.dir, "data"), LogDir: filepath.Join(e.dir, "logs"),
		Registerer: e.reg, Logger: logger, Concurrency: 2,
		Route: func(ev *cdc.Event) []string {
			ev.Entity = "employee"
			var names []string
			for _, w := range q.Webhooks() {
				if slices.Contains(w.Events, "*") || slices.Contains(w.Events, ev.Entity) {
					names = append(names, w.Name)
				}
			}
			return names
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.q = q
	srv := admin.New(admin.Options{
		Token: e.token, Gatherer: e.reg, Logger: logger, Queue: q,
		Entities: func(ctx context.Context) ([]admin.Entity, error) {
			return append([]admin.Entity{{Name: "employee", Table: "public.employees", Source: "config", ReplicaIdentity: "full", PrimaryKey: true}}, e.tables...), nil
		},
		Problems: func() []string { return e.problems },
		// As walhook validates: a bare name that is no entity must be a
		// table in public, here one of the env's tables.
		Validate: func(w deliver.Webhook) error {
			m, err := matcher.New(entities, []matcher.Rule{{Webhook: w.Name, Events: w.Events, Actions: w.Actions}})
			if err != nil {
				return err
			}
			return m.Check(func(table string) bool {
				return slices.ContainsFunc(e.tables, func(t admin.Entity) bool { return t.Table == table })
			})
		},
	})
	e.srv = httptest.NewServer(srv)
	t.Cleanup(func() { e.close() })
}

func (e *env) close() {
	if e.srv != nil {
		e.srv.Close()
		e.q.Close()
		e.srv = nil
	}
}

// reopen closes the store and opens it again, as a restart does.
func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   string
}

// json decodes the body into v, failing the test when it is not JSON.
func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, r.body)
	}
}

// errorText returns the "error" of a JSON error body, failing when there
// is none.
func (r response) errorText(t *testing.T) string {
	t.Helper()
	var v struct{ Error string }
	r.json(t, &v)
	if v.Error == "" {
		t.Fatalf("no \"error\" in %d answer: %s", r.status, r.body)
	}
	return v.Error
}

// do sends a request with the bearer token; header pairs are added.
func (e *env) do(method, path, body string, header ...string) response {
	e.t.Helper()
	return e.send(method, path, body, append([]string{"Authorization", "Bearer " + e.token}, header...)...)
}

// send sends a request with exactly the given headers.
func (e *env) send(method, path, body string, header ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return readResponse(e.t, resp)
}

// readResponse reads and closes resp.
func readResponse(t *testing.T, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

// mustDo is do that fails the test unless the status is want.
func (e *env) mustDo(want int, method, path, body string, header ...string) response {
	e.t.Helper()
	r := e.do(method, path, body, header...)
	if r.status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

// write queues one employee change for the routed webhooks and waits until
// the store holds it, as the reader does before it confirms the LSN: which
// webhooks get it is decided then, by their switch at that moment.
func (e *env) write(lsn uint64, id int64) {
	e.t.Helper()
	ev := cdc.Event{
		ID: cdc.EventID(lsn, 0), CommitLSN: lsn, CommitTime: time.Now().UTC(),
		Schema: "public", Table: "employees", Action: cdc.ActionCreate,
		Data: map[string]any{"id": id, "email": "ada@example.com"}, Key: []string{"id"},
	}
	tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: ev.CommitTime, Events: []cdc.Event{ev}}
	if err := e.q.Write(e.t.Context(), tx); err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, "the store to hold the change", func() bool { return e.q.Durable() >= tx.EndLSN })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, what, cond)
}

// newReceiver is testkit's recording receiver answering {"received": true}
// with the header X-Receiver: test and the status status decides (200
// when nil).
func newReceiver(t *testing.T, status func(n int) int) *testkit.Receiver {
	t.Helper()
	return newAnswering(t, status, `{"received": true}`)
}

// newAnswering is newReceiver answering with the body answer.
func newAnswering(t *testing.T, status func(n int) int, answer string) *testkit.Receiver {
	t.Helper()
	return testkit.NewReceiver(t, func(n int, _ testkit.Request) testkit.Response {
		code := http.StatusOK
		if status != nil {
			code = status(n)
		}
		return testkit.Response{Status: code, Header: http.Header{"X-Receiver": {"test"}}, Body: answer}
	})
}

// syncBuffer is a log destination the test reads while the code writes.
type syncBuffer = testkit.SyncBuffer

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string { return testkit.FreeAddr(t) }
