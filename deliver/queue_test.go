package deliver_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"walhook/cdc"
	"walhook/deliver"
)

func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(_ received, n int) (int, http.Header, string) {
		switch n {
		case 1:
			return 500, nil, "try later"
		case 2:
			return 503, nil, "" // no body: the .log line gives walhook's reading, not error=""
		}
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	waitFor(t, 20*time.Second, "a delivered success", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusSuccess)
		return len(ds) == 1
	})
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if got := r.Header.Get("X-Walhook-Attempt"); got != fmt.Sprint(i+1) {
			t.Errorf("attempt %d: X-Walhook-Attempt = %q", i+1, got)
		}
		if r.Header.Get("Webhook-Id") != reqs[0].Header.Get("Webhook-Id") {
			t.Errorf("Webhook-Id changed between attempts")
		}
	}
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 2900*time.Millisecond {
		t.Errorf("retry after %s, want 3s in test mode", gap)
	}
	st := e.q.Stats("h")
	if st.SuccessfulCalls != 1 || st.TotalCalls != 3 || st.LatestStatus != 200 || st.Queued != 0 || st.Failed != 0 {
		t.Errorf("stats = %+v, want successful 1, total 3, latest 200, nothing queued or failed", st)
	}
	ds, _ := e.q.Deliveries("h", 10, "")
	if len(ds) != 1 || len(ds[0].Attempts) != 3 || ds[0].Attempts[0].Status != 500 || ds[0].Attempts[0].ResponseBody != "try later" {
		t.Errorf("deliveries = %+v", ds)
	}
	if got := metric(t, e, "walhook_deliveries_total", "outcome", "retry"); got != 2 {
		t.Errorf("retry outcomes = %v, want 2", got)
	}

	// The .log file has one line per attempt.
	e.q.FlushLog("h")
	log, err := os.ReadFile(e.q.LogPath("h"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 3 {
		t.Fatalf("log has %d lines, want 3:\n%s", len(lines), log)
	}
	re := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d) id=0000000000000064-00000000 event=employee.modify attempt=1/5 status=500 duration_ms=\d+ url=http://127\.0\.0\.1:\d+ error="try later"$`)
	if !re.MatchString(lines[0]) {
		t.Errorf("log line %q does not match %s", lines[0], re)
	}
	if !strings.Contains(lines[1], "attempt=2/5 status=503 ") || !strings.HasSuffix(lines[1], ` error="HTTP 503"`) {
		t.Errorf("second log line (a 503 without a body) = %q", lines[1])
	}
	if !strings.Contains(lines[2], "attempt=3/5 status=200") || strings.Contains(lines[2], "error=") {
		t.Errorf("last log line = %q", lines[2])
	}
}

func TestFailedAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(received, int) (int, http.Header, string) { return 500, nil, "boom" })
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) { w.MaxAttempts = 2 }))
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	var d deliver.Delivery
	select {
	case d = <-e.failed:
	case <-time.After(20 * time.Second):
		t.Fatal("OnFailed not called")
	}
	if d.Status != deliver.StatusFailed || len(d.Attempts) != 2 || d.EventID != cdc.EventID(100, 0) {
		t.Errorf("OnFailed got %+v", d)
	}
	if n := rc.count(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	waitFor(t, 5*time.Second, "the failure persisted", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusFailed)
		return len(ds) == 1
	})
	if st := e.q.Stats("h"); st.Failed != 1 || st.Queued != 0 || st.TotalCalls != 2 || st.SuccessfulCalls != 0 {
		t.Errorf("stats = %+v", st)
	}

	// Redelivered, it goes out again and is no longer failed.
	rc.mu.Lock()
	rc.respond = nil
	rc.mu.Unlock()
	n, err := e.q.Recover("h", time.Now().Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("Recover = %d, %v", n, err)
	}
	waitFor(t, 10*time.Second, "the redelivery", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusSuccess)
		return len(ds) == 1
	})
	if st := e.q.Stats("h"); st.Failed != 0 || st.SuccessfulCalls != 1 {
		t.Errorf("stats after recover = %+v", st)
	}
	if rc.requests()[2].Header.Get("X-Walhook-Attempt") != "1" {
		t.Errorf("a redelivery starts again at attempt 1")
	}
}

