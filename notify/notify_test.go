package notify_test

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/internal/testkit"
	"walhook/notify"
)

// message is one e-mail the test SMTP server accepted.
type message = testkit.Mail

// newMailServer is a real SMTP server keeping what it receives (see
// testkit.SMTPServer).
func newMailServer(t *testing.T, startTLS bool, user, password string) *testkit.SMTPServer {
	t.Helper()
	return testkit.NewSMTPServer(t, startTLS, user, password)
}

// fakeClock is the Notifier's clock; its timers fire only when the test
// says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	d time.Duration
	f func()
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	c.timers = append(c.timers, fakeTimer{d, f})
	c.mu.Unlock()
	return func() bool { return true }
}

func (c *fakeClock) started() []fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]fakeTimer(nil), c.timers...)
}

// syncBuffer is a log destination the test reads while the code writes.
type syncBuffer = testkit.SyncBuffer

func notifyHook(name, email string) deliver.Webhook {
	w := webhook(name, "https://user:topsecret@hr.example.com/hooks")
	w.NotifyOnFailure, w.NotifyEmail = true, email
	return w
}

// failedDelivery is a delivery whose last attempt answered status with
// the response text.
func failedDelivery(name string, seq int, status int, text string) deliver.Delivery {
	at := time.Date(2026, 11, 28, 3, 0, seq, 0, time.UTC)
	att := deliver.Attempt{N: 3, At: at, Status: status, ResponseBody: text, Error: "HTTP " + strconv.Itoa(status)}
	if status == 0 {
		att.Error = "timeout after 1s"
	}
	return deliver.Delivery{
		ID: name + "-" + strconv.Itoa(1000+seq), Webhook: name, EventID: cdc.EventID(0x16B3A80, uint32(seq)),
		Event: "employee.modify", EntityID: strconv.Itoa(130000 + seq), Status: deliver.StatusFailed,
		Attempts: []deliver.Attempt{{N: 1, At: at.Add(-time.Minute), Status: 500}, {N: 2}, att},
	}
}

func newNotifier(ms *testkit.SMTPServer, mods ...func(*notify.Options)) (*notify.Notifier, *syncBuffer) {
	logs := &syncBuffer{}
	o := notify.Options{
		Host: ms.Host, Port: ms.Port, From: "walhook <walhook@example.com>", AdminURL: "http://127.0.0.1:8080",
		Timeout: 10 * time.Second, RootCAs: ms.Pool, Logger: slog.New(slog.NewTextHandler(logs, nil)),
	}
	for _, m := range mods {
		m(&o)
	}
	return notify.New(o), logs
}

// TestNotifierPlain: one failure, plain SMTP without auth, gives one
// e-mail naming the webhook, endpoint, event, status, error and how to
// redeliver; webhooks without notify_on_failure send nothing.
func TestNotifierPlain(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, false, "", "")
	n, _ := newNotifier(ms)
	quiet := notifyHook("quiet", "ops@example.com")
	quiet.NotifyOnFailure = false
	n.Notify(quiet, failedDelivery("quiet", 1, 500, ""))
	n.Notify(notifyHook("hr-sync", "HR Ops <ops@example.com>"), failedDelivery("hr-sync", 3, 400, "unknown employee\n130003"))
	waitFor(t, 10*time.Second, "the e-mail", func() bool { return len(ms.Messages()) >= 1 })
	n.Close()

	msgs := ms.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d e-mails, want 1: %+v", len(msgs), msgs)
	}
	m := msgs[0]
	if m.From != "walhook@example.com" || m.To != "ops@example.com" || m.TLS || m.AuthedUser != "" {
		t.Errorf("envelope = %+v", m)
	}
	if want := `walhook: webhook "hr-sync": 1 delivery failed`; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	for _, want := range []string{
		"Webhook:  hr-sync\n",
		"Endpoint: https://user:xxxxx@hr.example.com/hooks\n",
		"Event:       employee.modify\n",
		"Event id:    00000000016B3A80-00000003\n",
		"Entity id:   130003\n",
		"Delivery id: hr-sync-1003\n",
		"Attempts:    3, the last at 2026-11-28T03:00:03Z\n",
		"Last status: 400\n",
		"Error:       HTTP 400\n",
		"Response:    unknown employee 130003\n",
		"POST http://127.0.0.1:8080/api/deliveries/{delivery id}/redeliver",
		"POST http://127.0.0.1:8080/api/webhooks/hr-sync/recover?since=2026-11-28T03:00:03Z",
		"http://127.0.0.1:8080/api/deliveries/hr-sync-1003/redeliver",
	} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
	if strings.Contains(m.Body, "topsecret") {
		t.Error("the URL's password is in the e-mail")
	}
}

