package admin_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEndpointControlAPI: rate_limit, max_in_flight and disable_after go
// through POST, PATCH and GET (max_in_flight shows its default), bad
// values answer 422 naming the key, and a webhook disable_after switched
// off says why in its stats, its row and its history page.
func TestEndpointControlAPI(t *testing.T) {
	e := newEnv(t)
	type control struct {
		RateLimit    float64 `json:"rate_limit"`
		MaxInFlight  int     `json:"max_in_flight"`
		DisableAfter string  `json:"disable_after"`
		Active       bool    `json:"active"`
		Stats        struct {
			SwitchedOff  string     `json:"switched_off"`
			FailingSince *time.Time `json:"failing_since"`
		} `json:"stats"`
	}
	get := func(name string) control {
		t.Helper()
		var c control
		e.mustDo(200, "GET", "/api/webhooks/"+name, "").json(t, &c)
		return c
	}
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "plain", "url": "http://127.0.0.1:9/", "events": ["*"]}`)
	if c := get("plain"); c.RateLimit != 0 || c.MaxInFlight != 16 || c.DisableAfter != "" {
		t.Errorf("defaults: %+v, want no rate limit, 16 in flight, no disable_after", c)
	}
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "crm", "url": "http://127.0.0.1:9/", "events": ["*"],
		"rate_limit": 50, "max_in_flight": 4, "disable_after": "72h"}`)
	if c := get("crm"); c.RateLimit != 50 || c.MaxInFlight != 4 || c.DisableAfter != "72h" {
		t.Errorf("created: %+v, want 50, 4, 72h", c)
	}
	e.mustDo(200, "PATCH", "/api/webhooks/crm", `{"rate_limit": 0.5, "disable_after": "1h30m"}`)
	if c := get("crm"); c.RateLimit != 0.5 || c.MaxInFlight != 4 || c.DisableAfter != "1h30m" {
		t.Errorf("patched: %+v, want 0.5, 4, 1h30m", c)
	}
	for body, want := range map[string]string{
		`{"max_in_flight": 0}`:        "max_in_flight: must be 1..16 (got 0)",
		`{"max_in_flight": 17}`:       "max_in_flight: must be 1..16 (got 17)",
		`{"rate_limit": -1}`:          "rate_limit: must be 0 (no limit) or up to",
		`{"disable_after": "3 days"}`: `disable_after: must be a duration such as "72h" or "30m" (got "3 days")`,
		`{"disable_after": "100ms"}`:  "disable_after: must be at least 1s",
		`{"disable_after": "-72h"}`:   "disable_after: must be at least 1s",
	} {
		r := e.do("PATCH", "/api/webhooks/crm", body)
		if msg := r.errorText(t); r.status != 422 || !strings.Contains(msg, want) {
			t.Errorf("PATCH %s: %d %q, want 422 %q", body, r.status, msg, want)
		}
	}
	if c := get("crm"); c.RateLimit != 0.5 || c.MaxInFlight != 4 || c.DisableAfter != "1h30m" {
		t.Errorf("after the refused changes: %+v", c)
	}

	rc := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	e.mustDo(201, "POST", "/api/webhooks", `{"name": "down", "url": "`+rc.URL+`", "events": ["*"],
		"retry_mode": "test", "max_attempts": 8, "disable_after": "1s"}`)
	e.write(100, 1)
	waitFor(t, "the switch-off", func() bool { return !get("down").Active })
	const reason = "switched off after 1s of failures"
	if c := get("down"); c.Stats.SwitchedOff != reason || c.Stats.FailingSince == nil {
		t.Errorf("stats.switched_off %q, failing_since %v; want %q and the first failure's time", c.Stats.SwitchedOff, c.Stats.FailingSince, reason)
	}
	for _, page := range []string{"/", "/webhooks/down/deliveries"} {
		if r := e.mustDo(200, "GET", page, ""); !strings.Contains(r.body, reason) {
			t.Errorf("%s does not say %q", page, reason)
		}
	}
	e.mustDo(200, "POST", "/api/webhooks/down/activate", "")
	if c := get("down"); !c.Active || c.Stats.SwitchedOff != "" {
		t.Errorf("activated: %+v, want on without a reason", c)
	}
}
