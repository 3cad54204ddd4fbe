package notify_test

import (
	"strings"
	"testing"
	"time"

	"walhook/deliver"
)

// TestNotifierSwitchedOff: the e-mail of a delivery whose failure made
// disable_after switch its webhook off says so in its subject and body,
// and does not count the delivery, which still waits, as given up.
func TestNotifierSwitchedOff(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, false, "", "")
	n, _ := newNotifier(ms)
	d := failedDelivery("hr-sync", 3, 503, "maintenance")
	d.Status, d.SwitchedOff = deliver.StatusPending, "switched off after 72h of failures"
	n.Notify(notifyHook("hr-sync", "ops@example.com"), d)
	waitFor(t, 10*time.Second, "the e-mail", func() bool { return len(ms.Messages()) >= 1 })
	n.Close()

	m := ms.Messages()[0]
	if want := `walhook: webhook "hr-sync" switched off after 72h of failures`; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	for _, want := range []string{
		"walhook switched a webhook off.\n",
		"The webhook was switched off after 72h of failures (disable_after)",
		"Its queued deliveries wait",
		"Last status: 503\n",
	} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
	if strings.Contains(m.Body, "gave up") {
		t.Errorf("the body says walhook gave up on a delivery that waits:\n%s", m.Body)
	}
}
