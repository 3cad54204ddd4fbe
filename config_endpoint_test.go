package main

import (
	"strings"
	"testing"
	"time"

	"walhook/deliver"
)

// TestConfigEndpointControl: rate_limit (an integer or a fraction),
// max_in_flight and disable_after reach the webhook; left out, there is
// no limit and no switch-off.
func TestConfigEndpointControl(t *testing.T) {
	const base = "[postgres]\ndsn = \"postgres://u@127.0.0.1/x\"\n" +
		"[[webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1/x\"\nevents = [\"*\"]\n"
	for _, tc := range []struct {
		keys  string
		rate  float64
		most  int
		after time.Duration
	}{
		{"", 0, 0, 0},
		{"rate_limit = 50\nmax_in_flight = 4\ndisable_after = \"72h\"\n", 50, 4, 72 * time.Hour},
		{"rate_limit = 0.5\ndisable_after = \"1h30m\"\n", 0.5, 0, 90 * time.Minute},
	} {
		cfg, err := ParseConfig(strings.NewReader(base + tc.keys))
		if err != nil {
			t.Fatalf("%q: %v", tc.keys, err)
		}
		w := cfg.DeliverWebhooks()[0]
		if w.RateLimit != tc.rate || w.MaxInFlight != tc.most || w.DisableAfter != tc.after {
			t.Errorf("%q: rate_limit %v, max_in_flight %d, disable_after %s; want %v, %d, %s",
				tc.keys, w.RateLimit, w.MaxInFlight, w.DisableAfter, tc.rate, tc.most, tc.after)
		}
		if got := deliver.FormatDuration(w.DisableAfter); tc.after != 0 && !strings.Contains(tc.keys, `"`+got+`"`) {
			t.Errorf("disable_after %s is shown as %q", w.DisableAfter, got)
		}
	}
}
