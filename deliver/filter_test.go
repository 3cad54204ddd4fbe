package deliver_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

// payment is a modify of public.payments whose amount is numeric and
// whose paid_at is timestamptz, as cdc decodes them: text, with Types.
func payment() cdc.Event {
	return cdc.Event{
		ID: cdc.EventID(0x100, 1), Schema: "public", Table: "payments", Action: cdc.ActionModify,
		Data: map[string]any{"id": int64(7), "status": "paid", "amount": "1234.50", "fee": 2.5,
			"paid_at": "2026-11-29T01:02:03.5Z", "archived": false, "meta": json.RawMessage(`{"source":"web"}`), "note": nil},
		Old:     map[string]any{"id": int64(7), "status": "open", "amount": "1234.50", "archived": false},
		Changed: []string{"status", "paid_at"},
		Types:   map[string]string{"amount": cdc.TypeNumeric, "paid_at": cdc.TypeTimestamptz},
		Entity:  "payment",
	}
}

func TestWhen(t *testing.T) {
	del := payment()
	del.Action, del.Data, del.Changed = cdc.ActionDelete, map[string]any{"id": int64(7)}, nil
	del.Old = map[string]any{"id": int64(7)} // REPLICA IDENTITY DEFAULT
	create := payment()
	create.Action, create.Old, create.Changed = cdc.ActionCreate, nil, nil
	tests := []struct {
		expr    string
		ev      cdc.Event
		want    bool
		wantErr string
	}{
		// The three examples.
		{expr: "action == 'modify' && 'status' in changed && new.status == 'paid'", ev: payment(), want: true},
		{expr: "action == 'modify' && 'status' in changed && new.status == 'paid'", ev: create, want: false},
		{expr: "new.amount > 1000", ev: payment(), want: true},
		{expr: "new.amount > 2000", ev: payment(), want: false},
		{expr: "action != 'delete' || old.archived == false", ev: create, want: true},
		{expr: "action != 'delete' || old.archived == false", ev: del, wantErr: "no such key: archived"},
		// Numbers as numbers: numeric against a double, float, equality across types.
		{expr: "new.amount == 1234.5", ev: payment(), want: true},
		{expr: "new.fee < 3 && new.id == 7", ev: payment(), want: true},
		// timestamptz as a timestamp, not as text.
		{expr: "new.paid_at > timestamp('2026-11-29T01:02:03Z')", ev: payment(), want: true},
		{expr: "new.paid_at < timestamp('2026-11-29T01:02:03.4Z')", ev: payment(), want: false},
		// jsonb as what it holds; null; the other variables.
		{expr: "new.meta.source == 'web' && new.note == null", ev: payment(), want: true},
		{expr: "table == 'public.payments' && entity == 'payment' && size(changed) == 2", ev: payment(), want: true},
		{expr: "'status' in changed", ev: create, want: false},
		// Run-time errors: a missing column, a null compared with a number.
		{expr: "new.nope == 1", ev: payment(), wantErr: "no such key: nope"},
		{expr: "new.note > 1", ev: payment(), wantErr: "no such overload"},
	}
	for _, tt := range tests {
		f, err := deliver.CompileWhen(tt.expr)
		if err != nil {
			t.Fatalf("CompileWhen(%q): %v", tt.expr, err)
		}
		got, err := f.Match(&tt.ev)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q on %s: err = %v, want %q", tt.expr, tt.ev.Action, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%q on %s: %v", tt.expr, tt.ev.Action, err)
		case got != tt.want:
			t.Errorf("%q on %s = %v, want %v", tt.expr, tt.ev.Action, got, tt.want)
		}
	}
}

func TestWhenCompileErrors(t *testing.T) {
	for expr, want := range map[string]string{
		"action == 'modify' && nwe.status == 'paid'": "1:23: undeclared reference to 'nwe'",
		"new.amount >":      "1:13: Syntax error",
		"action":            "must be true or false, not string",
		"size(changed) + 1": "must be true or false, not int",
		"action == 1":       "no matching overload",
	} {
		_, err := deliver.CompileWhen(expr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CompileWhen(%q) = %v, want %q", expr, err, want)
		}
	}
	w := hook("pay", "http://127.0.0.1:1/", func(w *deliver.Webhook) { w.When = "nwe.status == 'paid'" })
	if err := w.Validate(); err == nil || !strings.HasPrefix(err.Error(), "when: 1:1: undeclared reference to 'nwe'") {
		t.Errorf("Validate = %v", err)
	}
}

// TestWhenDelivers: only the events the when passes are sent, in one
// webhook beside one without a when; an event it fails on is not sent,
// counts in walhook_filter_errors_total and is the webhook's last filter
// error, and the webhook goes on with the next event.
func TestWhenDelivers(t *testing.T) {
	rcPaid := newReceiver(t, nil)
	rcAll := newReceiver(t, nil)
	e := newEnv(t, []string{"paid", "all"})
	e.setHooks(t,
		hook("paid", rcPaid.URL, func(w *deliver.Webhook) { w.When = "new.status == 'paid' && new.amount > 1000" }),
		hook("all", rcAll.URL))
	open, small, broken, paid := payment(), payment(), payment(), payment()
	open.Data["status"] = "open"
	small.Data["amount"] = "999.99"
	delete(broken.Data, "status")
	for i, ev := range []*cdc.Event{&open, &small, &broken, &paid} {
		ev.ID, ev.Index, ev.CommitLSN = cdc.EventID(0x100, uint32(i)), uint32(i), 0x100
	}
	e.write(t, txOf(0x100, open, small, broken, paid))
	waitFor(t, 10*time.Second, "all four at the webhook without when", func() bool { return rcAll.count() == 4 })
	waitFor(t, 10*time.Second, "the paid one", func() bool { return rcPaid.count() >= 1 })
	e.write(t, txOf(0x200, func() cdc.Event { ev := payment(); ev.ID, ev.CommitLSN = cdc.EventID(0x200, 0), 0x200; return ev }()))
	waitFor(t, 10*time.Second, "the next paid one", func() bool { return rcPaid.count() >= 2 })
	if n := rcPaid.count(); n != 2 {
		t.Fatalf("paid got %d requests, want 2", n)
	}
	for i, want := range []string{paid.ID, cdc.EventID(0x200, 0)} {
		if got := rcPaid.requests()[i].Header.Get("Webhook-Id"); got != want {
			t.Errorf("paid request %d is %s, want %s", i, got, want)
		}
	}
	if got := filterErrorsMetric(t, e, "paid"); got != 1 {
		t.Errorf("walhook_filter_errors_total{webhook=paid} = %v, want 1", got)
	}
	st := e.q.Stats("paid")
	if st.FilterErrors != 1 || st.LastFilterError == nil || st.LastFilterError.EventID != broken.ID ||
		!strings.Contains(st.LastFilterError.Error, "no such key: status") {
		t.Errorf("stats = %d, %+v; want 1 error on %s (no such key: status)", st.FilterErrors, st.LastFilterError, broken.ID)
	}
	if st := e.q.Stats("all"); st.FilterErrors != 0 || st.LastFilterError != nil {
		t.Errorf("webhook without when has filter errors: %+v", st)
	}
}

// filterErrorsMetric reads walhook_filter_errors_total of a webhook.
func filterErrorsMetric(t *testing.T, e *env, webhook string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "walhook_filter_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "webhook" && l.GetValue() == webhook {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