func TestRetryAfterPushesLater(t *testing.T) {
	t.Parallel()
	date := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		want       time.Duration // from the attempt
	}{
		{"seconds", 503, "120", 120 * time.Second},
		{"date", 429, date.Format(http.TimeFormat), 0},
		{"shorter than the backoff", 429, "1", 3 * time.Second},
		{"ignored on 500", 500, "120", 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, func(received, int) (int, http.Header, string) {
				return tc.status, http.Header{"Retry-After": {tc.retryAfter}}, "slow down"
			})
			e := newEnv(t, []string{"h"})
			e.setHooks(t, hook("h", rc.URL))
			e.write(t, txOf(100, event(100, 0, 1, "a@x")))
			var d deliver.Delivery
			waitFor(t, 10*time.Second, "the first attempt persisted", func() bool {
				ds, _ := e.q.Deliveries("h", 1, "")
				if len(ds) == 1 && len(ds[0].Attempts) == 1 {
					d = ds[0]
					return true
				}
				return false
			})
			at := d.Attempts[0].At
			want := at.Add(tc.want)
			if tc.want == 0 {
				want = date
			}
			if got := d.NextAttemptAt; got.Sub(want).Abs() > time.Second {
				t.Errorf("next attempt at %s, want %s (attempt at %s)", got, want, at)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	t.Parallel()
	var target *receiver
	target = newReceiver(t, nil)
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		return 302, http.Header{"Location": {target.URL + "/elsewhere"}}, ""
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) { w.MaxAttempts = 1 }))
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	select {
	case d := <-e.failed:
		if a := d.Attempts[0]; a.Status != 302 || !strings.Contains(a.Error, "not followed") {
			t.Errorf("attempt = %d %q, want a failed 302", a.Status, a.Error)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the 302 was not a failure")
	}
	if n := target.count(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

func TestGoneSwitchesOff(t *testing.T) {
	t.Parallel()
	// The old URL is gone; the new one (/v2) works, so the webhook stays
	// on once the config points there.
	rc := newReceiver(t, func(r received, _ int) (int, http.Header, string) {
		if r.Path == "/v2" {
			return 200, nil, "ok"
		}
		return 410, nil, "gone"
	})
	e := newEnv(t, []string{"h"})
	changes := make(chan struct{}, 10)
	e.q.OnChange(func() { changes <- struct{}{} })
	e.setHooks(t, hook("h", rc.URL))
	<-changes
	// Same entity: the second waits for the first, then for the webhook.
	e.write(t, txOf(100, event(100, 0, 1, "a@x"), event(100, 1, 1, "b@x")))
	select {
	case <-e.failed:
	case <-time.After(10 * time.Second):
		t.Fatal("OnFailed not called after a 410")
	}
	waitFor(t, 5*time.Second, "the webhook switched off", func() bool {
		w, _ := e.q.Webhook("h")
		return !w.Active
	})
	e.write(t, txOf(200, event(200, 0, 3, "c@x")))
	waitFor(t, 5*time.Second, "Durable past the last tx", func() bool { return e.q.Durable() == 201 })
	if st := e.q.Stats("h"); st.Queued != 1 {
		t.Errorf("queued = %d, want 1 (the second event of the first tx; nothing new queued while off)", st.Queued)
	}
	if n := rc.count(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}

	// The switch survives a restart and a config reload, though the
	// config still says active.
	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL))
	if w, _ := e.q.Webhook("h"); w.Active {
		t.Error("config webhook active again after a restart")
	}
	// A new URL in the config clears it.
	e.setHooks(t, hook("h", rc.URL+"/v2"))
	if w, _ := e.q.Webhook("h"); !w.Active {
		t.Error("config webhook with a new URL still switched off")
	}
	// The delivery held while it was off now goes to the new URL.
	waitFor(t, 10*time.Second, "the held delivery sent to /v2", func() bool { return e.q.Stats("h").Queued == 0 })
}

