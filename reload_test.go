package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestReloadSIGHUP runs the built binary, rewrites config.toml adding,
// changing and removing webhooks, sends SIGHUP and sees the change take
// effect while the deliveries queued for a failing receiver survive; then
// an invalid file is refused, logged with the key at fault, and the old
// config keeps working.
func TestReloadSIGHUP(t *testing.T) {
	dsn := itemsDatabase(t)
	var keepUp atomic.Bool
	keep := newReceiver(t, func(int, request) int {
		if keepUp.Load() {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	oldURL, newURL, removed, added := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)

	admin := freeAddr(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	hook := func(name, url string) string {
		return fmt.Sprintf("[[webhook]]\nname = %q\nurl = %q\nevents = [\"item\"]\nretry_mode = \"test\"\nmax_attempts = 8\n", name, url)
	}
	writeConfig := func(hooks ...string) {
		t.Helper()
		text := postgresSection(dsn) + fmt.Sprintf("[admin]\nlisten = %q\n[[entity]]\nname = \"item\"\ntable = \"public.items\"\n", admin) +
			strings.Join(hooks, "")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(hook("keep", keep.URL), hook("change", oldURL.URL), hook("remove", removed.URL))
	logPath := filepath.Join(dir, "walhook.log")
	p := startProcess(t, logPath, "run", "-config", path)
	waitReady(t, admin)
	webhooks := func() map[string]apiWebhook { return listWebhooks(t, admin) }

	execSQL(t, dsn, `INSERT INTO items VALUES (1, 1, 'before the reload')`)
	waitFor(t, "row 1 at the old URL and the removed webhook", 30*time.Second, func() bool {
		return itemIDs(oldURL)[1] && itemIDs(removed)[1] && webhooks()["keep"].Stats.Queued == 1
	})

	writeConfig(hook("keep", keep.URL), hook("change", newURL.URL), hook("add", added.URL))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reloaded webhooks", 30*time.Second, func() bool {
		w := webhooks()
		_, hasAdd := w["add"]
		_, hasRemove := w["remove"]
		return hasAdd && !hasRemove && w["change"].URL == newURL.URL
	})
	if q := webhooks()["keep"].Stats.Queued; q != 1 {
		t.Errorf("keep has %d queued deliveries after the reload, want the 1 from before", q)
	}

	execSQL(t, dsn, `INSERT INTO items VALUES (2, 2, 'after the reload')`)
	keepUp.Store(true)
	waitFor(t, "row 2 at the new URL and the added webhook, rows 1 and 2 at keep", 30*time.Second, func() bool {
		k := itemIDs(keep)
		return itemIDs(newURL)[2] && itemIDs(added)[2] && k[1] && k[2]
	})
	if itemIDs(oldURL)[2] || itemIDs(removed)[2] {
		t.Error("row 2 went to a URL or a webhook that the reload removed")
	}
	if itemIDs(newURL)[1] || itemIDs(added)[1] {
		t.Error("row 1, from before the reload, went to the new URL or the added webhook")
	}

	// An invalid file: logged with the key at fault, the old config kept.
	writeConfig(hook("keep", keep.URL), strings.Replace(hook("add", added.URL), "max_attempts = 8", "max_attempts = 12", 1))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invalid config in walhook's log", 30*time.Second, func() bool {
		raw, _ := os.ReadFile(logPath)
		return strings.Contains(string(raw), `invalid config, keeping the old one`) &&
			strings.Contains(string(raw), `webhook \"add\": max_attempts: must be 1..8 (got 12)`)
	})
	if _, ok := webhooks()["change"]; !ok {
		t.Error("the invalid config was applied: webhook change is gone")
	}
	execSQL(t, dsn, `INSERT INTO items VALUES (3, 3, 'after the refused reload')`)
	waitFor(t, "row 3 under the old config", 30*time.Second, func() bool { return itemIDs(newURL)[3] && itemIDs(added)[3] })
}

// itemIDs returns the ids of the items rows a receiver got events of.
func itemIDs(rc *receiver) map[int64]bool {
	ids := map[int64]bool{}
	for _, r := range rc.requests() {
		var ev struct{ Data struct{ ID int64 } }
		if json.Unmarshal(r.Body, &ev) == nil && ev.Data.ID != 0 {
			ids[ev.Data.ID] = true
		}
	}
	return ids
}

