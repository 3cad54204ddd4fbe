package deliver_test

import (
	"strings"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

// salaried is sampleModify with a salary that changed with the email.
func salaried() cdc.Event {
	ev := sampleModify()
	ev.Data["salary"] = "5000.00"
	ev.Old["salary"] = "4000.00"
	ev.Changed = []string{"email", "salary"}
	return ev
}

// TestColumns: columns and exclude_columns shape data, old and changed of
// every body kind; the entity id and URL stay when their column is left
// out, and the signature verifies the body as sent.
func TestColumns(t *testing.T) {
	tests := []struct {
		golden string
		mod    func(*deliver.Webhook)
	}{
		{"columns-exclude.json", func(w *deliver.Webhook) { w.ExcludeColumns = []string{"salary"} }},
		{"columns-only.json", func(w *deliver.Webhook) { w.Columns = []string{"email", "manager"} }},
		{"columns-only.form", func(w *deliver.Webhook) {
			w.Columns = []string{"email", "manager"}
			w.ContentType = "form"
		}},
		{"columns-exclude.template", func(w *deliver.Webhook) {
			w.ExcludeColumns = []string{"salary", "profile"}
			w.Template = `{"id": {{json .EntityID}}, "data": {{json .Data}}, "old": {{json .Old}}, "changed": {{json .Changed}}}`
		}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := deliverOne(t, salaried(), tt.mod, func(w *deliver.Webhook) {
				w.Secrets, w.Signature = []string{"s3cret"}, deliver.SignatureSHA256
			})
			golden(t, tt.golden, r.Body)
			verify(t, deliver.SignatureSHA256, []string{"s3cret"}, r)
			if got := r.Header.Get("X-Walhook-Entity-Id"); got != "130333" {
				t.Errorf("X-Walhook-Entity-Id = %q, want 130333", got)
			}
		})
	}
}

func TestColumnsValidate(t *testing.T) {
	for _, tt := range []struct {
		mod  func(*deliver.Webhook)
		want string
	}{
		{func(w *deliver.Webhook) { w.Columns, w.ExcludeColumns = []string{"id"}, []string{"salary"} }, "columns: give columns or exclude_columns, not both"},
		{func(w *deliver.Webhook) { w.ExcludeColumns = []string{"salary", ""} }, "exclude_columns: empty column name"},
		{func(w *deliver.Webhook) { w.Columns = []string{"id", "id"} }, `columns: "id" twice`},
	} {
		w := hook("hr", "http://127.0.0.1:1/", tt.mod)
		if err := w.Validate(); err == nil || err.Error() != tt.want {
			t.Errorf("Validate = %v, want %q", err, tt.want)
		}
	}
}

// TestColumnsShared: the webhooks of one event share its JSON body; one
// that leaves a column out gets its own, and the others still get it whole.
func TestColumnsShared(t *testing.T) {
	rcAll, rcSome := newReceiver(t, nil), newReceiver(t, nil)
	e := newEnv(t, []string{"all", "some", "all2"})
	e.setHooks(t, hook("all", rcAll.URL), hook("some", rcSome.URL, func(w *deliver.Webhook) { w.ExcludeColumns = []string{"salary"} }),
		hook("all2", rcAll.URL))
	e.write(t, txOf(0x16B3A80, salaried()))
	waitFor(t, 10*time.Second, "three requests", func() bool { return rcAll.count() == 2 && rcSome.count() == 1 })
	for _, r := range rcAll.requests() {
		if !strings.Contains(string(r.Body), `"salary":"5000.00"`) || !strings.Contains(string(r.Body), `"changed":["email","salary"]`) {
			t.Errorf("%s lost the salary: %s", r.Header.Get("X-Walhook-Webhook"), r.Body)
		}
	}
	if b := string(rcSome.requests()[0].Body); strings.Contains(b, "salary") {
		t.Errorf("some got the salary: %s", b)
	}
}