// TestNotifierBatching: at most one e-mail per webhook per interval; what
// fails meanwhile goes out in one e-mail when the timer fires. Another
// webhook is not held back.
func TestNotifierBatching(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, false, "", "")
	clock := &fakeClock{now: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)}
	n, _ := newNotifier(ms, func(o *notify.Options) {
		o.Interval, o.Now, o.AfterFunc = 10*time.Minute, clock.Now, clock.AfterFunc
	})
	w := notifyHook("a", "a@example.com")
	n.Notify(w, failedDelivery("a", 1, 500, ""))
	waitFor(t, 10*time.Second, "the first e-mail", func() bool { return len(ms.Messages()) == 1 })

	clock.advance(time.Minute)
	n.Notify(w, failedDelivery("a", 2, 502, ""))
	n.Notify(w, failedDelivery("a", 3, 0, ""))
	n.Notify(notifyHook("b", "b@example.com"), failedDelivery("b", 4, 500, ""))
	waitFor(t, 10*time.Second, "webhook b's e-mail", func() bool { return len(ms.Messages()) == 2 })
	timers := clock.started()
	if len(timers) != 1 || timers[0].d != 9*time.Minute {
		t.Fatalf("timers started: %+v, want one of 9m", timers)
	}
	if got := ms.Messages(); got[1].To != "b@example.com" {
		t.Fatalf("second e-mail went to %s, want b (a's must wait for the timer)", got[1].To)
	}

	clock.advance(9 * time.Minute)
	timers[0].f()
	waitFor(t, 10*time.Second, "the batch", func() bool { return len(ms.Messages()) == 3 })
	batch := ms.Messages()[2]
	if batch.To != "a@example.com" || batch.Subject != `walhook: webhook "a": 2 deliveries failed` {
		t.Errorf("batch e-mail = %s %q", batch.To, batch.Subject)
	}
	for _, want := range []string{"00000000016B3A80-00000002", "Last status: 502", "00000000016B3A80-00000003",
		"Last status: no response", "Error:       timeout after 1s", "recover?since=2026-11-28T03:00:02Z"} {
		if !strings.Contains(batch.Body, want) {
			t.Errorf("batch lacks %q:\n%s", want, batch.Body)
		}
	}
	if strings.Contains(batch.Body, "00000000016B3A80-00000001") {
		t.Error("the batch repeats the failure already e-mailed")
	}

	// Within the next interval again: batched, and Close sends it.
	clock.advance(time.Minute)
	n.Notify(w, failedDelivery("a", 5, 500, ""))
	if got := clock.started(); len(got) != 2 || got[1].d != 9*time.Minute {
		t.Fatalf("timers started: %+v", got)
	}
	n.Close()
	msgs := ms.Messages()
	if len(msgs) != 4 || !strings.Contains(msgs[3].Body, "00000000016B3A80-00000005") {
		t.Errorf("Close did not send the pending batch: %d e-mails", len(msgs))
	}
}

// TestNotifierStartTLSAuth: STARTTLS with AUTH PLAIN; a certificate the
// client does not trust, or a wrong password, sends nothing and is logged.
func TestNotifierStartTLSAuth(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, true, "walhook", "s3cret")
	n, _ := newNotifier(ms, func(o *notify.Options) {
		o.StartTLS, o.Username, o.Password = true, "walhook", "s3cret"
	})
	n.Notify(notifyHook("tls", "ops@example.com"), failedDelivery("tls", 1, 500, ""))
	waitFor(t, 10*time.Second, "the e-mail", func() bool { return len(ms.Messages()) == 1 })
	n.Close()
	if m := ms.Messages()[0]; !m.TLS || m.AuthedUser != "walhook" || m.To != "ops@example.com" {
		t.Errorf("e-mail = %+v, want over TLS, authenticated as walhook", m)
	}

	for _, c := range []struct {
		name string
		mod  func(*notify.Options)
		want string
	}{
		{"untrusted certificate", func(o *notify.Options) { o.RootCAs = x509.NewCertPool() }, "certificate"},
		{"wrong password", func(o *notify.Options) { o.Password = "nope" }, "auth:"},
		{"no starttls", func(o *notify.Options) { o.StartTLS = false }, "auth:"},
	} {
		n, logs := newNotifier(ms, func(o *notify.Options) {
			o.StartTLS, o.Username, o.Password = true, "walhook", "s3cret"
			c.mod(o)
		})
		n.Notify(notifyHook("tls", "ops@example.com"), failedDelivery("tls", 2, 500, ""))
		n.Close()
		if got := len(ms.Messages()); got != 1 {
			t.Errorf("%s: %d e-mails, want still 1", c.name, got)
		}
		if l := logs.String(); !strings.Contains(l, "failure e-mail not sent") || !strings.Contains(l, c.want) {
			t.Errorf("%s: log lacks the error (%q):\n%s", c.name, c.want, l)
		}
	}
}

