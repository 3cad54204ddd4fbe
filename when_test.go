package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const whenSchema = `
CREATE TABLE pay_default (id int PRIMARY KEY, status text, amount numeric(12,2), paid_at timestamptz, archived bool);
CREATE TABLE pay_full (LIKE pay_default INCLUDING ALL);
ALTER TABLE pay_full REPLICA IDENTITY FULL;`

const whenHooks = `
[[webhook]]
name = "paid"
url = "%[1]s/paid"
events = ["public.pay_default", "public.pay_full"]
when = "action == 'modify' && 'status' in changed && new.status == 'paid'"
retry_mode = "test"

[[webhook]]
name = "big"
url = "%[1]s/big"
events = ["public.pay_default", "public.pay_full"]
when = "new.amount > 1000 && new.paid_at > timestamp('2026-01-01T00:00:00Z')"
retry_mode = "test"

[[webhook]]
name = "keep"
url = "%[1]s/keep"
events = ["public.pay_default", "public.pay_full"]
when = "action != 'delete' || old.archived == false"
exclude_columns = ["amount"]
retry_mode = "test"

[[webhook]]
name = "all"
url = "%[1]s/all"
events = ["public.pay_default", "public.pay_full"]
retry_mode = "test"
`

// TestWhenPostgres: when over real changes, under REPLICA IDENTITY DEFAULT
// and FULL: changed and old are there only under FULL; numeric compares
// as a number and timestamptz as a time; an expression that fails on an
// event (a column the DEFAULT delete does not carry) leaves it out and
// counts, and the webhook goes on.
func TestWhenPostgres(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, whenSchema)
	h.start(fmt.Sprintf(whenHooks, rc.URL))
	for _, tbl := range []string{"pay_default", "pay_full"} {
		h.exec(`INSERT INTO ` + tbl + ` VALUES (1, 'open', 500.00, '2026-03-01 10:00+02', false), (2, 'open', 1500.50, '2026-03-01', false)`)
		h.exec(`UPDATE ` + tbl + ` SET status = 'paid' WHERE id = 1`)
		h.exec(`UPDATE ` + tbl + ` SET amount = 999.99 WHERE id = 2`)
		h.exec(`DELETE FROM ` + tbl + ` WHERE id = 1`)
		// 2025-12-31 23:59:59-01 is 2026-01-01 00:59:59 UTC: after the bound.
		h.exec(`INSERT INTO ` + tbl + ` VALUES (3, 'open', 1000.01, '2025-12-31 23:59:59-01', true)`)
	}
	// The webhooks' targets are decided as each transaction commits to the
	// queue: once "all" has the last change and every queue is empty, the
	// others have all they will get.
	got := func(path string) []string {
		var out []string
		for _, r := range rc.requests() {
			var b struct {
				Table, Action string
				Data          map[string]any
			}
			if json.Unmarshal(r.Body, &b) != nil || r.Header.Get("X-Walhook-Webhook") != path {
				continue
			}
			out = append(out, fmt.Sprintf("%s %s %v", b.Table, b.Action, b.Data["id"]))
		}
		slices.Sort(out)
		return out
	}
	waitFor(t, "every change at all", 30*time.Second, func() bool { return len(got("all")) == 12 })
	waitFor(t, "empty queues", 30*time.Second, func() bool {
		for _, n := range []string{"paid", "big", "keep", "all"} {
			if h.app.queue.Stats(n).Queued > 0 {
				return false
			}
		}
		return true
	})
	want := map[string][]string{
		// Under DEFAULT an UPDATE has no old row, so changed is empty.
		"paid": {"public.pay_full modify 1"},
		"big": {"public.pay_default create 2", "public.pay_default create 3",
			"public.pay_full create 2", "public.pay_full create 3"},
		// Under DEFAULT the delete's old row is its key: old.archived fails.
		"keep": {"public.pay_default create 1", "public.pay_default create 2", "public.pay_default create 3",
			"public.pay_default modify 1", "public.pay_default modify 2",
			"public.pay_full create 1", "public.pay_full create 2", "public.pay_full create 3",
			"public.pay_full delete 1", "public.pay_full modify 1", "public.pay_full modify 2"},
	}
	for name, w := range want {
		if g := got(name); !slices.Equal(g, w) {
			t.Errorf("%s got\n  %v\nwant\n  %v", name, g, w)
		}
	}
	// The DEFAULT delete's data is its key: new.amount fails for big too.
	for name, n := range map[string]int64{"paid": 0, "big": 1, "keep": 1, "all": 0} {
		st := h.app.queue.Stats(name)
		if st.FilterErrors != n {
			t.Errorf("%s: %d filter errors (last %+v), want %d", name, st.FilterErrors, st.LastFilterError, n)
		}
		if n > 0 && (st.LastFilterError == nil || st.LastFilterError.Error != "no such key: "+map[string]string{"big": "amount", "keep": "archived"}[name]) {
			t.Errorf("%s: last filter error %+v", name, st.LastFilterError)
		}
	}
	// keep leaves the amount out, all sends it (but for the DEFAULT delete).
	withAmount := 0
	for _, r := range rc.requests() {
		hook, has := r.Header.Get("X-Walhook-Webhook"), strings.Contains(string(r.Body), `"amount"`)
		if hook == "keep" && has {
			t.Errorf("keep sent the amount: %s", r.Body)
		}
		if hook == "all" && has {
			withAmount++
		}
	}
	if withAmount != 11 {
		t.Errorf("all sent the amount %d times, want 11", withAmount)
	}
}