func TestPerEntityOrder(t *testing.T) {
	t.Parallel()
	const entities, perEntity = 6, 8
	var (
		mu     sync.Mutex
		acked  = map[string]int{} // entity → index of its last acknowledged event
		errs   []string
		random = rand.New(rand.NewPCG(1, 2))
	)
	rc := newReceiver(t, func(r received, _ int) (int, http.Header, string) {
		mu.Lock()
		defer mu.Unlock()
		entity := r.Header.Get("X-Walhook-Entity-Id")
		var idx int
		fmt.Sscanf(r.Header.Get("Webhook-Id")[17:], "%X", &idx)
		idx /= entities
		if want := acked[entity] + 1; idx != want {
			errs = append(errs, fmt.Sprintf("entity %s: got event %d while %d was due", entity, idx, want))
		}
		if random.IntN(4) == 0 {
			return 500, nil, "random failure"
		}
		acked[entity] = idx
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) { w.MaxAttempts = 8 }))
	// Event i of entity k is the (i*entities+k)-th change; one tx per round.
	for i := 1; i <= perEntity; i++ {
		var evs []cdc.Event
		lsn := uint64(1000 + i)
		for k := range entities {
			evs = append(evs, event(lsn, uint32(i*entities+k), int64(k), "x"))
		}
		e.write(t, txOf(lsn, evs...))
	}
	waitFor(t, 60*time.Second, "every event delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for k := range entities {
			if acked[fmt.Sprint(k)] != perEntity {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range errs {
		t.Error(s)
	}
}

// TestKeyChangeOrder: an UPDATE that changes the row's key (id 1 becomes
// 2) goes out after the old id's earlier delivery, still being retried,
// and before a later delivery of the old id (a new row 1).
func TestKeyChangeOrder(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		order []string // event id and answer, as they came
		first = true
	)
	rc := newReceiver(t, func(r received, _ int) (int, http.Header, string) {
		mu.Lock()
		defer mu.Unlock()
		status := 200
		if r.Header.Get("X-Walhook-Entity-Id") == "1" && first {
			first, status = false, 500
		}
		order = append(order, fmt.Sprintf("%s %d", r.Header.Get("Webhook-Id"), status))
		return status, nil, ""
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	create := event(100, 0, 1, "a")
	create.Action, create.Old, create.Changed = cdc.ActionCreate, nil, nil
	rekey := event(200, 0, 2, "a")
	rekey.Old = map[string]any{"id": int64(1)}
	rekey.PrevEntityID = "1"
	again := event(300, 0, 1, "b")
	again.Action, again.Old, again.Changed = cdc.ActionCreate, nil, nil
	for _, ev := range []cdc.Event{create, rekey, again} {
		e.write(t, txOf(ev.CommitLSN, ev))
	}
	want := []string{create.ID + " 500", create.ID + " 200", rekey.ID + " 200", again.ID + " 200"}
	waitFor(t, 30*time.Second, "the three deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, want) {
		t.Errorf("requests came as\n%v\nwant\n%v", order, want)
	}
}

func TestReopenResumes(t *testing.T) {
	t.Parallel()
	var down sync.Mutex
	failing := true
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		down.Lock()
		defer down.Unlock()
		if failing {
			return 503, nil, "down"
		}
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, txOf(100, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	waitFor(t, 10*time.Second, "two failed attempts persisted", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusPending)
		return len(ds) == 2 && len(ds[0].Attempts) == 1 && len(ds[1].Attempts) == 1
	})
	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL))
	if st := e.q.Stats("h"); st.TotalCalls != 2 || st.Queued != 2 || st.LatestStatus != 503 {
		t.Errorf("stats after reopen = %+v, want total 2, queued 2, latest 503", st)
	}
	down.Lock()
	failing = false
	down.Unlock()
	waitFor(t, 15*time.Second, "the pending deliveries resumed", func() bool {
		return e.q.Stats("h").SuccessfulCalls == 2
	})
	if st := e.q.Stats("h"); st.TotalCalls != 4 || st.Queued != 0 {
		t.Errorf("stats = %+v, want total 4, none queued", st)
	}
	if got := metric(t, e, "walhook_queue_depth", "webhook", "h"); got != 0 {
		t.Errorf("queue depth = %v", got)
	}
}

