package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestOrderUnderRandomFailures: a receiver fails about 30% of requests at
// random; per row, the successful receipts still come in commit order (a
// later change waits for the earlier one), and everything arrives.
func TestOrderUnderRandomFailures(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var (
		mu       sync.Mutex
		rng      = rand.New(rand.NewPCG(seed, 3))
		failures int
	)
	rc := newKeyRecorder(nil)
	// Refusals drawn from the seed, then the key recorder (see keyReceiver).
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The last of max_attempts always succeeds, so no change fails for
		// good and every one must arrive.
		attempt, _ := strconv.Atoi(r.Header.Get("X-Walhook-Attempt"))
		mu.Lock()
		fail := attempt < 8 && rng.Float64() < 0.3
		if fail {
			failures++
		}
		mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		rc.serve(w, r)
	}))
	t.Cleanup(srv.Close)

	h := newHarness(t, itemsSchema)
	h.start(fmt.Sprintf(`
[[webhook]]
name = "items"
url = %q
events = ["public.items"]
retry_mode = "test"
max_attempts = 8
`, srv.URL))
	c := newChurn(20, seed)
	if err := c.run(context.Background(), h.db, 300); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every change", 4*time.Minute, func() bool { return rc.missing(c.keys) == 0 })
	rc.verify(t, c.keys)
	mu.Lock()
	defer mu.Unlock()
	if failures == 0 {
		t.Fatal("the receiver never failed a request: the test proved nothing")
	}
	t.Logf("%d requests failed", failures)
	if st := h.app.Queue().Stats("items"); st.Failed != 0 {
		t.Errorf("%d deliveries failed for good", st.Failed)
	}
}

// TestOrderVerdict: the order check the crash, restart and failure tests
// share sees a delete that arrives before the change it removed.
func TestOrderVerdict(t *testing.T) {
	change := func(action string, seq int64) rowChange {
		return rowChange{fmt.Sprintf("%s:%d", action, seq), changeRank(action, seq)}
	}
	for _, tc := range []struct {
		name    string
		changes []rowChange
		want    int // outOfOrder's answer
	}{
		{"in order", []rowChange{change("create", 3), change("modify", 9), change("delete", 9), change("create", 12)}, 0},
		{"delete before its modify", []rowChange{change("create", 3), change("delete", 9), change("modify", 9)}, 2},
		{"delete before the insert it removed", []rowChange{change("delete", 3), change("create", 3)}, 1},
		{"modify before its create", []rowChange{change("modify", 9), change("create", 3)}, 1},
		{"insert after a delete before that delete", []rowChange{change("create", 12), change("delete", 9)}, 1},
	} {
		if got := outOfOrder(tc.changes); got != tc.want {
			t.Errorf("%s: outOfOrder = %d, want %d", tc.name, got, tc.want)
		}
	}
}