// TestNotifierUnreachable: an SMTP server that accepts and never answers,
// or none at all, never blocks Notify; the failure is logged.
func TestNotifierUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-release; c.Close() }()
		}
	}()
	defer func() { close(release); ln.Close() }()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()

	for name, port := range map[string]int{"silent": ln.Addr().(*net.TCPAddr).Port, "refused": closedPort} {
		logs := &syncBuffer{}
		n := notify.New(notify.Options{
			Host: "127.0.0.1", Port: port, Timeout: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil)),
		})
		done := make(chan struct{})
		go func() {
			n.Notify(notifyHook("x", "ops@example.com"), failedDelivery("x", 1, 500, ""))
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second): // a generous bound on a call that must not wait for SMTP at all
			t.Fatalf("%s: Notify blocked", name)
		}
		n.Close()
		if !strings.Contains(logs.String(), "failure e-mail not sent") {
			t.Errorf("%s: not logged:\n%s", name, logs.String())
		}
	}
}

// TestNotifierQueue: a real Queue's OnFailed feeds the Notifier; a 410 that
// switches the webhook off says so.
func TestNotifierQueue(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, false, "", "")
	n, _ := newNotifier(ms)
	defer n.Close()
	rc := testkit.NewReceiver(t, func(int, testkit.Request) testkit.Response {
		return testkit.Response{Status: http.StatusGone, Body: "no such hook"}
	})
	q, err := deliver.Open(deliver.Options{
		Dir: t.TempDir(), Route: func(*cdc.Event) []string { return []string{"gone"} }, OnFailed: n.Notify,
		Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	w := webhook("gone", rc.URL)
	w.NotifyOnFailure, w.NotifyEmail = true, "ops@example.com"
	if err := q.SetConfigWebhooks([]deliver.Webhook{w}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 29, 1, 2, 3, 0, time.UTC)
	if err := q.Write(t.Context(), &cdc.Tx{CommitLSN: 100, EndLSN: 101, CommitTime: at, Events: []cdc.Event{{
		ID: cdc.EventID(100, 0), CommitLSN: 100, CommitTime: at, Schema: "public", Table: "employees", Action: cdc.ActionModify,
		Data: map[string]any{"id": int64(7)}, Entity: "employee", EntityID: "7",
	}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the e-mail", func() bool { return len(ms.Messages()) == 1 })
	m := ms.Messages()[0]
	if m.Subject != `walhook: webhook "gone" switched off (410 Gone)` {
		t.Errorf("subject %q", m.Subject)
	}
	for _, want := range []string{"Endpoint: " + rc.URL, "Event id:    0000000000000064-00000000", "Last status: 410",
		"Response:    no such hook", "switched off (active = false)", "/api/deliveries/gone-",
		"give it its new url in the config file"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
}

// tryLater is the SMTP server's temporary refusal of a recipient.
var tryLater = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "mailbox busy, try later"}

// TestNotifierRetry: an e-mail the SMTP server refuses goes back to the
// webhook's mailbox, ahead of a failure filed while it was under way, and
// is sent when the retry timer (30 s) fires, listing both. The interval
// timer armed meanwhile is replaced and does nothing when it fires.
func TestNotifierRetry(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, false, "", "")
	release := make(chan struct{})
	ms.SetRcpt(func(n int) error {
		if n == 1 {
			<-release
			return tryLater
		}
		return nil
	})
	t0 := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	n, logs := newNotifier(ms, func(o *notify.Options) { o.Now, o.AfterFunc = clock.Now, clock.AfterFunc })
	w := notifyHook("r", "ops@example.com")
	n.Notify(w, failedDelivery("r", 1, 500, ""))
	waitFor(t, 10*time.Second, "the first attempt to reach RCPT TO", func() bool { return ms.Attempts() == 1 })

	// Filed while the first e-mail is under way: it waits for the interval.
	n.Notify(w, failedDelivery("r", 2, 502, ""))
	if got := clock.started(); len(got) != 1 || got[0].d != 10*time.Minute {
		t.Fatalf("timers started: %+v, want the interval's (10m)", got)
	}
	close(release)
	waitFor(t, 10*time.Second, "the refusal in the log", func() bool { return strings.Contains(logs.String(), "will retry") })
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "mailbox busy, try later") ||
		!strings.Contains(l, "attempt=1") || !strings.Contains(l, "retry_in=30s") {
		t.Errorf("the refusal is not logged as expected:\n%s", l)
	}
	timers := clock.started()
	if len(timers) != 2 || timers[1].d != 30*time.Second {
		t.Fatalf("timers started: %+v, want a retry after 30s", timers)
	}
	if got := ms.Messages(); len(got) != 0 {
		t.Fatalf("%d e-mails accepted before the retry", len(got))
	}

	timers[0].f() // replaced by the retry timer: must not send
	clock.advance(30 * time.Second)
	timers[1].f()
	waitFor(t, 10*time.Second, "the retried e-mail", func() bool { return len(ms.Messages()) == 1 })
	n.Close()

	msgs := ms.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d e-mails, want 1", len(msgs))
	}
	m := msgs[0]
	if !m.Date.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("e-mail dated %s, want %s: sent by the retry timer, not the replaced one", m.Date, t0.Add(30*time.Second))
	}
	if want := `walhook: webhook "r": 2 deliveries failed`; m.Subject != want {
		t.Errorf("subject %q, want %q", m.Subject, want)
	}
	first, second := strings.Index(m.Body, "00000000016B3A80-00000001"), strings.Index(m.Body, "00000000016B3A80-00000002")
	if first < 0 || second < first {
		t.Errorf("the e-mail must list the refused failure, then the newer one:\n%s", m.Body)
	}
	if got := ms.Attempts(); got != 2 {
		t.Errorf("%d attempts, want 2", got)
	}
	if l := logs.String(); !strings.Contains(l, "failure e-mail sent") || !strings.Contains(l, "attempt=2") {
		t.Errorf("the sent e-mail is not logged:\n%s", l)
	}
}