func TestDuplicateTxNotEnqueued(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, txOf(100, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	e.write(t, txOf(100, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	waitFor(t, 10*time.Second, "two deliveries", func() bool { return e.q.Stats("h").SuccessfulCalls == 2 })
	if got := metric(t, e, "walhook_events_total", "action", cdc.ActionModify); got != 2 {
		t.Errorf("walhook_events_total = %v, want 2: a transaction sent again is not a new event", got)
	}
	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL))
	// PostgreSQL sends it again after a restart, and a later one.
	e.write(t, txOf(100, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	e.write(t, txOf(300, event(300, 0, 3, "c@x")))
	waitFor(t, 10*time.Second, "the later tx", func() bool { return e.q.Stats("h").SuccessfulCalls == 3 })
	if n := rc.count(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	ds, _ := e.q.Deliveries("h", 100, "")
	if len(ds) != 3 {
		t.Errorf("%d deliveries stored, want 3", len(ds))
	}
	if got := metric(t, e, "walhook_events_total", "action", cdc.ActionModify); got != 1 {
		t.Errorf("walhook_events_total after the restart = %v, want 1 (the later transaction)", got)
	}
}

func TestDurableAfterCommit(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"}, func(o *deliver.Options) {
		o.Retention = 100000
		base := o.Route
		o.Route = func(ev *cdc.Event) []string {
			if ev.Table == "ignored" {
				return nil
			}
			return base(ev)
		}
	})
	e.setHooks(t, hook("h", rc.URL))
	if d := e.q.Durable(); d != 0 {
		t.Fatalf("Durable = %d before any write", d)
	}
	const txs = 300
	done := make(chan struct{})
	var violations []string
	go func() {
		defer close(done)
		for {
			d := e.q.Durable()
			// Every tx up to d must be on disk now.
			if d > 0 {
				want := min(int(d-1-1000)+1, txs)
				ds, err := e.q.Deliveries("h", 100000, "")
				if err == nil && len(ds) < want {
					violations = append(violations, fmt.Sprintf("Durable %d with %d deliveries stored, want %d", d, len(ds), want))
				}
			}
			if d >= 1000+txs {
				return
			}
		}
	}()
	for i := range txs {
		e.write(t, txOf(uint64(1000+i), event(uint64(1000+i), 0, int64(i), "x")))
	}
	// A transaction nobody wants still advances Durable.
	ign := event(5000, 0, 1, "x")
	ign.Table = "ignored"
	e.write(t, txOf(5000, ign))
	waitFor(t, 10*time.Second, "Durable at the ignored tx", func() bool { return e.q.Durable() == 5001 })
	<-done
	for _, v := range violations {
		t.Error(v)
	}
	if err := e.q.Healthy(); err != nil {
		t.Errorf("Healthy = %v", err)
	}
}

func TestRetentionPrunes(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"}, func(o *deliver.Options) { o.Retention = 5 })
	e.setHooks(t, hook("h", rc.URL))
	for i := range 20 {
		e.write(t, txOf(uint64(100+i), event(uint64(100+i), 0, int64(i), "x")))
	}
	waitFor(t, 10*time.Second, "20 successes", func() bool { return e.q.Stats("h").SuccessfulCalls == 20 })
	waitFor(t, 10*time.Second, "pruned to 5", func() bool {
		ds, _ := e.q.Deliveries("h", 100, "")
		return len(ds) == 5
	})
	ds, _ := e.q.Deliveries("h", 100, "")
	if ds[0].EventID != cdc.EventID(119, 0) || ds[4].EventID != cdc.EventID(115, 0) {
		t.Errorf("kept %s..%s, want the newest five", ds[4].EventID, ds[0].EventID)
	}
	if len(ds[0].Payload) == 0 {
		t.Error("a kept delivery has no payload")
	}
}

func TestWebhookAPI(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"cfg", "api"})
	e.setHooks(t, hook("cfg", rc.URL))
	w := hook("api", rc.URL, func(w *deliver.Webhook) { w.Signature = deliver.SignatureStandard })
	got, err := e.q.CreateWebhook(w)
	if err != nil {
		t.Fatalf("CreateWebhook: %v", err)
	}
	if len(got.Secrets) != 1 || !strings.HasPrefix(got.Secrets[0], "whsec_") || got.Source != deliver.SourceAPI {
		t.Errorf("created = %+v, want a generated whsec_ secret", got)
	}
	if _, err := e.q.CreateWebhook(w); !errors.Is(err, deliver.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	if _, err := e.q.CreateWebhook(hook("cfg", rc.URL)); !errors.Is(err, deliver.ErrExists) {
		t.Errorf("create over a config name: %v, want ErrExists", err)
	}
	if _, err := e.q.UpdateWebhook("cfg", func(w *deliver.Webhook) error { w.Active = false; return nil }); !errors.Is(err, deliver.ErrReadOnly) {
		t.Errorf("update config webhook: %v, want ErrReadOnly", err)
	}
	if err := e.q.DeleteWebhook("cfg"); !errors.Is(err, deliver.ErrReadOnly) {
		t.Errorf("delete config webhook: %v, want ErrReadOnly", err)
	}
	if _, err := e.q.UpdateWebhook("nope", func(*deliver.Webhook) error { return nil }); !errors.Is(err, deliver.ErrNotFound) {
		t.Errorf("update missing: %v, want ErrNotFound", err)
	}
	if _, err := e.q.UpdateWebhook("api", func(w *deliver.Webhook) error { w.MaxAttempts = 12; return nil }); err == nil || !strings.Contains(err.Error(), "max_attempts") {
		t.Errorf("invalid update: %v", err)
	}
	up, err := e.q.UpdateWebhook("api", func(w *deliver.Webhook) error { w.Active = false; return nil })
	if err != nil || up.Active {
		t.Fatalf("update: %+v, %v", up, err)
	}
	if ws := e.q.Webhooks(); len(ws) != 2 || ws[0].Name != "api" || ws[1].Name != "cfg" || len(ws[0].Secrets) != 0 {
		t.Errorf("Webhooks = %+v, want api, cfg without secrets", ws)
	}

	// An inactive webhook gets nothing queued.
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	waitFor(t, 10*time.Second, "the config webhook's delivery", func() bool { return e.q.Stats("cfg").SuccessfulCalls == 1 })
	if st := e.q.Stats("api"); st.Queued != 0 || st.TotalCalls != 0 {
		t.Errorf("inactive api webhook stats = %+v", st)
	}

	// It survives a restart, secret included: the ping verifies.
	e.reopen(t)
	e.setHooks(t, hook("cfg", rc.URL))
	if _, err := e.q.UpdateWebhook("api", func(w *deliver.Webhook) error { w.Active = true; return nil }); err != nil {
		t.Fatal(err)
	}
	att, err := e.q.Test(t.Context(), "api")
	if err != nil || att.Status != 200 {
		t.Fatalf("Test = %+v, %v", att, err)
	}
	if sig := att.RequestHeaders.Get("Webhook-Signature"); !strings.HasPrefix(sig, "v1,") {
		t.Errorf("ping signature = %q", sig)
	}
	verify(t, deliver.SignatureStandard, got.Secrets, rc.requests()[rc.count()-1])
	if st := e.q.Stats("api"); st.TotalCalls != 1 || st.SuccessfulCalls != 1 {
		t.Errorf("ping not counted: %+v", st)
	}

	if err := e.q.DeleteWebhook("api"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.q.Webhook("api"); ok {
		t.Error("deleted webhook still there")
	}
}

// TestKeepAlive: whatever the receiver answers (nothing, a short body, a
// body longer than what an attempt keeps, a chunked one), connections are
// reused: a webhook opens about as many as it has workers.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	for name, answer := range map[string]func(http.ResponseWriter){
		"empty":   func(http.ResponseWriter) {},
		"short":   func(w http.ResponseWriter) { io.WriteString(w, "ok") },
		"long":    func(w http.ResponseWriter) { io.WriteString(w, strings.Repeat("x", 10<<10)) },
		"chunked": func(w http.ResponseWriter) { io.WriteString(w, "a"); w.(http.Flusher).Flush(); io.WriteString(w, "b") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var conns, reqs atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				answer(w)
				reqs.Add(1)
			}))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()
			e := newEnv(t, []string{"h"})
			e.setHooks(t, hook("h", srv.URL))
			const n = 60
			for i := range n {
				e.write(t, txOf(uint64(100+i), event(uint64(100+i), 0, int64(i), "a@x")))
			}
			waitFor(t, 20*time.Second, "the deliveries", func() bool { return e.q.Stats("h").SuccessfulCalls == n })
			// A worker that finds no idle connection dials, and the
			// transport may hand it one freed meanwhile: a few more
			// connections than workers are normal, one per request is not.
			if c, most := conns.Load(), int64(2*e.opts.Concurrency); c > most || reqs.Load() != n {
				t.Errorf("%d requests over %d connections; want %d over at most %d", reqs.Load(), c, n, most)
			}
		})
	}
}

