// Package notify sends failure e-mails: a webhook with notify_on_failure
// gets one when a delivery fails for good, batched per webhook. The queue
// calls Notifier.Notify through its OnFailed callback; main wires them.
package notify

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"walhook/deliver"
)

// Options configure a Notifier: the [smtp] section and how often a
// webhook may be written about.
type Options struct {
	Host     string // SMTP server; "" disables the e-mails
	Port     int    // default 25
	Username string // with a password: AUTH PLAIN (net/smtp refuses it unencrypted except to localhost)
	Password string
	From     string // default walhook@localhost
	StartTLS bool   // upgrade the connection with STARTTLS before anything else; fail if not offered

	// AdminURL is the admin server's base URL ("http://127.0.0.1:8080")
	// used in the redelivery instructions; "" names the routes only.
	AdminURL string

	Interval time.Duration  // at most one e-mail per webhook per Interval; default 10 minutes
	Timeout  time.Duration  // one e-mail, from dial to QUIT; default 30 s
	RootCAs  *x509.CertPool // trusted for STARTTLS; nil = the system's (tests trust their own)
	Logger   *slog.Logger   // default slog.Default()

	// Now and AfterFunc are the clock; nil means the real one. Tests set
	// them to fire a batch or a retry without waiting.
	Now       func() time.Time
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
}

// Notifier e-mails a webhook's notify_email when its deliveries fail for
// good: the first failure at once, then at most one e-mail per interval
// listing what failed meanwhile. An e-mail that cannot be sent is tried
// again after 30 s, 2 min and 10 min, then dropped. Notify is
// Options.OnFailed.
type Notifier struct {
	log *slog.Logger

	mu       sync.Mutex
	opts     Options // the SMTP part changes with SetOptions
	hooks    map[string]*mailbox
	closed   bool
	seq      uint64 // of the last failure filed
	timerSeq uint64 // of the last timer armed
	sends    sync.WaitGroup
}

// retryDelays are the waits before the second, third and fourth attempt at
// an e-mail that could not be sent; after the last attempt it is dropped.
var retryDelays = [...]time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute}

// maxSendAttempts is how many times one e-mail is tried in all.
const maxSendAttempts = len(retryDelays) + 1

// mailbox is one webhook's batch of failures waiting to be e-mailed.
// Outside the lock, failures is empty or a timer is armed (stop != nil)
// that sends them.
type mailbox struct {
	lastSent time.Time
	failures []failure   // oldest first
	attempts int         // failed attempts at the e-mail put back into failures; 0: none
	stop     func() bool // of the timer that sends failures; nil when none runs
	timer    uint64      // that timer's number: a timer replaced meanwhile does nothing
	due      time.Time   // when that timer fires
}

// failure is one delivery that failed for good.
type failure struct {
	seq uint64 // order of filing: a batch put back goes before newer failures
	w   deliver.Webhook
	d   deliver.Delivery
}

// smtpDefaults fills the SMTP settings left empty.
func (o *Options) smtpDefaults() {
	if o.Port == 0 {
		o.Port = 25
	}
	if o.From == "" {
		o.From = "walhook@localhost"
	}
}