// TestNotifierRetryGivesUp: an SMTP server that refuses every attempt gets
// four, 30 s, 2 min and 10 min apart; then the e-mail is dropped with an
// error naming how many failures it listed, and no timer is left. At Close
// a pending retry gets one last attempt, and Close returns.
func TestNotifierRetryGivesUp(t *testing.T) {
	t.Parallel()
	ms := newMailServer(t, false, "", "")
	ms.SetRcpt(func(int) error { return tryLater })
	clock := &fakeClock{now: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)}
	n, logs := newNotifier(ms, func(o *notify.Options) { o.Now, o.AfterFunc = clock.Now, clock.AfterFunc })
	w := notifyHook("g", "ops@example.com")
	n.Notify(w, failedDelivery("g", 1, 500, ""))
	for i, wait := range []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute} {
		waitFor(t, 10*time.Second, fmt.Sprintf("attempt %d to fail", i+1), func() bool {
			return strings.Count(logs.String(), "will retry") == i+1
		})
		timers := clock.started()
		if len(timers) != i+1 || timers[i].d != wait {
			t.Fatalf("after attempt %d: timers started %+v, want the last of %s", i+1, timers, wait)
		}
		if i == 0 {
			n.Notify(w, failedDelivery("g", 2, 500, "")) // joins the e-mail being retried
		}
		clock.advance(wait)
		timers[i].f()
	}
	waitFor(t, 10*time.Second, "the e-mail to be dropped", func() bool { return strings.Contains(logs.String(), "dropped") })
	line := logLine(logs.String(), "dropped")
	for _, want := range []string{"level=ERROR", "webhook=g", "failures=2", "attempts=4", "still listed as failed on the admin page", "mailbox busy"} {
		if !strings.Contains(line, want) {
			t.Errorf("the drop's log line lacks %q: %s", want, line)
		}
	}
	if got := ms.Attempts(); got != 4 {
		t.Errorf("%d attempts, want 4", got)
	}
	if got := clock.started(); len(got) != 3 {
		t.Errorf("timers started: %+v, want none after the last attempt", got)
	}

	// A retry pending at Close: one last attempt, then Close returns.
	n.Notify(notifyHook("h", "ops@example.com"), failedDelivery("h", 3, 500, ""))
	waitFor(t, 10*time.Second, "h's first attempt to fail", func() bool { return strings.Count(logs.String(), "will retry") == 4 })
	timers := clock.started()
	if len(timers) != 4 {
		t.Fatalf("timers started: %+v, want h's retry", timers)
	}
	closed := make(chan struct{})
	go func() { n.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second): // generous: Close waits for one local attempt
		t.Fatal("Close did not return")
	}
	if got := ms.Attempts(); got != 6 {
		t.Errorf("%d attempts, want 6 (h's first and its last at Close)", got)
	}
	if line := lastLogLine(logs.String(), "webhook=h"); !strings.Contains(line, "dropped") || !strings.Contains(line, "attempts=2") {
		t.Errorf("h's last log line is not its drop after 2 attempts: %s", line)
	}
	timers[3].f() // h's retry timer, stopped by Close: must not send
	n.Close()     // waits for any e-mail under way
	if got := ms.Attempts(); got != 6 {
		t.Errorf("%d attempts after a stopped timer fired, want still 6", got)
	}
	if got := clock.started(); len(got) != 4 {
		t.Errorf("timers started after Close: %+v", got[4:])
	}
}

