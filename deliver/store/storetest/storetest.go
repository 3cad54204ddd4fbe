// Package storetest is the suite every implementation of deliver.Store
// must pass: what the queue relies on, said as tests. An implementation's
// own test calls Run with a way to open a fresh store (see store.Bolt's
// bolt_test.go).
package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/deliver/store"
)

// Opener opens the store of one place: empty at its first call, the same
// store again at each call after the previous one was closed. The store is
// opened with the retention Run asked for.
type Opener func(t *testing.T) deliver.Store

// NewPlace makes a fresh, empty place for a store that keeps retention
// completed deliveries per webhook.
type NewPlace func(t *testing.T, retention int) Opener

// Run runs the suite against the stores newPlace makes.
func Run(t *testing.T, newPlace NewPlace) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T, NewPlace)
	}{
		{"DurablePosition", testDurablePosition},
		{"RepeatsQueueNothing", testRepeatsQueueNothing},
		{"QueueOrder", testQueueOrder},
		{"Window", testWindow},
		{"WindowOfParts", testWindowOfParts},
		{"Outcomes", testOutcomes},
		{"Retention", testRetention},
		{"Redeliver", testRedeliver},
		{"DropQueue", testDropQueue},
		{"WebhookDefinitions", testWebhookDefinitions},
		{"SwitchedOff", testSwitchedOff},
		{"Backfill", testBackfill},
		{"Find", testFind},
		{"Charts", testCharts},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newPlace) })
	}
}

// open opens a store and closes it when the test ends, if the test has not.
func open(t *testing.T, o Opener) deliver.Store {
	t.Helper()
	s := o(t)
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	return &closeOnce{Store: s, closed: &closed}
}

type closeOnce struct {
	deliver.Store
	closed *bool
}

func (c *closeOnce) Close() error {
	if *c.closed {
		return nil
	}
	*c.closed = true
	return c.Store.Close()
}

// reopen closes s and opens its place again.
func reopen(t *testing.T, s deliver.Store, o Opener) deliver.Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return open(t, o)
}

// tx is a transaction committed at commit and ending at end (0: a chunk of
// a big transaction) with n events from index first, entity ids e<first>...
func tx(commit, end uint64, first, n int) *cdc.Tx {
	t := &cdc.Tx{CommitLSN: commit, EndLSN: end, CommitTime: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}
	for i := first; i < first+n; i++ {
		t.Events = append(t.Events, cdc.Event{
			ID: cdc.EventID(commit, uint32(i)), CommitLSN: commit, Index: uint32(i), CommitTime: t.CommitTime,
			Schema: "public", Table: "orders", Action: cdc.ActionCreate, Entity: "orders", EntityID: fmt.Sprint("e", i),
			Data: map[string]any{"id": int64(i), "note": fmt.Sprint("row ", i)},
		})
	}
	return t
}

// to is an Append of tx queued for webhooks, every event alike.
func to(tx *cdc.Tx, webhooks ...string) store.Append {
	a := store.Append{Tx: tx}
	for range tx.Events {
		a.Targets = append(a.Targets, webhooks)
	}
	return a
}

func commit(t *testing.T, s deliver.Store, appends ...store.Append) []store.Queued {
	t.Helper()
	q, err := s.Commit(&store.Batch{Appends: appends})
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return q
}

// outcome is q's record after an attempt answered with status at at;
// success completes it, failed ends it, else it is due again at at+1m.
func outcome(q store.Pending, webhook string, status int, at time.Time, final string) store.Outcome {
	rec := *q.Record
	rec.Attempts = append(slices.Clone(rec.Attempts), store.Attempt{N: len(rec.Attempts) + 1, At: at, Status: status, RequestBody: "{}", Duration: time.Millisecond})
	rec.Status = final
	if final == store.StatusPending {
		rec.Due = at.Add(time.Minute)
	}
	return store.Outcome{Webhook: webhook, Seq: q.Seq, Record: &rec, Done: final == store.StatusSuccess}
}

func pendingOf(q store.Queued) store.Pending {
	return store.Pending{Seq: q.Seq, Record: q.Record, Event: q.Event}
}

