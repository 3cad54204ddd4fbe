package deliver_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"walhook/deliver"
)

// TestHostileTemplatesRefused: a template that ranges over a number is
// refused when the webhook is validated, before it runs anywhere.
func TestHostileTemplatesRefused(t *testing.T) {
	t.Parallel()
	for _, tmpl := range []string{
		`{{range 9223372036854775807}}{{end}}`,
		`{{range 100000000000}}xxxx{{end}}`,
		`{"a": [{{range $i := 10}}{{$i}}{{end}}]}`,
		`{{if true}}{{range (1000000)}}x{{end}}{{end}}`,
		`{{range len .Data}}x{{end}}`,
		`{{define "a"}}{{range 5000000000}}{{end}}{{end}}{{template "a"}}`,
	} {
		w := hook("h", "http://127.0.0.1:9/", func(w *deliver.Webhook) { w.Template = tmpl })
		done := make(chan error, 1)
		go func() { done <- w.Validate() }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "template:") || !strings.Contains(err.Error(), "range over a number") {
				t.Errorf("%s: Validate = %v, want a template error about a range over a number", tmpl, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Validate still running after 30 s", tmpl)
		}
	}
	// Recursion ends at text/template's depth limit, in validation.
	w := hook("h", "http://127.0.0.1:9/", func(w *deliver.Webhook) {
		w.Template = `{{define "a"}}{{template "a" .}}{{template "a" .}}{{end}}{{template "a" .}}`
	})
	if err := w.Validate(); err == nil {
		t.Error("a template calling itself twice passes validation")
	}
}

// TestTemplateLimitsFailDelivery: templates that pass validation (the
// sample event is small) but not a real row fail their own delivery with
// a clear error, within the time limit; the worker goes on, and a plain
// webhook gets the same event.
func TestTemplateLimitsFailDelivery(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	hostile := map[string]struct{ tmpl, want string }{
		"qty":  {`{{range .Data.qty}}{{end}}`, "range over a int64"},
		"big":  {`{{range .Changed}}{{printf "%900000d" 1}}{{end}}`, "body larger than 1048576 bytes"},
		"slow": {`{{range .Data}}{{range $.Data}}{{range $.Data}}{{range $.Data}}{{range $.Data}}{{range $.Data}}{{end}}{{end}}{{end}}{{end}}{{end}}{{end}}`, "took longer than 1s"},
	}
	names := []string{"plain"}
	hooks := []deliver.Webhook{hook("plain", rc.URL)}
	for name, h := range hostile {
		names = append(names, name)
		hooks = append(hooks, hook(name, rc.URL, func(w *deliver.Webhook) { w.Template, w.MaxAttempts = h.tmpl, 1 }))
	}
	e := newEnv(t, names)
	e.setHooks(t, hooks...)

	ev := event(100, 0, 1, "a@x")
	for i := range 100 {
		ev.Data[fmt.Sprintf("c%03d", i)] = "v"
	}
	ev.Data["qty"] = int64(math.MaxInt64)
	ev.Changed = []string{"email", "qty", "c000"}
	e.write(t, txOf(100, ev))

	e.latest(t, "plain", deliver.StatusSuccess)
	for name, h := range hostile {
		d := e.latest(t, name, deliver.StatusFailed)
		err := d.Attempts[0].Error
		if !strings.Contains(err, "template limit") || !strings.Contains(err, h.want) {
			t.Errorf("%s: error %q, want the template limit: %s", name, err, h.want)
		}
	}
	if n := rc.count(); n != 1 {
		t.Errorf("the receiver got %d requests, want the plain webhook's alone", n)
	}
	// The workers are free: the next event of a hostile webhook is
	// rendered and fails the same way.
	e.write(t, txOf(200, event(200, 0, 2, "b@x")))
	waitFor(t, 10*time.Second, "the plain webhook's second delivery", func() bool {
		ds, _ := e.q.Deliveries("plain", 10, deliver.StatusSuccess)
		return len(ds) == 2
	})
}
