package admin_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// TestHistorySearch: the history API finds every delivery of an entity and
// of a status across pages past 100, by the cursor the answer gives; the
// charts and the overview count the same deliveries, also after a restart.
func TestHistorySearch(t *testing.T) {
	e := newEnv(t)
	// Entity 43's deliveries fail, the others succeed.
	rc := testkit.NewReceiver(t, func(_ int, r testkit.Request) testkit.Response {
		if strings.Contains(string(r.Body), `"entity_id":"43"`) {
			return testkit.Response{Status: 500}
		}
		return testkit.Response{}
	})
	e.mustDo(201, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "s", "url": %q, "events": ["employee"], "max_attempts": 1}`, rc.URL))
	const n = 150 // 120 succeed, 30 fail; the retention keeps 100 successes
	tx := &cdc.Tx{CommitLSN: 10, EndLSN: 11, CommitTime: time.Now().UTC()}
	for i := range n {
		tx.Events = append(tx.Events, cdc.Event{
			ID: cdc.EventID(10, uint32(i)), CommitLSN: 10, Index: uint32(i), CommitTime: tx.CommitTime,
			Schema: "public", Table: "employees", Action: cdc.ActionCreate, EntityID: fmt.Sprint(40 + i%5),
			Data: map[string]any{"id": int64(i)}, Key: []string{"id"},
		})
	}
	written := time.Now()
	if err := e.q.Write(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	var hook webhook
	waitFor(t, "every delivery done", func() bool {
		e.mustDo(200, "GET", "/api/webhooks/s", "").json(t, &hook)
		if hook.Stats.TotalCalls != n || hook.Stats.Queued != 0 {
			return false
		}
		// The counters are the dispatcher's; the history is the store's,
		// which the outcomes' commit reaches a moment later.
		var pending []delivery
		e.mustDo(200, "GET", "/api/webhooks/s/deliveries?status=pending&limit=1", "").json(t, &pending)
		return len(pending) == 0
	})
	// all reads every page of a search and returns its deliveries.
	all := func(query string) []delivery {
		t.Helper()
		var out []delivery
		path := "/api/webhooks/s/deliveries?" + query
		for pages := 0; path != ""; pages++ {
			if pages > 50 {
				t.Fatalf("%s: no end after 50 pages", query)
			}
			var page []delivery
			r := e.mustDo(200, "GET", path, "")
			r.json(t, &page)
			out = append(out, page...)
			path = ""
			if next := r.header.Get("X-Walhook-Next-Before"); next != "" {
				if !strings.Contains(r.header.Get("Link"), "before="+next) {
					t.Errorf("Link %q does not carry the cursor %s", r.header.Get("Link"), next)
				}
				path = "/api/webhooks/s/deliveries?" + query + "&before=" + next
			}
		}
		seen := map[string]bool{}
		for _, d := range out {
			if seen[d.ID] {
				t.Errorf("%s: delivery %s on two pages", query, d.ID)
			}
			seen[d.ID] = true
		}
		return out
	}
	// The retention keeps the latest 100 successes and every failure.
	if got := all("limit=40"); len(got) != 130 {
		t.Errorf("every delivery in pages of 40: %d, want 130 (100 kept successes, 30 failures)", len(got))
	}
	failed := all("status=failed&limit=7")
	for _, d := range failed {
		if d.Status != "failed" || d.EntityID != "43" || len(d.Attempts) != 1 || d.Attempts[0].Status != 500 {
			t.Errorf("a failed delivery found: %+v", d)
		}
	}
	if len(failed) != 30 {
		t.Errorf("%d failed deliveries found, want 30", len(failed))
	}
	if got := all("entity_id=43&action=create"); len(got) != 30 {
		t.Errorf("%d deliveries of entity 43, want its 30", len(got))
	}
	if got := all("entity_id=41&limit=1000"); len(got) == 0 || len(got) > 30 {
		t.Errorf("%d deliveries of entity 41 kept, want some of its 30", len(got))
	}
	one := all("event_id=" + cdc.EventID(10, 3))
	if len(one) != 1 || one[0].EntityID != "43" {
		t.Fatalf("by event id: %+v", one)
	}
	var got delivery
	e.mustDo(200, "GET", "/api/deliveries/"+one[0].ID, "").json(t, &got)
	if got.ID != one[0].ID || !strings.Contains(got.Payload, `"entity_id":"43"`) || len(got.Attempts) != 1 {
		t.Errorf("GET /api/deliveries/%s = %+v", one[0].ID, got)
	}
	e.mustDo(404, "GET", "/api/deliveries/s-00000000000fffff", "")
	if got := all("until=2000-01-01T00:00:00Z"); len(got) != 0 {
		t.Errorf("%d deliveries queued before 2000", len(got))
	}
	if got := all("since=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + "&entity_id=43"); len(got) != 30 {
		t.Errorf("%d deliveries of entity 43 in the last hour, want 30", len(got))
	}
	for _, bad := range []string{"before=zz", "action=update", "since=yesterday", "status=lost"} {
		e.mustDo(400, "GET", "/api/webhooks/s/deliveries?"+bad, "")
	}

	// The charts and the overview count them, and the charts survive a
	// restart.
	sums := func(span string) (delivered, failed uint32) {
		var c struct {
			Interval int `json:"interval_seconds"`
			Points   []struct {
				Delivered, Failed uint32
				P99MS             float64 `json:"p99_ms"`
			}
		}
		e.mustDo(200, "GET", "/api/webhooks/s/chart?span="+span, "").json(t, &c)
		for _, p := range c.Points {
			delivered, failed = delivered+p.Delivered, failed+p.Failed
			if p.Delivered+p.Failed > 0 && p.P99MS <= 0 {
				t.Errorf("%s: an interval with attempts and no p99: %+v", span, p)
			}
		}
		return delivered, failed
	}
	for _, span := range []string{"1h", "24h"} {
		if d, f := sums(span); d != 120 || f != 30 {
			t.Errorf("chart %s: %d delivered, %d failed; want 120, 30", span, d, f)
		}
	}
	var o struct {
		Queued, Failed int
		Rate           float64 `json:"events_per_second"`
	}
	e.mustDo(200, "GET", "/api/overview", "").json(t, &o)
	if o.Queued != 0 || o.Failed != 30 {
		t.Errorf("overview %+v: want 0 queued, 30 failed", o)
	}
	// The rate is of the last minute: the events count while it lasts.
	if within := time.Since(written) < 55*time.Second; within && o.Rate != float64(n)/60 {
		t.Errorf("overview: %g events/s, want %g", o.Rate, float64(n)/60)
	}
	index := e.mustDo(200, "GET", "/", "").body
	if !strings.Contains(index, `id="overview"`) || !strings.Contains(index, "last hour: 120 delivered, 30 failed attempts") || !strings.Contains(index, `class="bad"`) {
		t.Error("the index lacks the overview strip or the sparkline's figures")
	}
	e.reopen()
	for _, span := range []string{"1h", "24h"} {
		if d, f := sums(span); d != 120 || f != 30 {
			t.Errorf("chart %s after a restart: %d delivered, %d failed; want 120, 30", span, d, f)
		}
	}
	e.mustDo(400, "GET", "/api/webhooks/s/chart?span=7d", "")
	e.mustDo(404, "GET", "/api/webhooks/nope/chart", "")
}