// TestChangedURL: requests copy a request made once per definition, so a
// changed URL or method must reach the next request.
func TestChangedURL(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"api"})
	if _, err := e.q.CreateWebhook(hook("api", rc.URL+"/a?x=1")); err != nil {
		t.Fatal(err)
	}
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	waitFor(t, 10*time.Second, "the first delivery", func() bool { return rc.count() == 1 })
	if _, err := e.q.UpdateWebhook("api", func(w *deliver.Webhook) error {
		w.URL, w.Method = rc.URL+"/b?y=2", "GET"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.write(t, txOf(200, event(200, 0, 2, "b@x")))
	waitFor(t, 10*time.Second, "the second delivery", func() bool { return rc.count() == 2 })
	for i, want := range []received{{Method: "POST", Path: "/a", Query: "x=1"}, {Method: "GET", Path: "/b", Query: "y=2"}} {
		r := rc.requests()[i]
		if r.Method != want.Method || r.Path != want.Path || r.Query != want.Query {
			t.Errorf("request %d: %s %s?%s, want %s %s?%s", i+1, r.Method, r.Path, r.Query, want.Method, want.Path, want.Query)
		}
		if (len(r.Body) > 0) != (want.Method == "POST") {
			t.Errorf("request %d: %s with %d body bytes", i+1, r.Method, len(r.Body))
		}
	}
}

func TestAttemptRedactsSecrets(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) {
		w.BasicAuthUser, w.BasicAuthPassword = "u", "hunter2"
		w.Headers = map[string]string{"X-Api-Key": "topsecret"}
	}))
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	d := e.latest(t, "h", deliver.StatusSuccess)
	h := d.Attempts[0].RequestHeaders
	if h.Get("Authorization") != "[redacted]" || h.Get("X-Api-Key") != "[redacted]" {
		t.Errorf("request headers not redacted: %v", h)
	}
	e.q.FlushLog("h")
	log, _ := os.ReadFile(e.q.LogPath("h"))
	if !strings.Contains(string(log), " status=200 ") {
		t.Errorf("the .log has no line for the attempt:\n%s", log)
	}
	for _, s := range []string{"hunter2", "topsecret"} {
		if strings.Contains(fmt.Sprint(d), s) || strings.Contains(string(log), s) {
			t.Errorf("secret %q leaked", s)
		}
	}
	if rc.requests()[0].Header.Get("X-Api-Key") != "topsecret" {
		t.Error("the receiver did not get the real header")
	}
}

