package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"walhook/internal/testkit"
)

// TestNoSecretsInLogs runs walhook with every kind of secret it holds (the
// admin token, webhook secrets, custom header values, basic-auth passwords
// in basic_auth and in URLs, the DSN's password), in config webhooks and
// one made through the API, through deliveries that succeed, fail, retry
// and switch a webhook off (410), a ping, a replication connection killed
// and reopened, a SIGHUP with an invalid config and one with a new secret,
// and a graceful stop. The receivers show each secret was in use; none of
// them, nor a basic-auth header made of one, is in walhook's output
// (stdout and stderr) or in its .log files.
func TestNoSecretsInLogs(t *testing.T) {
	const (
		token       = "adm-TOKEN-Lk4w"
		dsnPassword = "dsn-PW-r2Vn"
		secret      = "hook-SECRET-a7Jd"
		secret2     = "hook-SECRET-NEW-c3Qp"
		newSecret   = "rot-SECRET-new-h5Xe"
		oldSecret   = "rot-SECRET-old-m8Tb"
		apiKey      = "hdr-VALUE-p1Gu"
		basicPW     = "basic-PW-w6Ky"
		urlPW       = "url-PW-e9Hs"
		apiSecret   = "api-SECRET-s4Nf"
		apiKey2     = "api-HDR-v7Rm"
		apiBasicPW  = "api-basic-PW-j2Dc"
		apiURLPW    = "api-url-PW-x5Lq"
	)
	secrets := []string{token, dsnPassword, secret, secret2, newSecret, oldSecret, apiKey, basicPW, urlPW, apiSecret, apiKey2, apiBasicPW, apiURLPW}
	for _, pw := range []string{basicPW, urlPW, apiBasicPW, apiURLPW} {
		secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte("u:"+pw))) // as in an Authorization header
	}

	rc := newReceiver(t, func(n int, r request) int {
		if r.Header.Get("X-Walhook-Webhook") == "gone" {
			return http.StatusGone
		}
		if r.Header.Get("X-Walhook-Webhook") == "signed" && r.Header.Get("X-Walhook-Attempt") == "1" {
			return http.StatusInternalServerError // a failed attempt, retried
		}
		return http.StatusOK
	})
	host := strings.TrimPrefix(rc.URL, "http://")
	dsn := newDatabase(t)
	execSQL(t, dsn, thingsSchema)
	admin, dir := freeAddr(t), t.TempDir()
	path := filepath.Join(dir, "config.toml")
	writeConfig := func(signedSecret, extra string) {
		t.Helper()
		text := strings.Replace(postgresSection(dsn), "postgres@", "postgres:"+dsnPassword+"@", 1) +
			fmt.Sprintf("[admin]\nlisten = %q\ntoken = %q\n", admin, token) +
			faultHook("signed", rc.URL+"/signed", fmt.Sprintf("secret = %q\nheaders = { \"X-Api-Key\" = %q }\nbasic_auth = { username = \"u\", password = %q }\n%s", signedSecret, apiKey, basicPW, extra)) +
			faultHook("rotating", rc.URL+"/rotating", fmt.Sprintf("secrets = [%q, %q]\nsignature = \"sha256\"\nsignature_header = \"X-Sig\"\n", newSecret, oldSecret)) +
			faultHook("gone", fmt.Sprintf("http://u:%s@%s/gone", urlPW, host), "")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(secret, "")
	logPath := filepath.Join(dir, "walhook.log")
	p := startProcess(t, logPath, "run", "-config", path)
	base := "http://" + admin
	waitFor(t, "/readyz 200", time.Minute, func() bool { return ready(base, token) })
	readLog := func() string { raw, _ := os.ReadFile(logPath); return string(raw) }

	if code, body := adminRequest(t, base, "POST", "/api/webhooks", fmt.Sprintf(`{"name": "api", "url": "http://u:%s@%s/api",
		"events": ["public.things"], "retry_mode": "test", "secret": %q, "headers": {"X-Api-Key": %q},
		"basic_auth": {"username": "u", "password": %q}}`, apiURLPW, host, apiSecret, apiKey2, apiBasicPW), bearer(token)); code != 201 {
		t.Fatalf("creating the API webhook: %d %s", code, body)
	}
	if code, body := adminRequest(t, base, "POST", "/api/webhooks/api/test", "", bearer(token)); code != 200 {
		t.Fatalf("ping: %d %s", code, body)
	}
	execSQL(t, dsn, `INSERT INTO things VALUES (1, 'a')`)
	byHook := func(name string) []request {
		var out []request
		for _, r := range rc.requests() {
			if r.Header.Get("X-Walhook-Webhook") == name {
				out = append(out, r)
			}
		}
		return out
	}
	waitFor(t, "every webhook's requests", time.Minute, func() bool {
		return len(byHook("signed")) == 2 && len(byHook("rotating")) == 1 && len(byHook("gone")) == 1 && len(byHook("api")) == 2
	})

	// Each secret was in use.
	for name, want := range map[string][2]string{"signed": {apiKey, basicPW}, "api": {apiKey2, apiBasicPW}, "gone": {"", urlPW}} {
		for _, r := range byHook(name) {
			hr := &http.Request{Header: r.Header}
			if _, pw, _ := hr.BasicAuth(); pw != want[1] || r.Header.Get("X-Api-Key") != want[0] {
				t.Errorf("%s: basic-auth password %q, X-Api-Key %q, want %q, %q", name, pw, r.Header.Get("X-Api-Key"), want[1], want[0])
			}
		}
	}
	for name, key := range map[string]string{"signed": secret, "api": apiSecret} {
		for _, r := range byHook(name) {
			if got, want := r.Header.Get("Webhook-Signature"), testkit.StandardSignature(t, key, r.Header.Get("Webhook-Id"), r.Header.Get("Webhook-Timestamp"), r.Body); got != want {
				t.Errorf("%s: Webhook-Signature %q, want %q (secret %s)", name, got, want, key)
			}
		}
	}
	if r := byHook("rotating")[0]; r.Header.Get("X-Sig") != hmacHex(newSecret, r.Body)+" "+hmacHex(oldSecret, r.Body) {
		t.Errorf("rotating: X-Sig %q, want one signature per secret, newest first", r.Header.Get("X-Sig"))
	}

	// The replication connection killed: walhook logs it and reconnects.
	pid := slotPID(t, dsn)
	execSQL(t, dsn, fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, pid))
	waitFor(t, "the slot read again", time.Minute, func() bool { n := slotPID(t, dsn); return n != 0 && n != pid })

	// A reload refused (max_attempts out of range), then one with a new secret.
	writeConfig(secret, "max_attempts = 12")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the refused reload in walhook's log", 30*time.Second, func() bool { return strings.Contains(readLog(), "invalid config") })
	writeConfig(secret2, "")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reload in walhook's log", 30*time.Second, func() bool { return strings.Contains(readLog(), "config reloaded") })
	execSQL(t, dsn, `INSERT INTO things VALUES (2, 'b')`)
	waitFor(t, "row 2 signed with the new secret", time.Minute, func() bool {
		for _, r := range byHook("signed") {
			if r.Header.Get("X-Walhook-Entity-Id") == "2" && r.Header.Get("Webhook-Signature") == testkit.StandardSignature(t, secret2, r.Header.Get("Webhook-Id"), r.Header.Get("Webhook-Timestamp"), r.Body) {
				return true
			}
		}
		return false
	})

	// A graceful stop writes out what is buffered.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("walhook after SIGTERM: %v", err)
	}

	logs := map[string]string{"walhook.log (stdout and stderr)": readLog()}
	filepath.WalkDir(filepath.Join(dir, "logs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			raw, _ := os.ReadFile(path)
			logs[filepath.Base(path)] = string(raw)
		}
		return nil
	})
	// What must be there, so that the search below is not of empty files.
	for file, want := range map[string][]string{
		"walhook.log (stdout and stderr)": {"410", "invalid config", "config reloaded"},
		"signed.log":                      {"status=500", "status=200"},
		"gone.log":                        {"status=410", "url=http://u:xxxxx@" + host + "/gone"},
		"api.log":                         {"event=ping", "url=http://u:xxxxx@" + host + "/api"},
	} {
		for _, w := range want {
			if !strings.Contains(logs[file], w) {
				t.Errorf("%s lacks %q:\n%s", file, w, logs[file])
			}
		}
	}
	for file, text := range logs {
		for _, s := range secrets {
			if i := strings.Index(text, s); i >= 0 {
				line := text[strings.LastIndex(text[:i], "\n")+1:]
				line, _, _ = strings.Cut(line, "\n")
				t.Errorf("%s shows the secret %q: %s", file, s, line)
			}
		}
	}
}

// ready reports whether walhook's /readyz answers 200 to the token.
func ready(base, token string) bool {
	req, _ := http.NewRequest("GET", base+"/readyz", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// hmacHex is the sha256 scheme's signature: sha256= and the hex HMAC.
func hmacHex(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// slotPID is the pid of the backend reading the test's slot, 0 when none.
func slotPID(t *testing.T, dsn string) int {
	t.Helper()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(context.Background())
	var pid int
	conn.QueryRow(context.Background(), `SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = $1`, slotFor(dsn)).Scan(&pid)
	return pid
}
