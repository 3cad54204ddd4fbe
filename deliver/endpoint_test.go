package deliver_test

import (
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

// TestRateLimit: a webhook with rate_limit = 50 sends at most 50 requests
// a second (5 % over, plus its burst of one) while a webhook without a
// limit, fed the same events, runs at full speed: when the limited one's
// receiver has seen 200 requests (about 3 s), the other's has seen many
// more. WALHOOK_RATE_SECONDS=10 measures over 10 s instead of 3.
func TestRateLimit(t *testing.T) {
	const rate, burst = 50, 1
	secs := 3
	if s := os.Getenv("WALHOOK_RATE_SECONDS"); s != "" {
		var err error
		if secs, err = strconv.Atoi(s); err != nil {
			t.Fatalf("WALHOOK_RATE_SECONDS: %v", err)
		}
	}
	slow := newReceiver(t, nil)
	fast := newReceiver(t, nil)
	e := newEnv(t, []string{"slow", "fast"})
	e.setHooks(t,
		hook("slow", slow.URL, func(w *deliver.Webhook) { w.RateLimit = rate }),
		hook("fast", fast.URL))

	n := burst + rate*secs
	evs := make([]cdc.Event, 0, 10*n)
	for i := range cap(evs) {
		evs = append(evs, event(100, uint32(i), int64(i), "a@example.com"))
	}
	e.write(t, txOf(100, evs...))
	waitFor(t, time.Duration(2*secs+30)*time.Second, "the limited webhook's requests", func() bool { return slow.count() >= n })
	fastN := fast.count()

	reqs := slow.requests()
	got := len(reqs)
	span := reqs[got-1].At.Sub(reqs[0].At).Seconds()
	// Receive times jitter by a few requests at either end.
	if allowed := 1.05*rate*span + burst + 3; float64(got) > allowed {
		t.Errorf("the receiver saw %d requests in %.2f s (%.1f/s), want at most %.0f: rate %d/s, burst %d, 5 %% over",
			got, span, float64(got)/span, allowed, rate, burst)
	}
	t.Logf("rate_limit = %d: %d requests in %.2f s: %.1f/s in all, %.2f/s after the burst of %d; the webhook without a limit sent %d meanwhile",
		rate, got, span, float64(got)/span, float64(got-burst)/span, burst, fastN)
	if fastN < 2*got {
		t.Errorf("the webhook without a limit sent %d requests while the limited one sent %d, want at least twice as many", fastN, got)
	}
}

// TestMaxInFlight: with max_in_flight = 2 and 4 workers the receiver
// never has more than 2 of the webhook's requests at once. Each request
// waits (up to a second) for a second one, so that the limit is reached
// and anything beyond it would be seen.
func TestMaxInFlight(t *testing.T) {
	const limit = 2
	var cur, most atomic.Int32
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		c := cur.Add(1)
		defer cur.Add(-1)
		for m := most.Load(); c > m && !most.CompareAndSwap(m, c); m = most.Load() {
		}
		for deadline := time.Now().Add(time.Second); cur.Load() < limit && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond) // room for a third, were it let through
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"}) // 4 workers
	e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) { w.MaxInFlight = limit }))
	evs := make([]cdc.Event, 40)
	for i := range evs {
		evs[i] = event(100, uint32(i), int64(i), "a@example.com")
	}
	e.write(t, txOf(100, evs...))
	waitFor(t, 30*time.Second, "every delivery", func() bool { return e.q.Stats("h").SuccessfulCalls == int64(len(evs)) })
	if m := most.Load(); m != limit {
		t.Errorf("at most %d requests at once, want %d (max_in_flight)", m, limit)
	}
}