func record(t *testing.T, s deliver.Store, outcomes ...store.Outcome) {
	t.Helper()
	if _, err := s.Commit(&store.Batch{Outcomes: outcomes}); err != nil {
		t.Fatalf("Commit of outcomes: %v", err)
	}
}

func window(t *testing.T, s deliver.Store, webhook string, from uint64, limit int) store.Window {
	t.Helper()
	w, err := s.Window(webhook, from, limit, store.AllParts)
	if err != nil {
		t.Fatalf("Window(%s, %d, %d): %v", webhook, from, limit, err)
	}
	return w
}

func queueOf(t *testing.T, s deliver.Store, webhook string) store.Queue {
	t.Helper()
	q, err := s.Queue(webhook)
	if err != nil {
		t.Fatalf("Queue(%s): %v", webhook, err)
	}
	return q
}

// The durable position is the end of the latest transaction stored, and
// survives a reopen; a new store has none.
func testDurablePosition(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	if d := s.Durable(); d != 0 {
		t.Fatalf("a new store's durable position is %d, want 0", d)
	}
	commit(t, s, to(tx(100, 101, 0, 1), "h"))
	commit(t, s, to(tx(200, 250, 0, 2), "h"), to(tx(300, 310, 0, 1), "h"))
	if d := s.Durable(); d != 310 {
		t.Fatalf("durable position %d after commits ending at 101, 250 and 310; want 310", d)
	}
	s = reopen(t, s, o)
	if d := s.Durable(); d != 310 {
		t.Fatalf("durable position %d after a reopen, want 310", d)
	}
	if q := queueOf(t, s, "h"); q.Pending != 4 {
		t.Fatalf("%d pending after a reopen, want 4", q.Pending)
	}
}

// PostgreSQL sends transactions again after a reconnect: a transaction that
// ends at or before the durable position, or a chunk of one committed
// before it, queues nothing; the chunks of a big transaction stored before
// a crash are not queued twice when it comes again whole.
func testRepeatsQueueNothing(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	commit(t, s, to(tx(100, 110, 0, 2), "h"))
	if got := commit(t, s, to(tx(100, 110, 0, 2), "h")); len(got) != 0 {
		t.Errorf("the same transaction again queued %d deliveries", len(got))
	}
	if got := commit(t, s, to(tx(90, 0, 0, 2), "h")); len(got) != 0 {
		t.Errorf("a chunk committed before the durable position queued %d deliveries", len(got))
	}
	s = reopen(t, s, o)
	if got := commit(t, s, to(tx(100, 110, 0, 2), "h")); len(got) != 0 {
		t.Errorf("after a reopen the same transaction again queued %d deliveries", len(got))
	}
	// The big transaction's chunk was stored; it comes again, then its rest.
	got := commit(t, s, to(tx(150, 0, 0, 3), "h"))
	got = append(got, commit(t, s, to(tx(150, 0, 0, 3), "h"), to(tx(150, 160, 3, 2), "h"))...)
	if len(got) != 5 {
		t.Errorf("the big transaction's 5 events queued %d deliveries, want 5 (its first chunk came twice)", len(got))
	}
	if q := queueOf(t, s, "h"); q.Pending != 7 {
		t.Errorf("%d pending, want 7 (2 + 5)", q.Pending)
	}
}

