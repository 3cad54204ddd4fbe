package deliver

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// TestRecoverInChunks: Recover queues again, a chunk to a transaction,
// exactly the deliveries that failed since the time given, and each is
// sent again once.
func TestRecoverInChunks(t *testing.T) {
	defer func(n int) { recoverChunk = n }(recoverChunk)
	recoverChunk = 3

	var ok atomic.Bool
	srv := testkit.NewReceiver(t, func(int, testkit.Request) testkit.Response {
		if !ok.Load() {
			return testkit.Response{Status: http.StatusInternalServerError}
		}
		return testkit.Response{}
	})
	// sent is event id → 2xx answers.
	sent := func() map[string]int {
		m := map[string]int{}
		for _, r := range srv.Requests() {
			if r.Status == http.StatusOK {
				m[r.Header.Get("Webhook-Id")]++
			}
		}
		return m
	}
	q := openWith(t, t.TempDir(), srv.URL, nil, nil)
	q.opts.Route = func(*cdc.Event) []string { return []string{"h"} }
	w := hookDef(srv.URL, "h")
	w.MaxAttempts = 1
	if err := q.SetConfigWebhooks([]Webhook{w}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	write := func(from, to int) {
		lsn := uint64(from+1) * 100
		tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now()}
		for i := from; i < to; i++ {
			id := cdc.EventID(lsn, uint32(i-from))
			ids = append(ids, id)
			tx.Events = append(tx.Events, cdc.Event{ID: id, Schema: "public", Table: "t", Action: cdc.ActionCreate, Entity: "t", EntityID: strconv.Itoa(i)})
		}
		if err := q.Write(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
		// Failed, and so stored (outcomes are committed within 50 ms).
		if !eventually(30*time.Second, func() bool {
			ds, err := q.Deliveries("h", 100, StatusFailed)
			return err == nil && len(ds) == to
		}) {
			t.Fatalf("want %d failed deliveries: %+v", to, q.Stats("h"))
		}
	}
	write(0, 4) // attempted, failed and stored before since
	since := time.Now()
	write(4, 10)

	ok.Store(true)
	recovered := func(since time.Time, want int, total int) {
		t.Helper()
		n, err := q.Recover("h", since)
		if err != nil || n != want {
			t.Fatalf("Recover = %d, %v; want %d", n, err, want)
		}
		if !eventually(30*time.Second, func() bool { return q.Stats("h").SuccessfulCalls == int64(total) }) {
			t.Fatalf("want %d successes: %+v", total, q.Stats("h"))
		}
	}
	recovered(since, 6, 6) // two full chunks
	if st := q.Stats("h"); st.Failed != 4 || st.Queued != 0 {
		t.Errorf("after recovering 6 of 10: %+v, want 4 failed and none queued", st)
	}
	got := sent()
	for i, id := range ids {
		if want := 0; i >= 4 {
			want = 1
			if got[id] != want {
				t.Errorf("event %d (%s) was sent %d times, want %d", i, id, got[id], want)
			}
		} else if got[id] != want {
			t.Errorf("event %d (%s), failed before since, was sent %d times, want %d", i, id, got[id], want)
		}
	}
	recovered(time.Time{}, 4, 10) // a full chunk and a part
	got = sent()
	if len(got) != 10 || slices.ContainsFunc(ids, func(id string) bool { return got[id] != 1 }) {
		t.Errorf("each event should have been sent once after the two recoveries: %v", got)
	}
	if st := q.Stats("h"); st.Failed != 0 {
		t.Errorf("after recovering all: %+v, want none failed", st)
	}
}

// BenchmarkRecover queues again WALHOOK_RECOVER_DELIVERIES (default
// 10,000) deliveries that failed for good:
//
//	go test -run XXX -bench Recover -benchtime 1x ./deliver/
func BenchmarkRecover(b *testing.B) {
	n := envInt(b, "WALHOOK_RECOVER_DELIVERIES", 10_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	for b.Loop() {
		b.StopTimer()
		q := openWith(b, b.TempDir(), srv.URL, []string{"h"}, nil)
		w := hookDef(srv.URL, "h")
		w.MaxAttempts = 1
		if err := q.SetConfigWebhooks([]Webhook{w}); err != nil {
			b.Fatal(err)
		}
		writeBacklog(b, q, n, nil)
		if !eventually(10*time.Minute, func() bool {
			ds, err := q.Deliveries("h", n, StatusFailed)
			return err == nil && len(ds) == n
		}) {
			b.Fatal("the deliveries did not fail")
		}
		q.SetActive("h", false) // nothing sent while Recover is timed
		b.StartTimer()
		got, err := q.Recover("h", time.Time{})
		b.StopTimer()
		if err != nil || got != n {
			b.Fatalf("Recover = %d, %v; want %d", got, err, n)
		}
		q.Close()
		b.StartTimer()
	}
}