// TestURLUserInfo: credentials in the webhook's URL go out as basic auth,
// as http.Client sends them, and stay out of the history and the .log.
func TestURLUserInfo(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", strings.Replace(rc.URL, "http://", "http://ops:s3cr3t@", 1)))
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	d := e.latest(t, "h", deliver.StatusSuccess)
	r := rc.requests()[0]
	if user, pw, ok := (&http.Request{Header: r.Header}).BasicAuth(); !ok || user != "ops" || pw != "s3cr3t" {
		t.Errorf("receiver got Authorization %q, want basic ops:s3cr3t", r.Header.Get("Authorization"))
	}
	if got := d.Attempts[0].RequestHeaders.Get("Authorization"); got != "[redacted]" {
		t.Errorf("stored Authorization = %q, want it redacted", got)
	}
	waitFor(t, 10*time.Second, "the log line", func() bool {
		log, _ := os.ReadFile(e.q.LogPath("h"))
		return strings.Contains(string(log), " status=200 ")
	})
	log, _ := os.ReadFile(e.q.LogPath("h"))
	if strings.Contains(string(log), "s3cr3t") || strings.Contains(fmt.Sprint(d), "s3cr3t") {
		t.Error("the URL's password leaked into the log or the history")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*deliver.Webhook)
		want string
	}{
		{func(*deliver.Webhook) {}, ""},
		{func(w *deliver.Webhook) { w.Name = "a b" }, "name:"},
		{func(w *deliver.Webhook) { w.URL = "ftp://x" }, "url:"},
		{func(w *deliver.Webhook) { w.URL = "::" }, "url:"},
		{func(w *deliver.Webhook) { w.Events = nil }, "events:"},
		{func(w *deliver.Webhook) { w.Actions = []string{"update"} }, "actions:"},
		{func(w *deliver.Webhook) { w.Method = "PUT" }, "method:"},
		{func(w *deliver.Webhook) { w.ContentType = "xml" }, "content_type:"},
		{func(w *deliver.Webhook) { w.Template = "{{.Nope}}" }, "template:"},
		{func(w *deliver.Webhook) { w.Template = "{{" }, "template:"},
		{func(w *deliver.Webhook) { w.Template = `{{json .Data}}` }, ""},
		{func(w *deliver.Webhook) { w.HeaderPrefix = "X Bad" }, "header_prefix:"},
		{func(w *deliver.Webhook) { w.Signature = "md5"; w.Secrets = []string{"s"} }, "signature:"},
		{func(w *deliver.Webhook) { w.Signature = "sha256" }, "secrets:"},
		{func(w *deliver.Webhook) { w.Secrets = []string{"whsec_!!"}; w.Signature = "standard" }, "secrets:"},
		{func(w *deliver.Webhook) { w.Headers = map[string]string{"X-A": "a\nb"} }, "headers:"},
		{func(w *deliver.Webhook) { w.Timeout = 0 }, "timeout_ms:"},
		{func(w *deliver.Webhook) { w.MaxAttempts = 12 }, "max_attempts: must be 1..8 (got 12)"},
		{func(w *deliver.Webhook) { w.RetryMode = "fast" }, "retry_mode:"},
		{func(w *deliver.Webhook) { w.NotifyEmail = "nope" }, "notify_email:"},
	} {
		w := hook("h", "https://example.com/hook", tc.mod)
		err := w.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%+v) = %v, want nil", w, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("Validate = %v, want an error starting %q", err, tc.want)
		}
	}
}