// apiWebhook is what the reload test reads of GET /api/webhooks.
type apiWebhook struct {
	Name, URL string
	Stats     struct{ Queued int }
}

// listWebhooks returns the webhooks of the admin API by name.
func listWebhooks(t *testing.T, admin string) map[string]apiWebhook {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/api/webhooks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []apiWebhook
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	out := map[string]apiWebhook{}
	for _, w := range list {
		out[w.Name] = w
	}
	return out
}

// TestReloadSMTP runs the built binary with a failing webhook that e-mails
// its failures, changes [smtp] port and sends SIGHUP: the next failure
// e-mail goes to the new SMTP server, the old one gets nothing more, and
// the log says the settings changed without showing the password.
func TestReloadSMTP(t *testing.T) {
	dsn := itemsDatabase(t)
	down := newReceiver(t, func(int, request) int { return http.StatusInternalServerError })
	oldSMTP, newSMTP := newSMTPSink(t), newSMTPSink(t)
	const oldPassword, newPassword = "reload-pw-OLD", "reload-pw-NEW"

	admin := freeAddr(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	// max_attempts = 1: the first 500 fails the delivery for good.
	hook := func(name string) string {
		return fmt.Sprintf("[[webhook]]\nname = %q\nurl = %q\nevents = [\"item\"]\nmax_attempts = 1\n"+
			"notify_email = \"ops@example.com\"\nnotify_on_failure = true\n", name, down.URL)
	}
	writeConfig := func(smtpPort int, password string, hooks ...string) {
		t.Helper()
		text := postgresSection(dsn) + fmt.Sprintf("[admin]\nlisten = %q\n", admin) +
			fmt.Sprintf("[smtp]\nhost = \"127.0.0.1\"\nport = %d\npassword = %q\nfrom = \"walhook@example.com\"\n", smtpPort, password) +
			"[[entity]]\nname = \"item\"\ntable = \"public.items\"\n" + strings.Join(hooks, "")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(oldSMTP.Port, oldPassword, hook("mail-a"))
	logPath := filepath.Join(dir, "walhook.log")
	p := startProcess(t, logPath, "run", "-config", path)
	waitReady(t, admin)
	readLog := func() string { raw, _ := os.ReadFile(logPath); return string(raw) }

	execSQL(t, dsn, `INSERT INTO items VALUES (1, 1, 'before the reload')`)
	waitFor(t, "mail-a's failure e-mail at the old SMTP server", 30*time.Second, func() bool { return len(oldSMTP.Messages()) == 1 })
	if m := oldSMTP.Messages()[0]; !strings.Contains(m.Body, "Webhook:  mail-a\n") || !strings.Contains(m.Body, "Entity id:   1\n") {
		t.Errorf("e-mail at the old server:\n%s", m.Body)
	}

	// mail-b is new, so its first failure is e-mailed at once (mail-a's
	// next waits for its interval).
	writeConfig(newSMTP.Port, newPassword, hook("mail-a"), hook("mail-b"))
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload in walhook's log", 30*time.Second, func() bool { return strings.Contains(readLog(), "config reloaded") })
	line := ""
	for _, l := range strings.Split(readLog(), "\n") {
		if strings.Contains(l, "smtp settings changed") {
			line = l
		}
	}
	if !strings.Contains(line, fmt.Sprintf("port=%d", newSMTP.Port)) {
		t.Errorf("the SMTP change is not logged with the new port: %q", line)
	}

	execSQL(t, dsn, `INSERT INTO items VALUES (2, 2, 'after the reload')`)
	waitFor(t, "mail-b's failure e-mail at the new SMTP server", 30*time.Second, func() bool { return len(newSMTP.Messages()) == 1 })
	if m := newSMTP.Messages()[0]; m.To != "ops@example.com" || !strings.Contains(m.Body, "Webhook:  mail-b\n") ||
		!strings.Contains(m.Body, "Entity id:   2\n") {
		t.Errorf("e-mail at the new server to %s:\n%s", m.To, m.Body)
	}
	if got := len(oldSMTP.Messages()); got != 1 {
		t.Errorf("the old SMTP server got %d e-mails, want only the one before the reload", got)
	}
	if l := readLog(); strings.Contains(l, oldPassword) || strings.Contains(l, newPassword) {
		t.Error("walhook's log shows the SMTP password")
	}
}
