package testkit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// StandardSignature is the Standard Webhooks signature of a request with
// the given Webhook-Id, Webhook-Timestamp and body, computed from the
// specification independently of package deliver: "v1," and the base64
// HMAC-SHA256 of "id.timestamp.body". It fails the test when secret is
// whsec_ followed by something that is not base64.
func StandardSignature(t testing.TB, secret, id, ts string, body []byte) string {
	t.Helper()
	sig, err := standardSignature(secret, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// StandardSignatureValid is a receiver's check: whether one of the
// signatures in h's Webhook-Signature is secret's over body. A bad secret
// makes every signature invalid. It does not fail the test, so a receiver's
// handler may call it.
func StandardSignatureValid(secret string, h http.Header, body []byte) bool {
	want, err := standardSignature(secret, h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), body)
	if err != nil {
		return false
	}
	for _, sig := range strings.Fields(h.Get("Webhook-Signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

// standardSignature keys the HMAC with the base64-decoded rest of a whsec_
// secret, and with any other secret as it is.
func standardSignature(secret, id, ts string, body []byte) (string, error) {
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(rest); err != nil {
			return "", fmt.Errorf("secret %q: %w", secret, err)
		}
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}