// TestDisableAfter: with disable_after = "2s" and an endpoint that fails,
// a 2xx in between starts the count afresh; once every attempt has failed
// for 2 s the webhook is switched off as by a 410: kept off across a
// restart, the reason in its stats, OnFailed told with the delivery that
// still waits; switched on again it delivers.
func TestDisableAfter(t *testing.T) {
	var healthy atomic.Bool
	entity2 := make(chan struct{})
	rc := newReceiver(t, func(r received, _ int) (int, http.Header, string) {
		if healthy.Load() || r.Header.Get("X-Walhook-Entity-Id") == "2" {
			return 200, nil, "ok"
		}
		if r.Header.Get("X-Walhook-Attempt") == "2" {
			<-entity2 // after entity 2's success
		}
		return 500, nil, "down"
	})
	e := newEnv(t, []string{"h"})
	def := hook("h", rc.URL, func(w *deliver.Webhook) { w.DisableAfter = 2 * time.Second; w.MaxAttempts = 8 })
	e.setHooks(t, def)

	e.write(t, txOf(100, event(100, 0, 1, "a@example.com")))
	waitFor(t, 10*time.Second, "entity 1's first attempt", func() bool { return e.q.Stats("h").TotalCalls == 1 })
	e.write(t, txOf(200, event(200, 0, 2, "b@example.com")))
	waitFor(t, 10*time.Second, "entity 2's success", func() bool { return e.q.Stats("h").SuccessfulCalls == 1 })
	close(entity2)

	// Entity 1's second attempt, 3 s after its first: 2 s of failures,
	// but for the success in between.
	waitFor(t, 10*time.Second, "entity 1's second attempt", func() bool { return e.q.Stats("h").TotalCalls == 3 })
	if w, _ := e.q.Webhook("h"); !w.Active {
		t.Fatalf("switched off although a 2xx came 3 s ago: %+v", e.q.Stats("h"))
	}

	// Its third, 3 s after its second: switched off.
	var d deliver.Delivery
	select {
	case d = <-e.failed:
	case <-time.After(15 * time.Second):
		t.Fatalf("OnFailed was not called; stats %+v", e.q.Stats("h"))
	}
	const reason = "switched off after 2s of failures"
	if d.SwitchedOff != reason || d.Status != deliver.StatusPending || d.EntityID != "1" || len(d.Attempts) != 3 {
		t.Errorf("OnFailed got %s %s entity %s, %d attempts, switched_off %q; want entity 1 pending, 3 attempts, %q",
			d.ID, d.Status, d.EntityID, len(d.Attempts), d.SwitchedOff, reason)
	}
	st := e.q.Stats("h")
	if w, _ := e.q.Webhook("h"); w.Active || st.SwitchedOff != reason || st.TotalCalls != 4 || st.Queued != 1 {
		t.Errorf("after the switch-off: active %v, stats %+v; want off, %q, 4 calls, 1 queued", w.Active, st, reason)
	}

	e.reopen(t)
	e.setHooks(t, def)
	if w, _ := e.q.Webhook("h"); w.Active {
		t.Error("switched on again by a restart")
	}
	healthy.Store(true)
	if _, err := e.q.SetActive("h", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "entity 1 delivered once switched on", func() bool { return e.q.Stats("h").Queued == 0 })
	if st := e.q.Stats("h"); st.SwitchedOff != "" || st.Failed != 0 {
		t.Errorf("switched on: stats %+v, want no reason and nothing failed", st)
	}
}

// TestDisableAfterAcrossRestart: the run of failures disable_after counts
// outlives a restart, so a webhook failing before and after one is
// switched off by the first failure past disable_after however often
// walhook restarts; the reason stays in its stats across the next restart,
// and switching it on forgets both.
func TestDisableAfterAcrossRestart(t *testing.T) {
	var healthy atomic.Bool
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		if healthy.Load() {
			return 200, nil, "ok"
		}
		return 500, nil, "down"
	})
	e := newEnv(t, []string{"h"})
	const after = time.Second // the least disable_after
	def := hook("h", rc.URL, func(w *deliver.Webhook) { w.DisableAfter = after; w.MaxAttempts = 1 })
	e.setHooks(t, def)
	e.write(t, txOf(100, event(100, 0, 1, "a@example.com")))
	waitFor(t, 10*time.Second, "the first failure", func() bool { return e.q.Stats("h").Failed == 1 })
	since := e.q.Stats("h").FailingSince
	if since.IsZero() {
		t.Fatal("no failing_since after a failed attempt")
	}
	e.reopen(t)
	e.setHooks(t, def)
	if got := e.q.Stats("h").FailingSince; !got.Equal(since) {
		t.Fatalf("failing_since after a restart: %v, want %v", got, since)
	}
	// The next failure must come past disable_after, counted from the
	// first: a bound on the clock, not a wait for something to happen.
	time.Sleep(time.Until(since.Add(after + time.Millisecond)))
	e.write(t, txOf(200, event(200, 0, 2, "b@example.com")))
	waitFor(t, 10*time.Second, "switched off", func() bool { w, _ := e.q.Webhook("h"); return !w.Active })
	reason := "switched off after " + deliver.FormatDuration(after) + " of failures"

	e.reopen(t)
	e.setHooks(t, def)
	if w, _ := e.q.Webhook("h"); w.Active {
		t.Fatal("switched on by a restart")
	}
	if st := e.q.Stats("h"); st.SwitchedOff != reason {
		t.Errorf("switched_off after a restart: %q, want %q", st.SwitchedOff, reason)
	}
	if _, err := e.q.SetActive("h", true); err != nil {
		t.Fatal(err)
	}
	healthy.Store(true)
	e.reopen(t) // the switch-on's forgetting is stored too
	e.setHooks(t, def)
	if st := e.q.Stats("h"); st.SwitchedOff != "" || !st.FailingSince.IsZero() {
		t.Errorf("switched on, then restarted: switched_off %q, failing_since %v; want neither", st.SwitchedOff, st.FailingSince)
	}
}