// New returns a Notifier; Close it to send what is still batched.
func New(opts Options) *Notifier {
	opts.smtpDefaults()
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.AfterFunc == nil {
		opts.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	return &Notifier{opts: opts, log: opts.Logger, hooks: map[string]*mailbox{}}
}

// SetOptions replaces the SMTP settings (Host, Port, Username, Password,
// From, StartTLS) with o's, applying New's defaults; o's other
// fields are ignored. E-mails under way finish with the old settings, the
// next ones (retries included) use the new; batched failures are kept.
// walhook calls it when it reloads its config.
func (n *Notifier) SetOptions(o Options) {
	o.smtpDefaults()
	n.mu.Lock()
	old := n.opts
	n.opts.Host, n.opts.Port, n.opts.Username, n.opts.Password = o.Host, o.Port, o.Username, o.Password
	n.opts.From, n.opts.StartTLS = o.From, o.StartTLS
	cur := n.opts
	n.mu.Unlock()
	if cur.Host == old.Host && cur.Port == old.Port && cur.Username == old.Username &&
		cur.Password == old.Password && cur.From == old.From && cur.StartTLS == old.StartTLS {
		return
	}
	// Never the password itself.
	n.log.Info("smtp settings changed", "host", cur.Host, "port", cur.Port, "username", cur.Username,
		"password_changed", cur.Password != old.Password, "from", cur.From, "starttls", cur.StartTLS)
}

// Notify files a delivery that failed for good (or whose 410 switched the
// webhook off). It never blocks on the SMTP server.
func (n *Notifier) Notify(w deliver.Webhook, d deliver.Delivery) {
	if !w.NotifyOnFailure || w.NotifyEmail == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opts.Host == "" {
		n.log.Warn("failure e-mail not sent: [smtp] host is not set", "webhook", w.Name, "event_id", d.EventID)
		return
	}
	if n.closed {
		n.log.Warn("failure e-mail not sent: shutting down", "webhook", w.Name, "event_id", d.EventID)
		return
	}
	mb := n.hooks[w.Name]
	if mb == nil {
		mb = &mailbox{}
		n.hooks[w.Name] = mb
	}
	n.seq++
	mb.failures = append(mb.failures, failure{seq: n.seq, w: w, d: d})
	if mb.stop != nil {
		return // the running timer sends it with the rest
	}
	now := n.opts.Now()
	if wait := mb.lastSent.Add(n.opts.Interval).Sub(now); !mb.lastSent.IsZero() && wait > 0 {
		n.armLocked(w.Name, mb, now, wait)
		return
	}
	n.sendLocked(mb, now)
}

// armLocked starts the timer that sends the mailbox after d, replacing the
// one running.
func (n *Notifier) armLocked(name string, mb *mailbox, now time.Time, d time.Duration) {
	if mb.stop != nil {
		mb.stop()
	}
	n.timerSeq++
	id := n.timerSeq
	mb.timer, mb.due = id, now.Add(d)
	mb.stop = n.opts.AfterFunc(d, func() { n.flush(name, id) })
}

// flush sends a webhook's batch when its timer number id fires.
func (n *Notifier) flush(name string, id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	mb := n.hooks[name]
	if mb == nil || mb.stop == nil || mb.timer != id || n.closed {
		return
	}
	mb.stop, mb.timer = nil, 0
	n.sendLocked(mb, n.opts.Now())
}

// sendLocked e-mails the batch from a goroutine of its own, with the SMTP
// settings of the moment.
func (n *Notifier) sendLocked(mb *mailbox, now time.Time) {
	batch, attempt := mb.failures, mb.attempts+1
	mb.failures, mb.attempts = nil, 0
	mb.lastSent = now
	if len(batch) == 0 {
		return
	}
	opts := n.opts
	if opts.Host == "" { // a reload removed it
		w := batch[len(batch)-1].w
		n.log.Warn("failure e-mail not sent: [smtp] host is not set", "webhook", w.Name, "failures", len(batch))
		return
	}
	n.sends.Add(1)
	go func() {
		defer n.sends.Done()
		n.send(opts, batch, attempt, now)
	}()
}

// Close sends every batch still waiting for its interval or for a retry
// (a last attempt each) and waits for the e-mails under way (each bounded
// by the timeout). An e-mail that fails from then on is dropped.
func (n *Notifier) Close() {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		now := n.opts.Now()
		for _, mb := range n.hooks {
			if mb.stop != nil {
				mb.stop()
				mb.stop, mb.timer = nil, 0
				n.sendLocked(mb, now)
			}
		}
	}
	n.mu.Unlock()
	n.sends.Wait()
}

// send makes attempt number attempt at e-mailing batch.
func (n *Notifier) send(opts Options, batch []failure, attempt int, now time.Time) {
	w := batch[len(batch)-1].w // the newest definition
	msg := message(opts, batch, now)
	start := time.Now()
	err := deliverMail(opts, address(w.NotifyEmail), msg)
	if err == nil {
		n.log.Info("failure e-mail sent", "webhook", w.Name, "to", w.NotifyEmail, "failures", len(batch),
			"attempt", attempt, "duration_ms", time.Since(start).Milliseconds())
		return
	}
	smtpAddr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	if delay, ok := n.retry(batch, attempt); ok {
		n.log.Warn("failure e-mail not sent, will retry", "webhook", w.Name, "to", w.NotifyEmail, "smtp", smtpAddr,
			"failures", len(batch), "attempt", attempt, "retry_in", delay, "err", err)
		return
	}
	n.log.Error("failure e-mail not sent and dropped; its deliveries are still listed as failed on the admin page",
		"webhook", w.Name, "to", w.NotifyEmail, "smtp", smtpAddr, "failures", len(batch), "attempts", attempt, "err", err)
}