// Deliveries are queued in the order of the batch, with sequences that grow
// per webhook; the queued event is the Append's own, shared by its webhooks.
func testQueueOrder(t *testing.T, newPlace NewPlace) {
	s := open(t, newPlace(t, 10))
	a := to(tx(100, 101, 0, 3), "a", "b")
	a.Targets[1] = []string{"b"} // the second event is b's alone
	queued := commit(t, s, a, to(tx(200, 201, 0, 1), "a"))
	var got []string
	last := map[string]uint64{}
	byEvent := map[string]*cdc.Event{}
	for _, q := range queued {
		got = append(got, q.Webhook+":"+q.Record.EventID)
		if q.Seq <= last[q.Webhook] {
			t.Errorf("%s: sequence %d after %d", q.Webhook, q.Seq, last[q.Webhook])
		}
		last[q.Webhook] = q.Seq
		if q.Record.Status != store.StatusPending || q.Record.Event != "orders.create" || q.Record.EntityID == "" {
			t.Errorf("queued record %+v: want pending, orders.create, with its entity id", q.Record)
		}
		if prev, ok := byEvent[q.Record.EventID]; ok && prev != q.Event {
			t.Errorf("event %s: its webhooks got different copies", q.Record.EventID)
		}
		byEvent[q.Record.EventID] = q.Event
	}
	e := func(lsn uint64, i uint32) string { return cdc.EventID(lsn, i) }
	want := []string{"a:" + e(100, 0), "b:" + e(100, 0), "b:" + e(100, 1), "a:" + e(100, 2), "b:" + e(100, 2), "a:" + e(200, 0)}
	if !slices.Equal(got, want) {
		t.Errorf("queued %v, want %v", got, want)
	}
	if queued[0].Append != 0 || queued[len(queued)-1].Append != 1 {
		t.Errorf("Append indexes %d..%d, want 0..1", queued[0].Append, queued[len(queued)-1].Append)
	}
	if names, err := s.Queues(); err != nil || !slices.Equal(slices.Sorted(slices.Values(names)), []string{"a", "b"}) {
		t.Errorf("Queues() = %v, %v; want a and b", names, err)
	}
}

// A window reads pending deliveries in queue order with their events, from
// a sequence on, up to a limit; it says where it stopped and whether more
// follow.
func testWindow(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	queued := commit(t, s, to(tx(100, 101, 0, 5), "h"))
	record(t, s, outcome(pendingOf(queued[1]), "h", 200, time.Now(), store.StatusSuccess))
	s = reopen(t, s, o) // what a window reads is on disk

	w := window(t, s, "h", queued[0].Seq, 2)
	if len(w.Pending) != 2 || w.Exhausted || w.Pending[0].Seq != queued[0].Seq || w.Pending[1].Seq != queued[2].Seq {
		t.Fatalf("first window %+v: want deliveries 0 and 2 (1 is done), more after", w)
	}
	if w.Last != queued[2].Seq {
		t.Errorf("first window's last %d, want %d", w.Last, queued[2].Seq)
	}
	ev := w.Pending[1].Event
	if ev == nil || ev.ID != queued[2].Record.EventID || ev.Data["note"] != "row 2" || ev.Data["id"] != int64(2) ||
		ev.EntityID != "e2" || !ev.CommitTime.Equal(time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("window's event %+v is not the one stored", ev)
	}
	w = window(t, s, "h", w.Last+1, 10)
	if len(w.Pending) != 2 || !w.Exhausted || w.Last != queued[4].Seq {
		t.Errorf("second window %+v: want deliveries 3 and 4, exhausted, last %d", w, queued[4].Seq)
	}
	w = window(t, s, "h", queued[4].Seq+1, 10)
	if len(w.Pending) != 0 || !w.Exhausted || w.Last != queued[4].Seq {
		t.Errorf("a window past the end %+v: want empty, exhausted, last %d", w, queued[4].Seq)
	}
	if w := window(t, s, "nobody", 1, 10); len(w.Pending) != 0 || !w.Exhausted {
		t.Errorf("an unknown webhook's window %+v, want empty", w)
	}
}

// A window of some partitions holds the pending deliveries of those
// partitions' entity ids only, in queue order; all partitions hold all.
func testWindowOfParts(t *testing.T, newPlace NewPlace) {
	s := open(t, newPlace(t, 10))
	queued := commit(t, s, to(tx(100, 101, 0, 40), "h"))
	var some store.Parts
	for p := range store.Partitions / 2 {
		some |= 1 << p
	}
	var want []uint64
	for _, q := range queued {
		if some.Has(store.PartOf(q.Record.EntityID)) {
			want = append(want, q.Seq)
		}
	}
	if len(want) == 0 || len(want) == len(queued) {
		t.Fatalf("the entity ids fall %d of %d into the first half of the partitions: the test needs some in each half", len(want), len(queued))
	}
	w, err := s.Window("h", 1, 100, some)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, p := range w.Pending {
		got = append(got, p.Seq)
	}
	if !slices.Equal(got, want) || !w.Exhausted {
		t.Errorf("window of half the partitions: %v (exhausted %v), want %v", got, w.Exhausted, want)
	}
	if w, err := s.Window("h", 1, 100, 0); err != nil || len(w.Pending) != 0 {
		t.Errorf("window of no partition: %d deliveries, %v; want none", len(w.Pending), err)
	}
	if w := window(t, s, "h", 1, 100); len(w.Pending) != len(queued) {
		t.Errorf("window of all partitions: %d deliveries, want %d", len(w.Pending), len(queued))
	}
}