// TestNotifierSetOptions: SetOptions switches the SMTP server, user,
// password and sender; a failure batched before goes to the new server
// (retried there once the password is fixed), the old server gets nothing
// more, the interval and admin URL stay, a change is logged once, and no
// password is ever logged.
func TestNotifierSetOptions(t *testing.T) {
	t.Parallel()
	const pw1, pwWrong, pw2 = "pw-one-SECRET", "pw-wrong-SECRET", "pw-two-SECRET"
	ms1 := newMailServer(t, false, "u1", pw1)
	ms2 := newMailServer(t, false, "u2", pw2)
	clock := &fakeClock{now: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)}
	n, logs := newNotifier(ms1, func(o *notify.Options) {
		o.Username, o.Password = "u1", pw1
		o.Now, o.AfterFunc = clock.Now, clock.AfterFunc
	})
	w := notifyHook("s", "ops@example.com")
	n.Notify(w, failedDelivery("s", 1, 500, ""))
	waitFor(t, 10*time.Second, "the e-mail to the first server", func() bool { return len(ms1.Messages()) == 1 })
	clock.advance(time.Minute)
	n.Notify(w, failedDelivery("s", 2, 500, "")) // batched for 9 minutes

	second := notify.Options{
		Host: ms2.Host, Port: ms2.Port, Username: "u2", Password: pwWrong, From: "Other <other@example.com>",
		// Not SMTP settings: ignored.
		Interval: time.Nanosecond, AdminURL: "http://ignored.example", Timeout: time.Nanosecond,
	}
	n.SetOptions(second)
	timers := clock.started()
	if len(timers) != 1 || timers[0].d != 9*time.Minute {
		t.Fatalf("timers started: %+v, want the batch's (9m)", timers)
	}
	clock.advance(9 * time.Minute)
	timers[0].f()
	waitFor(t, 10*time.Second, "the wrong password's refusal", func() bool { return strings.Contains(logs.String(), "will retry") })
	if l := lastLogLine(logs.String(), "will retry"); !strings.Contains(l, "auth:") ||
		!strings.Contains(l, "smtp="+net.JoinHostPort(ms2.Host, strconv.Itoa(ms2.Port))) {
		t.Errorf("the refusal does not name the new server's auth: %s", l)
	}

	second.Password = pw2
	n.SetOptions(second)
	n.SetOptions(second) // unchanged: not logged again
	timers = clock.started()
	if len(timers) != 2 || timers[1].d != 30*time.Second {
		t.Fatalf("timers started: %+v, want the retry's (30s)", timers)
	}
	clock.advance(30 * time.Second)
	timers[1].f()
	waitFor(t, 10*time.Second, "the e-mail to the second server", func() bool { return len(ms2.Messages()) == 1 })
	n.Notify(notifyHook("s2", "ops2@example.com"), failedDelivery("s2", 3, 500, ""))
	waitFor(t, 10*time.Second, "s2's e-mail to the second server", func() bool { return len(ms2.Messages()) == 2 })
	n.Close()

	if got := len(ms1.Messages()); got != 1 {
		t.Errorf("the first server got %d e-mails, want only the one before SetOptions", got)
	}
	m := ms2.Messages()[0]
	if m.AuthedUser != "u2" || m.From != "other@example.com" || m.To != "ops@example.com" {
		t.Errorf("e-mail to the second server = %+v", m)
	}
	for _, want := range []string{"00000000016B3A80-00000002", "POST http://127.0.0.1:8080/api/deliveries/", "at most once every 10m0s"} {
		if !strings.Contains(m.Body, want) {
			t.Errorf("body lacks %q:\n%s", want, m.Body)
		}
	}
	if strings.Contains(m.Body, "00000000016B3A80-00000001") {
		t.Error("the e-mail repeats the failure the first server got")
	}
	if m := ms2.Messages()[1]; m.To != "ops2@example.com" || m.AuthedUser != "u2" {
		t.Errorf("s2's e-mail = %+v", m)
	}

	l := logs.String()
	if got := strings.Count(l, "smtp settings changed"); got != 2 {
		t.Errorf("%d lines say the settings changed, want 2:\n%s", got, l)
	}
	if line := logLine(l, "smtp settings changed"); !strings.Contains(line, "level=INFO") ||
		!strings.Contains(line, "port="+strconv.Itoa(ms2.Port)) || !strings.Contains(line, "password_changed=true") {
		t.Errorf("settings change logged as %s", line)
	}
	for _, pw := range []string{pw1, pwWrong, pw2} {
		if strings.Contains(l, pw) {
			t.Errorf("the log shows the password %q:\n%s", pw, l)
		}
	}
}

