package deliver_test

import (
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/internal/testkit"
)

// env is a Queue on a temporary store that routes every event to the
// named webhooks.
type env struct {
	q      *deliver.Queue
	opts   deliver.Options
	reg    *prometheus.Registry
	failed chan deliver.Delivery
}

func newEnv(t testing.TB, names []string, mods ...func(*deliver.Options)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{reg: prometheus.NewRegistry(), failed: make(chan deliver.Delivery, 100)}
	e.opts = deliver.Options{
		Dir:        filepath.Join(dir, "data"),
		LogDir:     filepath.Join(dir, "logs"),
		Registerer: e.reg,
		Version:    "1.2.3",
		Route: func(ev *cdc.Event) []string {
			if ev.Entity == "" {
				ev.Entity = ev.Table
			}
			return names
		},
		OnFailed:    func(_ deliver.Webhook, d deliver.Delivery) { e.failed <- d },
		Concurrency: 4,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, m := range mods {
		m(&e.opts)
	}
	e.open(t)
	return e
}

func (e *env) open(t testing.TB) {
	t.Helper()
	q, err := deliver.Open(e.opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	e.q = q
	t.Cleanup(func() { q.Close() })
}

// reopen closes the Queue and opens the same store again.
func (e *env) reopen(t *testing.T) {
	t.Helper()
	if err := e.q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.reg = prometheus.NewRegistry()
	e.opts.Registerer = e.reg
	e.open(t)
}

// hook returns a webhook with the defaults, test retries and every event.
func hook(name, url string, mods ...func(*deliver.Webhook)) deliver.Webhook {
	var w deliver.Webhook
	deliver.ApplyDefaults(&w)
	w.Name, w.URL, w.Events, w.RetryMode = name, url, []string{"*"}, deliver.RetryTest
	w.Timeout = 5 * time.Second
	for _, m := range mods {
		m(&w)
	}
	return w
}

func (e *env) setHooks(t testing.TB, hooks ...deliver.Webhook) {
	t.Helper()
	if err := e.q.SetConfigWebhooks(hooks); err != nil {
		t.Fatalf("SetConfigWebhooks: %v", err)
	}
}

var commitTime = time.Date(2026, 11, 29, 1, 2, 3, 456789000, time.UTC)

// event builds a modify of public.employees row id.
func event(lsn uint64, idx uint32, id int64, email string) cdc.Event {
	return cdc.Event{
		ID: cdc.EventID(lsn, idx), CommitLSN: lsn, Index: idx, CommitTime: commitTime,
		Schema: "public", Table: "employees", Action: cdc.ActionModify,
		Data:    map[string]any{"id": id, "email": email},
		Old:     map[string]any{"id": id, "email": "old@example.com"},
		Changed: []string{"email"}, Key: []string{"id"},
		Entity: "employee", EntityID: itoa(id),
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func txOf(lsn uint64, evs ...cdc.Event) *cdc.Tx {
	return &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: commitTime, Events: evs}
}

// latest waits for a delivery of webhook name with the status and returns
// the newest.
func (e *env) latest(t *testing.T, name, status string) deliver.Delivery {
	t.Helper()
	var d deliver.Delivery
	waitFor(t, 10*time.Second, "a delivery "+status, func() bool {
		ds, _ := e.q.Deliveries(name, 1, status)
		if len(ds) == 1 {
			d = ds[0]
		}
		return len(ds) == 1
	})
	return d
}

func (e *env) write(t *testing.T, tx *cdc.Tx) {
	t.Helper()
	if err := e.q.Write(t.Context(), tx); err != nil {
		t.Fatalf("Write: %v", err)
	}
}

var waitFor = testkit.WaitFor

// received is one request a receiver got.
type received = testkit.Request

// receiver is testkit's recording receiver answering with what respond
// returns (200 "ok" when nil); a test swaps respond under mu.
type receiver struct {
	*testkit.Receiver
	mu      sync.Mutex
	respond func(r received, n int) (int, http.Header, string)
}

func newReceiver(t testing.TB, respond func(r received, n int) (int, http.Header, string)) *receiver {
	t.Helper()
	rc := &receiver{respond: respond}
	rc.Receiver = testkit.NewReceiver(t, func(n int, r received) testkit.Response {
		rc.mu.Lock()
		respond := rc.respond
		rc.mu.Unlock()
		if respond == nil {
			return testkit.Response{Body: "ok"}
		}
		code, hdr, text := respond(r, n)
		return testkit.Response{Status: code, Header: hdr, Body: text}
	})
	return rc
}

func (rc *receiver) requests() []received { return rc.Requests() }

func (rc *receiver) count() int { return rc.Count() }

// metric sums the samples of a counter or gauge whose label has value
// (every sample when label is "").
func metric(t *testing.T, e *env, name, label, value string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}
