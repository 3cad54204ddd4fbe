package deliver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/internal/testkit"
)

// batchBody is the JSON body of a batch.
type batchBody struct {
	Webhook string            `json:"webhook"`
	Events  []json.RawMessage `json:"events"`
}

// unpack reads a batch request: its body's events and each one's id.
func unpack(t *testing.T, r received) (batchBody, []string) {
	t.Helper()
	var b batchBody
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatalf("batch body %q: %v", r.Body, err)
	}
	ids := make([]string, len(b.Events))
	for i, ev := range b.Events {
		var one struct{ ID string }
		if err := json.Unmarshal(ev, &one); err != nil {
			t.Fatalf("event %s: %v", ev, err)
		}
		ids[i] = one.ID
	}
	return b, ids
}

func batched(size int) func(*deliver.Webhook) {
	return func(w *deliver.Webhook) { w.BatchSize = size }
}

// TestBatchRequests: 25 events for 25 rows to a webhook with batch_size
// 10 go out in three requests of 10, 10 and 5, each event as the body a
// webhook without batches sends it, the batch signed under its id, which
// names it in the history and the .log.
func TestBatchRequests(t *testing.T) {
	t.Parallel()
	one, many := newReceiver(t, nil), newReceiver(t, nil)
	e := newEnv(t, []string{"one", "many"})
	secret := func(w *deliver.Webhook) { w.Secrets = []string{"s3cret"}; w.Signature = deliver.SignatureStandard }
	e.setHooks(t, hook("one", one.URL, secret), hook("many", many.URL, secret, batched(10)))
	var evs []cdc.Event
	for i := range 25 {
		evs = append(evs, event(100, uint32(i), int64(i+1), fmt.Sprintf("%d@x", i)))
	}
	e.write(t, txOf(100, evs...))
	waitFor(t, 10*time.Second, "25 events each way", func() bool {
		ds, _ := e.q.Deliveries("many", 100, deliver.StatusSuccess)
		return one.count() == 25 && len(ds) == 25
	})

	alone := map[string][]byte{}
	for _, r := range one.requests() {
		alone[r.Header.Get("Webhook-Id")] = r.Body
		if r.Header.Get("X-Walhook-Event-Count") != "" {
			t.Errorf("an event sent alone has X-Walhook-Event-Count %q", r.Header.Get("X-Walhook-Event-Count"))
		}
	}
	reqs := many.requests()
	// Three workers send them at once: in queue order, by their first event.
	slices.SortFunc(reqs, func(a, b received) int {
		_, x := unpack(t, a)
		_, y := unpack(t, b)
		return strings.Compare(x[0], y[0])
	})
	var sizes []int
	var all []string
	batchOf := map[string]string{} // event id: batch id
	for _, r := range reqs {
		b, ids := unpack(t, r)
		id := r.Header.Get("Webhook-Id")
		sizes = append(sizes, len(ids))
		all = append(all, ids...)
		if b.Webhook != "many" {
			t.Errorf("batch body's webhook = %q", b.Webhook)
		}
		if !regexp.MustCompile(`^batch_[0-9a-f]{32}$`).MatchString(id) {
			t.Errorf("Webhook-Id = %q, want batch_ and 32 hex digits", id)
		}
		for k, want := range map[string]string{
			"X-Walhook-Event-Count": fmt.Sprint(len(ids)), "X-Walhook-Event": "batch", "X-Walhook-Event-Id": id,
			"X-Walhook-Webhook": "many", "X-Walhook-Attempt": "1", "X-Walhook-Entity-Id": "", "Content-Type": "application/json",
		} {
			if got := r.Header.Get(k); got != want {
				t.Errorf("batch %s: %s = %q, want %q", id, k, got, want)
			}
		}
		if got, want := r.Header.Get("Webhook-Signature"), testkit.StandardSignature(t, "s3cret", id, r.Header.Get("Webhook-Timestamp"), r.Body); got != want {
			t.Errorf("batch %s: Webhook-Signature = %q, want %q", id, got, want)
		}
		for i, ev := range b.Events {
			want := bytes.Replace(alone[ids[i]], []byte(`"webhook":"one"`), []byte(`"webhook":"many"`), 1)
			if !bytes.Equal(ev, want) {
				t.Errorf("event %s in the batch:\n%s\nwant the body sent alone:\n%s", ids[i], ev, want)
			}
			batchOf[ids[i]] = id
		}
	}
	if !slices.Equal(sizes, []int{10, 10, 5}) {
		t.Errorf("batch sizes %v, want [10 10 5]", sizes)
	}
	want := make([]string, 25)
	for i := range want {
		want[i] = cdc.EventID(100, uint32(i))
	}
	if !slices.Equal(all, want) {
		t.Errorf("events in the batches, in order:\n%v\nwant\n%v", all, want)
	}

	// The history: each delivery names its batch; the batch's first keeps
	// the body, the others its headers and response.
	ds, _ := e.q.Deliveries("many", 100, "")
	firsts := 0
	for _, d := range ds {
		if d.Batch == "" || d.Batch != batchOf[d.EventID] {
			t.Errorf("delivery of %s: batch %q, want %q", d.EventID, d.Batch, batchOf[d.EventID])
		}
		if len(d.Attempts) != 1 || d.Attempts[0].Status != 200 || d.Attempts[0].RequestHeaders.Get("Webhook-Id") != d.Batch {
			t.Errorf("delivery of %s: attempts %+v", d.EventID, d.Attempts)
			continue
		}
		if body := d.Attempts[0].RequestBody; body != "" {
			firsts++
			var b batchBody
			if json.Unmarshal([]byte(body), &b); len(b.Events) == 0 || !strings.Contains(string(b.Events[0]), d.EventID) {
				t.Errorf("delivery of %s keeps a body that does not start with it: %.200s", d.EventID, body)
			}
		}
	}
	if firsts != 3 {
		t.Errorf("%d deliveries keep the request body, want 3 (one per batch)", firsts)
	}
	if st := e.q.Stats("many"); st.TotalCalls != 3 || st.SuccessfulCalls != 3 || st.Queued != 0 {
		t.Errorf("stats = %+v, want 3 calls, all successful, nothing queued", st)
	}
	if got := metric(t, e, "walhook_deliveries_total", "webhook", "many"); got != 25 {
		t.Errorf("walhook_deliveries_total{webhook=many} = %v, want 25", got)
	}

	e.q.FlushLog("many")
	log, err := os.ReadFile(e.q.LogPath("many"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 3 {
		t.Fatalf("log has %d lines, want 3:\n%s", len(lines), log)
	}
	for i, r := range reqs {
		want := fmt.Sprintf(" id=%s event=batch events=%d attempt=1/5 status=200 ", r.Header.Get("Webhook-Id"), sizes[i])
		if !strings.Contains(string(log), want) {
			t.Errorf("no log line holds %q:\n%s", want, log)
		}
	}
}

// TestBatchOrderUnderRetries: five rows changed four times each, in one
// transaction, to a webhook with batch_size 10, four workers and a
// receiver that fails every other request: each row's changes arrive in
// commit order, one per batch at most, and a failed batch comes again
// whole under its id.
func TestBatchOrderUnderRetries(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(_ received, n int) (int, http.Header, string) {
		if n%2 == 1 {
			return 503, nil, "later"
		}
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, batched(10)))
	var evs []cdc.Event
	for round := range 4 {
		for row := range 5 {
			i := round*5 + row
			evs = append(evs, event(100, uint32(i), int64(row+1), fmt.Sprintf("%d-%d@x", row+1, round)))
		}
	}
	e.write(t, txOf(100, evs...))
	waitFor(t, 60*time.Second, "20 deliveries", func() bool {
		ds, _ := e.q.Deliveries("h", 100, deliver.StatusSuccess)
		return len(ds) == 20
	})
	reqs := rc.requests()
	rounds := map[string]int{} // entity id: the rounds received so far
	var failed []received
	for n, r := range reqs {
		b, ids := unpack(t, r)
		id := r.Header.Get("Webhook-Id")
		if n%2 == 0 { // answered 503
			failed = append(failed, r)
			continue
		}
		prev := failed[len(failed)-1]
		if prev.Header.Get("Webhook-Id") != id || !bytes.Equal(prev.Body, r.Body) || r.Header.Get("X-Walhook-Attempt") != "2" {
			t.Errorf("request %d: batch %s attempt %s after the failed %s: want the same batch, whole, as attempt 2",
				n+1, id, r.Header.Get("X-Walhook-Attempt"), prev.Header.Get("Webhook-Id"))
		}
		seen := map[string]bool{}
		for _, raw := range b.Events {
			var ev struct {
				EntityID string `json:"entity_id"`
				Data     struct{ Email string }
			}
			json.Unmarshal(raw, &ev)
			if seen[ev.EntityID] {
				t.Errorf("batch %s holds two events of row %s", id, ev.EntityID)
			}
			seen[ev.EntityID] = true
			if want := fmt.Sprintf("%s-%d@x", ev.EntityID, rounds[ev.EntityID]); ev.Data.Email != want {
				t.Errorf("row %s: got %s, want %s next", ev.EntityID, ev.Data.Email, want)
			}
			rounds[ev.EntityID]++
		}
		_ = ids
	}
	for row := range 5 {
		if got := rounds[itoa(int64(row+1))]; got != 4 {
			t.Errorf("row %d: %d changes delivered, want 4", row+1, got)
		}
	}
}

// TestBatchFailsWhole: a batch the receiver refuses fails for good as a
// whole; Recover and Redeliver send its deliveries again.
func TestBatchFailsWhole(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(received, int) (int, http.Header, string) { return 500, nil, "no" })
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, batched(4), func(w *deliver.Webhook) { w.MaxAttempts = 1 }))
	var evs []cdc.Event
	for i := range 4 {
		evs = append(evs, event(100, uint32(i), int64(i+1), "a@x"))
	}
	e.write(t, txOf(100, evs...))
	for range 4 {
		select {
		case d := <-e.failed:
			if d.Status != deliver.StatusFailed || d.Batch == "" || len(d.Attempts) != 1 {
				t.Errorf("OnFailed got %+v", d)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("OnFailed not called for each delivery of the batch")
		}
	}
	waitFor(t, 5*time.Second, "4 failures persisted", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusFailed)
		return len(ds) == 4
	})
	if n := rc.count(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	firstID := rc.requests()[0].Header.Get("Webhook-Id")

	rc.mu.Lock()
	rc.respond = nil
	rc.mu.Unlock()
	n, err := e.q.Recover("h", time.Now().Add(-time.Hour))
	if err != nil || n != 4 {
		t.Fatalf("Recover = %d, %v; want 4", n, err)
	}
	waitFor(t, 10*time.Second, "the recovered batch", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusSuccess)
		return len(ds) == 4
	})
	r := rc.requests()[1]
	if _, ids := unpack(t, r); len(ids) != 4 || r.Header.Get("Webhook-Id") != firstID {
		t.Errorf("recovered: batch %s of %v, want the same 4 events under %s", r.Header.Get("Webhook-Id"), ids, firstID)
	}

	// A delivery of the batch redelivered goes out again.
	ds, _ := e.q.Deliveries("h", 10, deliver.StatusSuccess)
	if err := e.q.Redeliver(ds[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the redelivery", func() bool { return rc.count() == 3 })
	if _, ids := unpack(t, rc.requests()[2]); !slices.Equal(ids, []string{ds[0].EventID}) {
		t.Errorf("redelivered: %v, want [%s]", ids, ds[0].EventID)
	}
}

// TestBatchAfterRestart: batches that failed are sent again after a
// restart with the same events under the same ids, though batch_size has
// grown meanwhile and would now make one batch of them.
func TestBatchAfterRestart(t *testing.T) {
	rc := newReceiver(t, func(received, int) (int, http.Header, string) { return 500, nil, "no" })
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, batched(3)))
	var evs []cdc.Event
	for i := range 5 {
		evs = append(evs, event(100, uint32(i), int64(i+1), "a@x"))
	}
	e.write(t, txOf(100, evs...))
	waitFor(t, 10*time.Second, "both batches tried and filed", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusPending)
		filed := 0
		for _, d := range ds {
			if len(d.Attempts) == 1 && d.Batch != "" {
				filed++
			}
		}
		return rc.count() == 2 && filed == 5
	})
	before := map[string][]string{}
	for _, r := range rc.requests() {
		_, ids := unpack(t, r)
		before[r.Header.Get("Webhook-Id")] = ids
	}
	rc.mu.Lock()
	rc.respond = nil
	rc.mu.Unlock()

	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL, batched(10)))
	waitFor(t, 20*time.Second, "5 deliveries", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusSuccess)
		return len(ds) == 5
	})
	after := rc.requests()[2:]
	if len(after) != 2 {
		t.Fatalf("%d requests after the restart, want 2 (the two batches again)", len(after))
	}
	for _, r := range after {
		_, ids := unpack(t, r)
		id := r.Header.Get("Webhook-Id")
		if want, ok := before[id]; !ok || !slices.Equal(ids, want) || r.Header.Get("X-Walhook-Attempt") != "2" {
			t.Errorf("after the restart: %s attempt %s with %v; before: %v", id, r.Header.Get("X-Walhook-Attempt"), ids, before)
		}
	}
}