// retry puts a batch whose e-mail failed back into its mailbox, ahead of
// the failures filed since, and arms the mailbox's timer for the next
// attempt. It reports false, keeping nothing, after the last attempt or
// once the Notifier is closed.
func (n *Notifier) retry(batch []failure, attempt int) (time.Duration, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := batch[len(batch)-1].w.Name
	mb := n.hooks[name]
	if n.closed || attempt >= maxSendAttempts || mb == nil {
		return 0, false
	}
	delay := retryDelays[attempt-1]
	mb.failures = slices.Concat(batch, mb.failures)
	// Two e-mails of one webhook may be under way at once (an interval
	// shorter than the SMTP timeout): keep the failures in filing order.
	slices.SortFunc(mb.failures, func(a, b failure) int { return cmp.Compare(a.seq, b.seq) })
	mb.attempts = max(mb.attempts, attempt)
	now := n.opts.Now()
	if mb.stop != nil && !mb.due.After(now.Add(delay)) {
		return mb.due.Sub(now), true // the timer running sends it sooner, with the rest
	}
	n.armLocked(name, mb, now, delay)
	return delay, true
}

// deliverMail speaks SMTP: EHLO, STARTTLS when asked, AUTH PLAIN with a
// username, then one message to one recipient.
func deliverMail(o Options, to string, msg []byte) error {
	deadline := time.Now().Add(o.Timeout)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), o.Timeout)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	conn.SetDeadline(deadline)
	c, err := smtp.NewClient(conn, o.Host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("greeting: %w", err)
	}
	defer c.Close()
	if o.StartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("starttls: the server does not offer STARTTLS")
		}
		if err := c.StartTLS(&tls.Config{ServerName: o.Host, RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("starttls: %w", err)
		}
	}
	if o.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("auth: the server does not offer AUTH")
		}
		if err := c.Auth(smtp.PlainAuth("", o.Username, o.Password, o.Host)); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	if err := c.Mail(address(o.From)); err != nil {
		return fmt.Errorf("mail from: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("rcpt to: %w", err)
	}
	wc, err := c.Data()
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if _, err := wc.Write(msg); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := wc.Close(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("quit: %w", err)
	}
	return nil
}

