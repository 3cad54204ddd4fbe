package main

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHTTPSReceiver: a receiver over HTTPS whose certificate an internal CA
// signed. Without that CA walhook refuses the connection, and the webhook's
// log says why; with SSL_CERT_FILE naming it, as the README says, the
// deliveries go out, signed.
func TestHTTPSReceiver(t *testing.T) {
	dsn := itemsDatabase(t)
	rc := newTLSReceiver(t, nil)
	caFile := filepath.Join(t.TempDir(), "internal-ca.pem")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rc.Certificate().Raw})
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}

	run := func(env []string, maxAttempts int) (p *process, logDir string) {
		t.Helper()
		p, _, dir := runItemsWalhook(t, dsn, fmt.Sprintf("[[webhook]]\nname = \"secure\"\nurl = %q\nevents = [\"item\"]\n"+
			"secret = \"s3cret-s3cret\"\nmax_attempts = %d\nretry_mode = \"test\"\n", rc.URL, maxAttempts), env)
		return p, filepath.Join(dir, "logs")
	}

	// The system's roots only: the certificate is refused.
	first, logDir := run([]string{"SSL_CERT_FILE=" + filepath.Join(t.TempDir(), "none.pem")}, 1)
	execSQL(t, dsn, `INSERT INTO items VALUES (1, 1, 'untrusted')`)
	hookLog := filepath.Join(logDir, "secure.log")
	var line string
	waitFor(t, "the refused attempt in secure.log", 30*time.Second, func() bool {
		raw, _ := os.ReadFile(hookLog)
		line = string(raw)
		return strings.Contains(line, "status=error")
	})
	if !strings.Contains(line, "certificate") {
		t.Errorf("the log does not say the certificate was refused: %q", line)
	}
	if n := len(rc.requests()); n != 0 {
		t.Errorf("the receiver got %d requests over a refused connection", n)
	}

	// SSL_CERT_FILE names the internal CA: delivered, signed. (The same
	// slot: the first walhook makes way.)
	first.kill()
	run([]string{"SSL_CERT_FILE=" + caFile}, 8)
	execSQL(t, dsn, `INSERT INTO items VALUES (2, 2, 'trusted')`)
	waitFor(t, "row 2 over HTTPS", 30*time.Second, func() bool { return itemIDs(rc)[2] })
	for _, r := range rc.requests() {
		if r.Header.Get("Webhook-Signature") == "" {
			t.Errorf("request without a signature: %v", r.Header)
		}
	}
}