// An attempt's outcome is stored: a retry keeps the delivery pending with
// its attempts and due time; a failure ends it and is listed as failed; a
// success leaves the queue. Counters are kept per webhook.
func testOutcomes(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	queued := commit(t, s, to(tx(100, 101, 0, 3), "h"))
	at := time.Now().UTC().Truncate(time.Millisecond)
	retry := outcome(pendingOf(queued[0]), "h", 503, at, store.StatusPending)
	failed := outcome(pendingOf(queued[1]), "h", 500, at, store.StatusFailed)
	if _, err := s.Commit(&store.Batch{
		Outcomes: []store.Outcome{retry, failed, outcome(pendingOf(queued[2]), "h", 200, at, store.StatusSuccess)},
		Counters: map[string]store.Counters{"h": {LatestStatus: 200, SuccessfulCalls: 1, TotalCalls: 3, LastAttemptAt: at}},
	}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, o)
	q := queueOf(t, s, "h")
	if q.Pending != 1 || q.Failed != 1 || q.Counters.TotalCalls != 3 || q.Counters.SuccessfulCalls != 1 || q.Counters.LatestStatus != 200 || !q.Counters.LastAttemptAt.Equal(at) {
		t.Errorf("queue %+v: want 1 pending, 1 failed, counters 1 of 3, latest 200 at %v", q, at)
	}
	w := window(t, s, "h", 1, 10)
	if len(w.Pending) != 1 || w.Pending[0].Seq != queued[0].Seq {
		t.Fatalf("window %+v: want the retried delivery alone", w)
	}
	rec := w.Pending[0].Record
	if len(rec.Attempts) != 1 || rec.Attempts[0].Status != 503 || !rec.Due.Equal(at.Add(time.Minute)) {
		t.Errorf("retried delivery %+v: want its 503 attempt and due at %v", rec, at.Add(time.Minute))
	}
	all, err := s.Deliveries("h", 10, "")
	if err != nil || len(all) != 3 || all[0].Seq != queued[2].Seq || all[2].Seq != queued[0].Seq {
		t.Fatalf("Deliveries = %+v, %v: want all 3, newest first", all, err)
	}
	if all[0].Record.Status != store.StatusSuccess || all[1].Record.Status != store.StatusFailed || all[0].Event == nil {
		t.Errorf("Deliveries' statuses %s, %s and event %v", all[0].Record.Status, all[1].Record.Status, all[0].Event)
	}
	if f, err := s.Deliveries("h", 10, store.StatusFailed); err != nil || len(f) != 1 || f[0].Seq != queued[1].Seq {
		t.Errorf("failed deliveries %+v, %v: want delivery 1", f, err)
	}
	if one, err := s.Deliveries("h", 1, ""); err != nil || len(one) != 1 || one[0].Seq != queued[2].Seq {
		t.Errorf("Deliveries with limit 1 = %+v, %v: want the newest", one, err)
	}
	if seqs, err := s.FailedSince("h", at); err != nil || !slices.Equal(seqs, []uint64{queued[1].Seq}) {
		t.Errorf("FailedSince(at) = %v, %v; want [%d]", seqs, err, queued[1].Seq)
	}
	if seqs, err := s.FailedSince("h", at.Add(time.Second)); err != nil || len(seqs) != 0 {
		t.Errorf("FailedSince(after) = %v, %v; want none", seqs, err)
	}
}