func TestApplyDefaults(t *testing.T) {
	var w deliver.Webhook
	deliver.ApplyDefaults(&w)
	if w.Method != "POST" || w.ContentType != "json" || w.HeaderPrefix != "X-Walhook-" || w.Signature != "" ||
		w.SignatureHeader != "X-Walhook-Signature" || w.Timeout != 10*time.Second || w.MaxAttempts != 5 ||
		w.RetryMode != "production" || len(w.Actions) != 3 || !w.IncludeEntity || !w.Active {
		t.Errorf("defaults = %+v", w)
	}
	w.Secrets = []string{"s"}
	deliver.ApplyDefaults(&w)
	if w.Signature != "standard" {
		t.Errorf("signature with a secret = %q, want standard", w.Signature)
	}
}

func TestActionsFilter(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	all := newReceiver(t, nil)
	e := newEnv(t, []string{"default", "all"})
	e.setHooks(t, hook("default", rc.URL), hook("all", all.URL, func(w *deliver.Webhook) {
		w.Actions = []string{"create", "modify", "delete", "truncate"}
	}))
	trunc := cdc.Event{ID: cdc.EventID(100, 0), Schema: "public", Table: "employees", Action: cdc.ActionTruncate}
	e.write(t, txOf(100, trunc, event(100, 1, 1, "a@x")))
	waitFor(t, 10*time.Second, "both deliveries of the second webhook", func() bool { return all.count() == 2 })
	waitFor(t, 10*time.Second, "the modify of the first", func() bool { return rc.count() == 1 })
	if got := rc.requests()[0].Header.Get("X-Walhook-Event"); got != "employee.modify" {
		t.Errorf("default webhook got %s, want only the modify", got)
	}
	if got := metric(t, e, "walhook_events_total", "action", "truncate"); got != 1 {
		t.Errorf("walhook_events_total{action=truncate} = %v", got)
	}
	waitFor(t, 5*time.Second, "end-to-end observed", func() bool { return metric(t, e, "walhook_end_to_end_seconds", "", "") == 3 })
}

