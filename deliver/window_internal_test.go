package deliver

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver/store"
	"walhook/internal/testkit"
)

// A backlog far larger than the window stays on disk and drains in order.
func TestBacklogStaysOnDisk(t *testing.T) {
	const total = 3 * windowSize
	var got atomic.Int64
	release := make(chan struct{})
	// Not testkit's Receiver: it holds every request at a gate and keeps
	// nothing but a count of 3 windows' worth of them.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		got.Add(1)
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	q := openWith(t, t.TempDir(), srv.URL, []string{"h"}, func(o *Options) { o.Concurrency = 8 })
	for i := range total / 100 {
		tx := &cdc.Tx{CommitLSN: uint64(i + 1), EndLSN: uint64(i + 2), CommitTime: time.Now()}
		for j := range 100 {
			tx.Events = append(tx.Events, cdc.Event{
				ID: cdc.EventID(uint64(i+1), uint32(j)), Schema: "public", Table: "t", Action: cdc.ActionCreate,
				Data: map[string]any{"id": int64(i*100 + j)}, Entity: "t", EntityID: fmt.Sprint(i*100 + j),
			})
		}
		if err := q.Write(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
	}
	if !eventually(10*time.Second, func() bool { return q.Stats("h").Queued == total }) {
		t.Fatalf("queued = %d, want %d", q.Stats("h").Queued, total)
	}
	h := q.dispatcherOf("h")
	h.mu.Lock()
	inWindow := h.inWindow
	h.mu.Unlock()
	if inWindow > windowSize {
		t.Errorf("%d deliveries in memory, window is %d", inWindow, windowSize)
	}
	close(release)
	if !eventually(30*time.Second, func() bool { return q.Stats("h").SuccessfulCalls == total }) {
		t.Fatalf("delivered %d of %d", q.Stats("h").SuccessfulCalls, total)
	}
	if n := got.Load(); n != total {
		t.Errorf("receiver got %d, want %d", n, total)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"30", 30 * time.Second}, {"-1", 0}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestBackoffProduction(t *testing.T) {
	h := &dispatcher{w: Webhook{RetryMode: RetryProduction, Timeout: 10 * time.Second}}
	for n, want := range map[int]time.Duration{1: 11 * time.Second, 2: 26 * time.Second, 4: 266 * time.Second} {
		if got := h.backoff(n, 0); got != want {
			t.Errorf("backoff(%d) = %s, want %s", n, got, want)
		}
	}
	if got := h.backoff(1, time.Hour); got != time.Hour {
		t.Errorf("backoff with Retry-After 1h = %s", got)
	}
}

func BenchmarkEncodePayload(b *testing.B) {
	w := Webhook{Name: "hr-sync", Method: "POST", ContentType: "json", IncludeEntity: true}
	enc, err := newEncoder(&w, 0)
	if err != nil {
		b.Fatal(err)
	}
	ev := sampleEvent()
	for i := range 20 {
		ev.Data[fmt.Sprintf("col%d", i)] = strings.Repeat("x", 20)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc.encode(&event{Event: &ev}); err != nil {
			b.Fatal(err)
		}
	}
}

// A failing commit holds Durable back, shows in Healthy and is retried.
func TestCommitFailureRetried(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	q := openWith(t, t.TempDir(), srv.URL, []string{"h"}, nil)
	diskFull := fmt.Errorf("no space left on device")
	q.failCommit.Store(&diskFull)
	tx := &cdc.Tx{CommitLSN: 10, EndLSN: 11, CommitTime: time.Now(), Events: []cdc.Event{{
		ID: cdc.EventID(10, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, EntityID: "1",
	}}}
	if err := q.Write(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return q.Healthy() != nil }) {
		t.Fatal("Healthy stays nil while commits fail")
	}
	if d := q.Durable(); d != 0 {
		t.Errorf("Durable = %d while the commit fails", d)
	}
	q.failCommit.Store(nil)
	if !eventually(5*time.Second, func() bool { return q.Durable() == 11 && q.Healthy() == nil && q.Stats("h").SuccessfulCalls == 1 }) {
		t.Fatalf("after recovery: Durable %d, Healthy %v, stats %+v", q.Durable(), q.Healthy(), q.Stats("h"))
	}
}

// Writes keep coming while the window drains and refills from disk: every
// delivery arrives, none is left behind on disk when the writes stop.
func TestWritesWhileRefilling(t *testing.T) {
	const txs, per = 60, 100
	srv := testkit.NewReceiver(t, nil)
	q := openWith(t, t.TempDir(), srv.URL, []string{"h"}, func(o *Options) { o.Concurrency = 8 })
	for i := range txs {
		tx := &cdc.Tx{CommitLSN: uint64(i + 1), EndLSN: uint64(i + 2), CommitTime: time.Now()}
		for j := range per {
			tx.Events = append(tx.Events, cdc.Event{
				ID: cdc.EventID(uint64(i+1), uint32(j)), Schema: "public", Table: "t", Action: cdc.ActionCreate,
				Data: map[string]any{"id": int64(i*per + j)}, Entity: "t", EntityID: fmt.Sprint(i*per + j),
			})
		}
		if err := q.Write(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			time.Sleep(5 * time.Millisecond) // let the window drain between bursts
		}
	}
	if !eventually(30*time.Second, func() bool { return q.Stats("h").SuccessfulCalls >= txs*per }) {
		st := q.Stats("h")
		t.Fatalf("%d of %d delivered, %d still queued", st.SuccessfulCalls, txs*per, st.Queued)
	}
	seen := map[string]bool{}
	for _, r := range srv.Requests() {
		seen[r.Header.Get("Webhook-Id")] = true
	}
	if len(seen) != txs*per {
		t.Errorf("%d distinct events arrived, want %d", len(seen), txs*per)
	}
}

// A delivery committed while a refill reads the store is not in what the
// refill reads; it must not be left on disk when the refill ends.
func TestEnqueuedDuringRefill(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	st, err := store.OpenBolt(dir, store.BoltOptions{Retention: 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var (
		q     *Queue
		armed atomic.Bool // DuringWindow runs for every read: act on the refill's only
		once  sync.Once
	)
	write := func(lsn uint64) {
		tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now(), Events: []cdc.Event{{
			ID: cdc.EventID(lsn, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, Entity: "t", EntityID: fmt.Sprint(lsn),
		}}}
		if err := q.Write(t.Context(), tx); err != nil {
			t.Error(err)
		}
	}
	st.DuringWindow = func() {
		if !armed.Load() {
			return
		}
		once.Do(func() {
			write(20)
			// Enqueued, and left on disk: the refill is still reading.
			if !eventually(10*time.Second, func() bool { return q.Stats("h").Queued == 1 }) {
				t.Error("the write was not enqueued during the refill")
			}
		})
	}
	q = openWith(t, dir, srv.URL, []string{"h"}, func(o *Options) { o.Store = st })
	h := q.dispatcherOf("h")
	armed.Store(true)
	h.mu.Lock()
	h.diskMore = true // as when a backlog waits: the scheduler refills
	h.mu.Unlock()
	h.poke()
	if !eventually(10*time.Second, func() bool { return q.Stats("h").SuccessfulCalls == 1 }) {
		t.Fatalf("the delivery committed during the refill was not sent: %+v", q.Stats("h"))
	}
}

// TestWindowOfBatches: a webhook that batches holds four batches per
// worker in memory, within windowSize and maxWindow.
func TestWindowOfBatches(t *testing.T) {
	for _, tc := range []struct {
		batch, inFlight, workers, want int
	}{
		{1, 0, 16, windowSize},
		{10, 0, 16, windowSize},  // 640
		{100, 0, 16, 6400},       // four batches for each of 16 workers
		{100, 2, 16, windowSize}, // max_in_flight 2: 800
		{20, 0, 8, windowSize},   // -concurrency 8: 640
		{100, 0, 8, 3200},        // -concurrency 8
		{MaxBatchSize, 0, 16, maxWindow},
	} {
		h := &dispatcher{w: Webhook{BatchSize: tc.batch, MaxInFlight: tc.inFlight}, q: &Queue{opts: Options{Concurrency: tc.workers}}}
		if got := h.windowLocked(); got != tc.want {
			t.Errorf("batch_size %d, max_in_flight %d, %d workers: window %d, want %d", tc.batch, tc.inFlight, tc.workers, got, tc.want)
		}
	}
}