// The retention keeps the newest completed deliveries per webhook; failed
// ones stay whatever their age.
func testRetention(t *testing.T, newPlace NewPlace) {
	s := open(t, newPlace(t, 3))
	queued := commit(t, s, to(tx(100, 101, 0, 8), "h"))
	record(t, s, outcome(pendingOf(queued[0]), "h", 500, time.Now(), store.StatusFailed))
	for _, q := range queued[1:] { // one commit each, as deliveries complete
		record(t, s, outcome(pendingOf(q), "h", 200, time.Now(), store.StatusSuccess))
	}
	done, err := s.Deliveries("h", 100, store.StatusSuccess)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, d := range done {
		seqs = append(seqs, d.Seq)
	}
	if want := []uint64{queued[7].Seq, queued[6].Seq, queued[5].Seq}; !slices.Equal(seqs, want) {
		t.Errorf("kept successes %v, want the newest three %v", seqs, want)
	}
	if q := queueOf(t, s, "h"); q.Failed != 1 || q.Pending != 0 {
		t.Errorf("queue %+v: the failed delivery must stay", q)
	}
}

// A past delivery is queued again as a new one at the end of the queue: a
// failed one is replaced, a successful one stays in the history; a pending
// one is refused, an unknown one is not found.
func testRedeliver(t *testing.T, newPlace NewPlace) {
	s := open(t, newPlace(t, 10))
	queued := commit(t, s, to(tx(100, 101, 0, 4), "h"))
	record(t, s,
		outcome(pendingOf(queued[0]), "h", 200, time.Now(), store.StatusSuccess),
		outcome(pendingOf(queued[1]), "h", 500, time.Now(), store.StatusFailed),
		outcome(pendingOf(queued[2]), "h", 500, time.Now(), store.StatusFailed))
	if _, err := s.Redeliver("h", queued[3].Seq); !errors.Is(err, store.ErrPending) {
		t.Errorf("redelivering a pending delivery: %v, want ErrPending", err)
	}
	if _, err := s.Redeliver("h", queued[3].Seq+100); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("redelivering an unknown delivery: %v, want ErrNotFound", err)
	}
	r, err := s.Redeliver("h", queued[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if r.WasFailed || r.Seq <= queued[3].Seq || r.Record.Status != store.StatusPending || r.Record.EventID != queued[0].Record.EventID ||
		len(r.Record.Attempts) != 0 || r.Event == nil || r.Event.Data["note"] != "row 0" {
		t.Errorf("redelivered success %+v (%+v): want a new pending delivery of the same event at the end", r, r.Record)
	}
	rs, err := s.RedeliverFailed("h", []uint64{queued[1].Seq, queued[2].Seq, queued[3].Seq})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || !rs[0].WasFailed || !rs[1].WasFailed || rs[0].Record.EventID != queued[1].Record.EventID || rs[1].Seq <= rs[0].Seq {
		t.Errorf("RedeliverFailed = %+v: want the two failed ones, in order, the pending one left out", rs)
	}
	q := queueOf(t, s, "h")
	if q.Failed != 0 || q.Pending != 4 {
		t.Errorf("queue %+v: want 0 failed, 4 pending (1 left, 3 again)", q)
	}
	if all, _ := s.Deliveries("h", 100, ""); len(all) != 5 {
		t.Errorf("%d deliveries kept, want 5: the success stays in the history, the failures are replaced", len(all))
	}
	w := window(t, s, "h", 1, 10)
	if len(w.Pending) != 4 || w.Pending[3].Event == nil || w.Pending[3].Event.ID != queued[2].Record.EventID {
		t.Errorf("window after redelivery %+v: want 4 pending, the last of event %s", w, queued[2].Record.EventID)
	}
}

// Dropping a webhook's queue removes its deliveries and counters; another
// webhook's deliveries of the same events stay readable.
func testDropQueue(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	queued := commit(t, s, to(tx(100, 101, 0, 3), "a", "b"))
	if _, err := s.Commit(&store.Batch{Counters: map[string]store.Counters{"a": {TotalCalls: 7}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DropQueue("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DropQueue("nobody"); err != nil {
		t.Errorf("dropping a queue that does not exist: %v", err)
	}
	s = reopen(t, s, o)
	if names, err := s.Queues(); err != nil || !slices.Equal(names, []string{"b"}) {
		t.Errorf("Queues() = %v, %v after a's drop; want [b]", names, err)
	}
	if q := queueOf(t, s, "a"); q.Pending != 0 || q.Counters.TotalCalls != 0 {
		t.Errorf("a's queue after its drop: %+v", q)
	}
	w := window(t, s, "b", 1, 10)
	if len(w.Pending) != 3 {
		t.Fatalf("b has %d pending after a's drop, want 3", len(w.Pending))
	}
	for i, p := range w.Pending {
		if p.Event == nil || p.Event.ID != queued[2*i].Record.EventID {
			t.Errorf("b's delivery %d: event %v, want %s", i, p.Event, queued[2*i].Record.EventID)
		}
	}
}

// The definitions of API webhooks are kept as given, by name.
func testWebhookDefinitions(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	if defs, err := s.WebhookDefs(); err != nil || len(defs) != 0 {
		t.Fatalf("a new store's definitions: %v, %v", defs, err)
	}
	for name, def := range map[string]string{"a": `{"name":"a"}`, "b": `{"name":"b","url":"http://x/"}`} {
		if err := s.PutWebhook(name, []byte(def)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutWebhook("a", []byte(`{"name":"a","v":2}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook("b"); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, o)
	defs, err := s.WebhookDefs()
	if err != nil || len(defs) != 1 || string(defs["a"]) != `{"name":"a","v":2}` {
		t.Errorf("definitions after a reopen: %q, %v; want a's second alone", defs, err)
	}
}

// A config webhook switched off stays off while its URL is the same.
func testSwitchedOff(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	if err := s.SetSwitchedOff("h", "http://a/", true); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, o)
	for _, c := range []struct {
		name, url string
		want      bool
	}{{"h", "http://a/", true}, {"h", "http://b/", false}, {"other", "http://a/", false}} {
		if off, err := s.SwitchedOff(c.name, c.url); err != nil || off != c.want {
			t.Errorf("SwitchedOff(%s, %s) = %v, %v; want %v", c.name, c.url, off, err, c.want)
		}
	}
	if err := s.SetSwitchedOff("h", "http://a/", false); err != nil {
		t.Fatal(err)
	}
	if off, err := s.SwitchedOff("h", "http://a/"); err != nil || off {
		t.Errorf("switched on again, SwitchedOff = %v, %v", off, err)
	}
}

// A backfill's rows carry no WAL position and are never repeats; its state
// is stored with its rows and dropped at its end.
func testBackfill(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	commit(t, s, to(tx(500, 510, 0, 1), "h"))
	rows := to(&cdc.Tx{Events: tx(400, 0, 0, 2).Events}, "h") // ids from a point before the durable one
	rows.Backfill, rows.BackfillState = true, []byte(`{"table":"orders","after":"e1"}`)
	if got := commit(t, s, rows); len(got) != 2 {
		t.Fatalf("backfill rows queued %d deliveries, want 2", len(got))
	}
	if d := s.Durable(); d != 510 {
		t.Errorf("durable position %d after a backfill, want 510", d)
	}
	s = reopen(t, s, o)
	if st, err := s.Backfill(); err != nil || string(st) != `{"table":"orders","after":"e1"}` {
		t.Errorf("backfill state %q, %v", st, err)
	}
	if err := s.SetBackfill([]byte(`{"v":2}`)); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Backfill(); string(st) != `{"v":2}` {
		t.Errorf("backfill state %q after SetBackfill", st)
	}
	commit(t, s, store.Append{Tx: &cdc.Tx{}, Backfill: true, EndBackfill: true})
	if st, err := s.Backfill(); err != nil || st != nil {
		t.Errorf("backfill state %q, %v after its end, want none", st, err)
	}
	if q := queueOf(t, s, "h"); q.Pending != 3 {
		t.Errorf("%d pending, want 3 (a change and two rows)", q.Pending)
	}
}

// find reads every page of q's answer, checking each page's cursor, and
// returns the sequences found, in order.
func find(t *testing.T, s deliver.Store, webhook string, q store.Query) []uint64 {
	t.Helper()
	var seqs []uint64
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("Find(%+v): no end after 100 pages", q)
		}
		p, err := s.Find(webhook, q)
		if err != nil {
			t.Fatalf("Find(%+v): %v", q, err)
		}
		for _, d := range p.Deliveries {
			if d.Record == nil || d.Event == nil || d.Event.ID != d.Record.EventID {
				t.Errorf("Find(%+v): delivery %d without its record or event: %+v", q, d.Seq, d)
			}
			if q.Before != 0 && d.Seq >= q.Before {
				t.Errorf("Find(%+v): delivery %d is not before the cursor", q, d.Seq)
			}
			seqs = append(seqs, d.Seq)
		}
		if n := len(p.Deliveries); n > 0 && n == q.Limit && p.Next != p.Deliveries[n-1].Seq {
			t.Errorf("Find(%+v): a full page's Next is %d, want its last sequence %d", q, p.Next, p.Deliveries[n-1].Seq)
		}
		if p.Next == 0 {
			return seqs
		}
		q.Before = p.Next
	}
}

// Find answers a search of the history a page at a time, newest first:
// by status, action, entity id, event id and time queued, all together,
// from a cursor on; another webhook's deliveries of the same events are
// not in it.
func testFind(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	first := tx(100, 101, 0, 9)
	for i := range first.Events {
		ev := &first.Events[i]
		ev.EntityID = fmt.Sprint(40 + i%3) // 40, 41, 42, 40, ...
		if i%2 == 1 {
			ev.Action = cdc.ActionModify
		}
	}
	queued := commit(t, s, to(first, "h", "other"))
	var mine []store.Queued // h's, in queue order
	for _, q := range queued {
		if q.Webhook == "h" {
			mine = append(mine, q)
		}
	}
	// Queued a moment later: a time range between the two commits.
	mid := time.Now().UTC()
	for time.Since(mid) < 2*time.Millisecond {
	}
	second := tx(200, 201, 0, 3)
	for i := range second.Events {
		second.Events[i].EntityID = "42"
	}
	for _, q := range commit(t, s, to(second, "h")) {
		mine = append(mine, q)
	}
	at := time.Now().UTC()
	record(t, s,
		outcome(pendingOf(mine[2]), "h", 500, at, store.StatusFailed),
		outcome(pendingOf(mine[5]), "h", 200, at, store.StatusSuccess),
		outcome(pendingOf(mine[11]), "h", 500, at, store.StatusFailed),
	)
	s = reopen(t, s, o)

	// want is h's deliveries that pass keep, newest first.
	want := func(keep func(i int, q store.Queued) bool) []uint64 {
		var out []uint64
		for i := len(mine) - 1; i >= 0; i-- {
			if keep(i, mine[i]) {
				out = append(out, mine[i].Seq)
			}
		}
		return out
	}
	status := func(i int) string {
		switch i {
		case 2, 11:
			return store.StatusFailed
		case 5:
			return store.StatusSuccess
		}
		return store.StatusPending
	}
	for _, tc := range []struct {
		name string
		q    store.Query
		keep func(i int, q store.Queued) bool
	}{
		{"all in pages of 5", store.Query{Limit: 5}, func(int, store.Queued) bool { return true }},
		{"all in one page", store.Query{Limit: 100}, func(int, store.Queued) bool { return true }},
		{"entity 42", store.Query{EntityID: "42", Limit: 2}, func(_ int, q store.Queued) bool { return q.Record.EntityID == "42" }},
		{"failed", store.Query{Status: store.StatusFailed}, func(i int, _ store.Queued) bool { return status(i) == store.StatusFailed }},
		{"failed of entity 42", store.Query{Status: store.StatusFailed, EntityID: "42"}, func(i int, q store.Queued) bool {
			return status(i) == store.StatusFailed && q.Record.EntityID == "42"
		}},
		{"modify", store.Query{Action: cdc.ActionModify, Limit: 3}, func(_ int, q store.Queued) bool { return q.Event.Action == cdc.ActionModify }},
		{"an event id", store.Query{EventID: mine[4].Record.EventID}, func(i int, _ store.Queued) bool { return i == 4 }},
		{"an event id of another webhook's only", store.Query{EventID: "nothing"}, func(int, store.Queued) bool { return false }},
		{"queued since mid", store.Query{Since: mid}, func(i int, _ store.Queued) bool { return i >= 9 }},
		{"queued until mid", store.Query{Until: mid, Limit: 4}, func(i int, _ store.Queued) bool { return i < 9 }},
		{"before the 8th", store.Query{Before: mine[7].Seq, Limit: 3}, func(i int, _ store.Queued) bool { return i < 7 }},
		{"entity 40, create, before the 10th", store.Query{EntityID: "40", Action: cdc.ActionCreate, Before: mine[9].Seq}, func(i int, q store.Queued) bool {
			return i < 9 && q.Record.EntityID == "40" && q.Event.Action == cdc.ActionCreate
		}},
	} {
		got := find(t, s, "h", tc.q)
		if w := want(tc.keep); !slices.Equal(got, w) {
			t.Errorf("%s: found %v, want %v", tc.name, got, w)
		}
	}
	p, err := s.Find("h", store.Query{EventID: mine[2].Record.EventID, Status: store.StatusFailed})
	if err != nil || len(p.Deliveries) != 1 || p.Next != 0 {
		t.Fatalf("failed deliveries of event %s: %+v, %v; want mine[2] alone", mine[2].Record.EventID, p, err)
	}
	d := p.Deliveries[0]
	if d.Seq != mine[2].Seq || len(d.Record.Attempts) != 1 || d.Record.Attempts[0].Status != 500 || d.Event.EntityID != "42" {
		t.Errorf("found %d %+v; want delivery %d with its 500 attempt and event", d.Seq, d.Record, mine[2].Seq)
	}
	if p, err := s.Find("nobody", store.Query{}); err != nil || len(p.Deliveries) != 0 || p.Next != 0 {
		t.Errorf("Find of a webhook without deliveries: %+v, %v", p, err)
	}
}

// A webhook's chart buckets are stored with a commit (a batch of nothing
// else is one too), replaced slot by slot, survive a reopen and go with
// the webhook's queue.
func testCharts(t *testing.T, newPlace NewPlace) {
	o := newPlace(t, 10)
	s := open(t, o)
	bucket := func(start int64, ok, failed uint32) store.Bucket {
		b := store.Bucket{Start: start, OK: ok, Failed: failed, Depth: ok + failed}
		b.Durations[store.DurationBin(3*time.Millisecond)] = ok
		b.Durations[store.DurationBins-1] = failed
		return b
	}
	if _, err := s.Commit(&store.Batch{Charts: []store.ChartBucket{
		{Webhook: "h", Slot: 0, Bucket: bucket(60, 5, 1)},
		{Webhook: "h", Slot: store.ChartSlots - 1, Bucket: bucket(900, 7, 0)},
		{Webhook: "x", Slot: 3, Bucket: bucket(180, 1, 1)},
	}}); err != nil {
		t.Fatal(err)
	}
	commit(t, s, to(tx(100, 101, 0, 1), "h"))
	if _, err := s.Commit(&store.Batch{Charts: []store.ChartBucket{{Webhook: "h", Slot: 0, Bucket: bucket(3660, 2, 9)}}}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, o)
	var want store.Chart
	want[0], want[store.ChartSlots-1] = bucket(3660, 2, 9), bucket(900, 7, 0)
	if got, err := s.Chart("h"); err != nil || got != want {
		t.Errorf("h's chart: %v\n%+v\nwant\n%+v", err, got, want)
	}
	if got, err := s.Chart("x"); err != nil || got[3] != bucket(180, 1, 1) {
		t.Errorf("x's slot 3: %+v, %v", got[3], err)
	}
	if got, err := s.Chart("nobody"); err != nil || got != (store.Chart{}) {
		t.Errorf("the chart of a webhook never charted: %v, want empty buckets", err)
	}
	if err := s.DropQueue("h"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Chart("h"); err != nil || got != (store.Chart{}) {
		t.Errorf("h's chart after its queue was dropped: %v, want empty buckets", err)
	}
	if got, err := s.Chart("x"); err != nil || got[3].OK != 1 {
		t.Errorf("x's chart after h's drop: %+v, %v", got[3], err)
	}
}