// TestDamagedStore: a store file that is garbage, cut short or garbled is
// an error that names it and says what to do, from Open and ReadWebhooks
// alike, not a crash (a page past the end of a memory-mapped file is a
// SIGBUS).
func TestDamagedStore(t *testing.T) {
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", "http://127.0.0.1:1/"))
	if err := e.q.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(e.opts.Dir, "walhook.db")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	garble := func(b []byte) []byte { return bytes.Repeat([]byte{0xAB}, len(b)) }
	for _, c := range []struct {
		name string
		file []byte
	}{
		{"garbage", garble(good)},
		{"cut short", good[:2*page]},
		{"pages after the meta pages garbled", append(slices.Clone(good[:2*page]), garble(good[2*page:])...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(path, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			opts := e.opts
			opts.Registerer = prometheus.NewRegistry()
			q, err := deliver.Open(opts)
			if err == nil {
				q.Close()
				t.Fatal("Open accepted a damaged store")
			}
			if !strings.Contains(err.Error(), "the store "+path+" is damaged") || !strings.Contains(err.Error(), "restore it from a backup") {
				t.Errorf("Open: %v, want the store named as damaged and what to do", err)
			}
			if _, err := deliver.ReadWebhooks(e.opts.Dir, time.Second); err == nil || !strings.Contains(err.Error(), "is damaged") {
				t.Errorf("ReadWebhooks: %v, want the store named as damaged", err)
			}
		})
	}
	// The checks refuse nothing sound.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := e.opts
	opts.Registerer = prometheus.NewRegistry()
	q, err := deliver.Open(opts)
	if err != nil {
		t.Fatalf("Open of the undamaged store: %v", err)
	}
	q.Close()
}

// TestCompactStore: compaction gives a drained backlog's pages back and
// keeps everything else: webhooks made through the API, statistics, a
// pending delivery with its attempts. It refuses a store in use.
func TestCompactStore(t *testing.T) {
	var failing atomic.Bool
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		if failing.Load() {
			return 503, nil, "down"
		}
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	if _, err := e.q.CreateWebhook(hook("made-by-api", rc.URL)); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 1000)
	const total = 20000
	for i := range total / 100 {
		lsn := uint64(1000 + i)
		var evs []cdc.Event
		for j := range 100 {
			evs = append(evs, event(lsn, uint32(j), int64(i*100+j), pad))
		}
		e.write(t, txOf(lsn, evs...))
	}
	waitFor(t, 60*time.Second, "the backlog delivered", func() bool { return e.q.Stats("h").SuccessfulCalls == total })
	failing.Store(true)
	e.write(t, txOf(99999, event(99999, 0, 1, "last@x")))
	last := cdc.EventID(99999, 0)
	var pending deliver.Delivery
	waitFor(t, 10*time.Second, "the failed attempt stored", func() bool {
		ds, _ := e.q.Deliveries("h", 1, "")
		if len(ds) == 1 {
			pending = ds[0]
		}
		return pending.EventID == last && pending.Status == deliver.StatusPending && len(pending.Attempts) == 1
	})

	size := metric(t, e, "walhook_store_file_bytes", "", "")
	fi, err := os.Stat(filepath.Join(e.opts.Dir, "walhook.db"))
	if err != nil {
		t.Fatal(err)
	}
	if int64(size) != fi.Size() {
		t.Errorf("walhook_store_file_bytes = %.0f, the file has %d bytes", size, fi.Size())
	}
	// Most of the drained backlog's pages are free now.
	if free := metric(t, e, "walhook_store_free_bytes", "", ""); free < size/2 {
		t.Errorf("walhook_store_free_bytes = %.0f of %.0f", free, size)
	}
	if _, _, err := deliver.CompactStore(e.opts.Dir); !errors.Is(err, deliver.ErrStoreBusy) {
		t.Fatalf("CompactStore of a store in use: %v, want ErrStoreBusy", err)
	}
	if err := e.q.Close(); err != nil {
		t.Fatal(err)
	}
	before, after, err := deliver.CompactStore(e.opts.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("store: %d → %d bytes", before, after)
	if after > before/4 {
		t.Errorf("store %d bytes after compaction, %d before: want a quarter at most", after, before)
	}
	if _, err := os.Stat(filepath.Join(e.opts.Dir, "walhook.db.compact")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary file is left: %v", err)
	}

	e.reopen(t)
	if _, ok := e.q.Webhook("made-by-api"); !ok {
		t.Error("the webhook made through the API is gone")
	}
	e.setHooks(t, hook("h", rc.URL))
	if st := e.q.Stats("h"); st.SuccessfulCalls != total || st.Queued != 1 {
		t.Errorf("stats after compaction = %+v, want %d successful and 1 queued", st, total)
	}
	ds, err := e.q.Deliveries("h", 1, deliver.StatusPending)
	if err != nil || len(ds) != 1 || ds[0].ID != pending.ID || len(ds[0].Attempts) == 0 {
		t.Fatalf("pending after compaction: %d, %v; want %s with its attempts", len(ds), err, pending.ID)
	}
	failing.Store(false)
	waitFor(t, 15*time.Second, "the pending delivery sent after compaction", func() bool {
		return e.q.Stats("h").SuccessfulCalls == total+1
	})
}