// message renders the e-mail with the settings o: headers, then a
// quoted-printable text body.
func message(o Options, batch []failure, now time.Time) []byte {
	w := batch[len(batch)-1].w
	gone := false
	disabled := "" // why disable_after switched the webhook off
	pending := 0   // deliveries still queued: the one whose failure switched it off
	for _, f := range batch {
		gone = gone || lastAttempt(f.d).Status == 410
		if f.d.SwitchedOff != "" && lastAttempt(f.d).Status != 410 {
			disabled = f.d.SwitchedOff
		}
		if f.d.Status == deliver.StatusPending {
			pending++
		}
	}
	subject := fmt.Sprintf("walhook: webhook %q: %d deliver%s failed", w.Name, len(batch), plural(len(batch), "y", "ies"))
	switch {
	case gone:
		subject = fmt.Sprintf("walhook: webhook %q switched off (410 Gone)", w.Name)
	case disabled != "":
		subject = fmt.Sprintf("walhook: webhook %q %s", w.Name, disabled)
	}

	var body strings.Builder
	if failed := len(batch) - pending; failed > 0 {
		fmt.Fprintf(&body, "walhook gave up delivering %d event%s to a webhook.\n\n", failed, plural(failed, "", "s"))
	} else {
		body.WriteString("walhook switched a webhook off.\n\n")
	}
	fmt.Fprintf(&body, "Webhook:  %s\nEndpoint: %s\n", w.Name, deliver.RedactURL(w.URL))
	if gone {
		body.WriteString("\nThe endpoint answered 410 Gone, so the webhook was switched off (active = false):\n" +
			"nothing more is sent until it is switched on again.\n")
	}
	if disabled != "" {
		fmt.Fprintf(&body, "\nThe webhook was %s (disable_after): every attempt failed for that long,\n"+
			"so it was switched off (active = false). Its queued deliveries wait, nothing more is\n"+
			"sent until it is switched on again (the admin API's activate, or a new url in config.toml).\n", disabled)
	}
	since := now
	for i, f := range batch {
		a := lastAttempt(f.d)
		status := "no response"
		if a.Status != 0 {
			status = strconv.Itoa(a.Status)
		}
		fmt.Fprintf(&body, "\n%d. Event:       %s\n   Event id:    %s\n   Entity id:   %s\n   Delivery id: %s\n",
			i+1, f.d.Event, f.d.EventID, f.d.EntityID, f.d.ID)
		fmt.Fprintf(&body, "   Attempts:    %d, the last at %s\n   Last status: %s\n",
			len(f.d.Attempts), a.At.UTC().Format(time.RFC3339), status)
		if a.Error != "" {
			fmt.Fprintf(&body, "   Error:       %s\n", oneLine(a.Error, 300))
		}
		if a.Status != 0 && a.ResponseBody != "" {
			fmt.Fprintf(&body, "   Response:    %s\n", oneLine(a.ResponseBody, 300))
		}
		if !a.At.IsZero() && a.At.Before(since) {
			since = a.At
		}
	}
	base := strings.TrimSuffix(o.AdminURL, "/")
	if base == "" {
		base = "http://<admin address>"
	}
	first := batch[0].d.ID
	fmt.Fprintf(&body, "\nTo deliver again once the endpoint works, call the admin API (Authorization: Bearer <admin token>):\n"+
		"  one delivery:      POST %s/api/deliveries/{delivery id}/redeliver\n"+
		"  all of the above:  POST %s/api/webhooks/%s/recover?since=%s\n"+
		"For example:\n  curl -X POST -H \"Authorization: Bearer $WALHOOK_ADMIN_TOKEN\" %s/api/deliveries/%s/redeliver\n",
		base, base, w.Name, since.UTC().Truncate(time.Second).Format(time.RFC3339), base, first)
	switch {
	case gone && w.Source == deliver.SourceAPI:
		fmt.Fprintf(&body, "Switch the webhook on again first: PATCH %s/api/webhooks/%s with {\"active\": true}.\n", base, w.Name)
	case gone:
		// The switch-off of a config webhook holds until its url changes.
		body.WriteString("Switch the webhook on again first: give it its new url in the config file and reload (SIGHUP).\n")
	}
	fmt.Fprintf(&body, "\nFurther failures of this webhook are collected and sent at most once every %s.\n", o.Interval)

	var msg bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&msg, "%s: %s\r\n", k, v) }
	// From and To are written from the parsed addresses only: the text
	// as given may carry a CR LF (in a comment, which ParseAddress
	// accepts) and so headers of its own.
	hdr("From", headerAddress(o.From))
	hdr("To", headerAddress(w.NotifyEmail))
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", fmt.Sprintf("<%s@walhook>", rand.Text()))
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	hdr("X-Walhook-Webhook", w.Name)
	msg.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&msg)
	qp.Write([]byte(strings.ReplaceAll(body.String(), "\n", "\r\n")))
	qp.Close()
	return msg.Bytes()
}

// address is the bare address of "Name <addr>" for MAIL FROM and RCPT TO.
func address(s string) string {
	if a, err := mail.ParseAddress(s); err == nil {
		return a.Address
	}
	return s
}

// CheckAddress reports why s cannot be a From or To address: a control
// character (a CR LF would start a header of its own) or not an address.
func CheckAddress(s string) error {
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("contains a control character (got %q)", s)
	}
	if _, err := mail.ParseAddress(s); err != nil {
		return fmt.Errorf("not an e-mail address (got %q)", s)
	}
	return nil
}

// headerAddress is s as a From or To header value: the parsed address,
// its display name encoded where it holds anything but printable ASCII;
// the bare address when s does not parse.
func headerAddress(s string) string {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return -1
			}
			return r
		}, s)
	}
	return a.String()
}

func lastAttempt(d deliver.Delivery) deliver.Attempt {
	if len(d.Attempts) == 0 {
		return deliver.Attempt{}
	}
	return d.Attempts[len(d.Attempts)-1]
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// oneLine flattens s to one line of at most max runes: a response body
// must not break the mail's layout.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "…"
	}
	return s
}
