package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"walhook/internal/testkit"
)

// TestBacklogDrains: with the endpoint down, 20,000 deliveries queue up on
// disk; walhook restarts; the endpoint comes up and every one arrives.
func TestBacklogDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("queues 20,000 deliveries")
	}
	const rows = 20_000
	addr := freeAddr(t) // nothing listens here yet
	h := newHarness(t, thingsSchema)
	// Production backoff with a 1s timeout: 2s, then 17s, so no delivery
	// runs out of attempts while the endpoint is down.
	hooks := faultHook("down", "http://"+addr+"/hook", "retry_mode = \"production\"\ntimeout_ms = 1000\nmax_attempts = 8")
	hooks = strings.Replace(hooks, "retry_mode = \"test\"\n", "", 1)
	h.start(hooks)
	begin := time.Now()
	for i := 0; i < rows; i += 5000 {
		h.exec(`INSERT INTO things SELECT g, 'v' FROM generate_series($1::int, $2::int) g`, i+1, i+5000)
	}
	q := h.app.Queue()
	waitFor(t, "every delivery queued", 2*time.Minute, func() bool { return q.Stats("down").Queued == rows })
	t.Logf("%d queued after %s", rows, time.Since(begin).Round(time.Millisecond))
	h.stop()

	h.start(hooks)
	up := time.Now()
	if got := h.app.Queue().Stats("down").Queued; got != rows {
		t.Fatalf("%d queued after the restart, want %d", got, rows)
	}
	rc := &receiver{testkit.ListenReceiver(t, addr, nil)}
	waitFor(t, "the backlog to drain", 5*time.Minute, func() bool { return len(entityIDs(rc)) == rows })
	t.Logf("drained %s after the restart", time.Since(up).Round(time.Millisecond))
	q = h.app.Queue()
	waitFor(t, "the queue empty", time.Minute, func() bool { return q.Stats("down").Queued == 0 })
	got := entityIDs(rc)
	for i := 1; i <= rows; i++ {
		if got[strconv.Itoa(i)] == 0 {
			t.Fatalf("row %d never arrived", i)
		}
	}
	if st := q.Stats("down"); st.Failed != 0 {
		t.Errorf("%d deliveries failed for good", st.Failed)
	}
}

// TestRetentionKeepsFailed: completed deliveries are pruned to the latest
// [store] retention per webhook; failed ones stay.
func TestRetentionKeepsFailed(t *testing.T) {
	rc := newReceiver(t, func(_ int, r request) int {
		if id, _ := strconv.Atoi(r.Header.Get("X-Walhook-Entity-Id")); id%5 == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	h := newHarness(t, thingsSchema)
	text := fmt.Sprintf("%s[store]\ndir = %q\nretention = 5\n[log]\ndir = %q\n[admin]\nlisten = \"\"\n%s",
		postgresSection(h.dsn), filepath.Join(h.dir, "data"), filepath.Join(h.dir, "logs"), faultHook("h", rc.URL, "max_attempts = 1"))
	cfg, err := ParseConfig(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	running := startApp(t, cfg, AppOptions{})
	running.waitReady()
	app := running.app
	insertThings(h, 1, 30)
	q := app.Queue()
	waitFor(t, "30 calls", time.Minute, func() bool { st := q.Stats("h"); return st.TotalCalls == 30 && st.Queued == 0 })
	var success, failed []string
	waitFor(t, "pruned to 5 completed", 30*time.Second, func() bool {
		success, failed = nil, nil
		for _, d := range deliveries(t, q, "h", "") {
			switch d.Status {
			case "success":
				success = append(success, d.EntityID)
			case "failed":
				failed = append(failed, d.EntityID)
			}
		}
		return len(success) == 5 && len(failed) == 6
	})
	if want := []string{"29", "28", "27", "26", "24"}; fmt.Sprint(success) != fmt.Sprint(want) {
		// Rows are inserted one per transaction, so commit order is row order.
		t.Errorf("kept completed %v, want the newest %v", success, want)
	}
	if want := []string{"30", "25", "20", "15", "10", "5"}; fmt.Sprint(failed) != fmt.Sprint(want) {
		t.Errorf("kept failed %v, want %v", failed, want)
	}
}