// TestBatchWait: with batch_wait_ms, events committed one by one wait for
// each other up to it, counted from the oldest's commit.
func TestBatchWait(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, batched(100), func(w *deliver.Webhook) { w.BatchWait = time.Minute }))
	start := time.Now()
	for i := range 3 {
		ev := event(uint64(100+i), 0, int64(i+1), "a@x")
		ev.CommitTime = start
		tx := txOf(uint64(100+i), ev)
		tx.CommitTime = start
		e.write(t, tx)
	}
	// Nothing is sent while the batch waits; an old event ends its wait.
	waitFor(t, 10*time.Second, "3 pending deliveries", func() bool {
		ds, _ := e.q.Deliveries("h", 10, deliver.StatusPending)
		return len(ds) == 3
	})
	if n := rc.count(); n != 0 {
		t.Fatalf("%d requests while the batch waits", n)
	}
	ev := event(200, 0, 9, "old@x")
	ev.CommitTime = start.Add(-time.Hour)
	tx := txOf(200, ev)
	tx.CommitTime = ev.CommitTime
	e.write(t, tx)
	waitFor(t, 10*time.Second, "a request", func() bool { return rc.count() > 0 })
	if _, ids := unpack(t, rc.requests()[0]); len(ids) != 4 {
		t.Errorf("the batch sent holds %v, want all 4 events", ids)
	}
}