// logLine is the first line of log containing s, "" if none.
func logLine(log, s string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

// lastLogLine is the last line of log containing s, "" if none.
func lastLogLine(log, s string) string {
	last := ""
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, s) {
			last = line
		}
	}
	return last
}

var waitFor = testkit.WaitFor

// webhook is a config webhook with the defaults and every event.
func webhook(name, url string) deliver.Webhook {
	var w deliver.Webhook
	deliver.ApplyDefaults(&w)
	w.Name, w.URL, w.Events = name, url, []string{"*"}
	return w
}

// TestNotifierHeaderInjection: a notify_email whose comment carries CR LF
// and headers of its own (mail.ParseAddress accepts it) is refused by
// validation, and one that got into the store before is written as the
// parsed address only: the e-mail has walhook's headers and no others.
func TestNotifierHeaderInjection(t *testing.T) {
	t.Parallel()
	const evil = "ops@example.com (x\r\nBcc: victim@evil.example\r\nSubject: pwned\r\n\r\nyour text)"
	w := notifyHook("hr-sync", evil)
	if err := w.Validate(); err == nil || !strings.Contains(err.Error(), "notify_email") {
		t.Errorf("Validate = %v, want an error naming notify_email", err)
	}
	if err := notify.CheckAddress("walhook@example.com\r\nBcc: victim@evil.example"); err == nil {
		t.Error("CheckAddress accepts a From with CR LF")
	}

	ms := newMailServer(t, false, "", "")
	n, _ := newNotifier(ms, func(o *notify.Options) { o.From = "walhook (a\r\nX-Injected: 1) <walhook@example.com>" })
	n.Notify(w, failedDelivery("hr-sync", 1, 500, ""))
	waitFor(t, 10*time.Second, "the e-mail", func() bool { return len(ms.Messages()) >= 1 })
	n.Close()
	m := ms.Messages()[0]
	for _, k := range []string{"Bcc", "X-Injected"} {
		if v, ok := m.Header[k]; ok {
			t.Errorf("injected header %s: %q", k, v)
		}
	}
	if len(m.Header["Subject"]) != 1 || !strings.HasPrefix(m.Subject, "walhook: ") {
		t.Errorf("Subject headers %q, want walhook's only", m.Header["Subject"])
	}
	to, err := m.Header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "ops@example.com" {
		t.Errorf("To = %v (%v), want ops@example.com alone", to, err)
	}
	if m.To != "ops@example.com" || strings.Contains(m.Body, "your text") {
		t.Errorf("envelope to %q; body:\n%s", m.To, m.Body)
	}
}