// TestBatchTemplate: a template over .Events renders a batch's body.
func TestBatchTemplate(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL, batched(5), func(w *deliver.Webhook) {
		w.Template = `{"batch": {{json .ID}}, "ids": [{{range $i, $e := .Events}}{{if $i}}, {{end}}{{json $e.EntityID}}{{end}}]}`
	}))
	e.write(t, txOf(100, event(100, 0, 7, "a@x"), event(100, 1, 8, "b@x")))
	waitFor(t, 10*time.Second, "a request", func() bool { return rc.count() == 1 })
	r := rc.requests()[0]
	want := fmt.Sprintf(`{"batch": %q, "ids": ["7", "8"]}`, r.Header.Get("Webhook-Id"))
	if string(r.Body) != want {
		t.Errorf("body %s, want %s", r.Body, want)
	}
}

func TestBatchValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*deliver.Webhook)
		want string
	}{
		{batched(100), ""},
		{batched(deliver.MaxBatchSize + 1), "batch_size: must be 1..1000 (got 1001)"},
		{batched(-1), "batch_size: must be 1..1000 (got -1)"},
		{func(w *deliver.Webhook) { w.BatchWait = -time.Millisecond }, "batch_wait_ms: must be 0..60000 (got -1)"},
		{func(w *deliver.Webhook) { w.BatchSize, w.ContentType = 2, "form" }, `batch_size: a form body holds one event: content_type = "form" needs batch_size = 1 (got 2)`},
		{func(w *deliver.Webhook) { w.BatchSize, w.Method = 2, "GET" }, `batch_size: a GET request has no body to carry a batch: method = "GET" needs batch_size = 1 (got 2)`},
		{func(w *deliver.Webhook) { w.ContentType = "form" }, ""},
		{func(w *deliver.Webhook) { w.BatchSize, w.Template = 2, `{{json .Data}}` }, "template: rendering a sample batch"},
		{func(w *deliver.Webhook) { w.BatchSize, w.Template = 2, `{{range .Events}}{{json .Data}}{{end}}` }, ""},
	} {
		w := hook("h", "https://example.com/hook", tc.mod)
		err := w.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", w, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("batch_size %d: err %v, want %q", w.BatchSize, err, tc.want)
		}
	}
}

// BenchmarkDeliverBatch is BenchmarkDeliver with batch_size 100 and rows
// as walhook bench writes them (an id and 300 bytes of text): Write,
// commit, one request per 100 events to a receiver that only counts, the
// outcomes' commit. cpu-µs/event is the process's CPU time (receiver
// included) per event; allocs/op are per event too.
func BenchmarkDeliverBatch(b *testing.B) {
	text := strings.Repeat("x", 300)
	benchDeliveries(b, hook("h", "", batched(100)), func(lsn uint64, j uint32, id int64) cdc.Event {
		return cdc.Event{
			ID: cdc.EventID(lsn, j), CommitLSN: lsn, Index: j, CommitTime: time.Now(),
			Schema: "public", Table: "bench", Action: cdc.ActionCreate,
			Data: map[string]any{"id": id, "payload": text}, Key: []string{"id"},
			Entity: "bench", EntityID: itoa(id),
		}
	}, "cpu-µs/event")
}
