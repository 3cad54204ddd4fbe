package deliver_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"walhook/deliver"
	"walhook/internal/testkit"
)

// The example of the Standard Webhooks specification.
func TestSignStandardKnownAnswer(t *testing.T) {
	s := deliver.NewSigner(deliver.SignatureStandard, []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	got := s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

// verify checks a signature header value the way a receiver would,
// independently of the package: one signature per secret, newest first.
func verify(t *testing.T, scheme string, secrets []string, r received) {
	t.Helper()
	var header string
	if scheme == deliver.SignatureStandard {
		header = r.Header.Get("Webhook-Signature")
	} else {
		header = r.Header.Get("X-Walhook-Signature")
		if r.Header.Get("Webhook-Signature") != "" {
			t.Errorf("Webhook-Signature set with scheme %s", scheme)
		}
	}
	parts := strings.Split(header, " ")
	if len(parts) != len(secrets) {
		t.Fatalf("%s: %d signatures in %q, want %d", scheme, len(parts), header, len(secrets))
	}
	hm := func(h func() hash.Hash, key []byte, msg string) []byte {
		m := hmac.New(h, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	for i, sec := range secrets {
		var want string
		switch scheme {
		case deliver.SignatureStandard:
			want = testkit.StandardSignature(t, sec, r.Header.Get("Webhook-Id"), r.Header.Get("Webhook-Timestamp"), r.Body)
			// And the reference library of the specification.
			var wh *standardwebhooks.Webhook
			var err error
			if strings.HasPrefix(sec, "whsec_") {
				wh, err = standardwebhooks.NewWebhook(sec)
			} else {
				wh, err = standardwebhooks.NewWebhookRaw([]byte(sec))
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(r.Body, r.Header); err != nil {
				t.Errorf("standard-webhooks library rejects secret %d: %v", i, err)
			}
		case deliver.SignatureSHA256:
			want = "sha256=" + hex.EncodeToString(hm(sha256.New, []byte(sec), string(r.Body)))
		case deliver.SignatureSHA256Base64:
			want = base64.StdEncoding.EncodeToString(hm(sha256.New, []byte(sec), string(r.Body)))
		case deliver.SignatureSHA1:
			want = "sha1=" + hex.EncodeToString(hm(sha1.New, []byte(sec), string(r.Body)))
		}
		if parts[i] != want {
			t.Errorf("%s: signature %d = %q, want %q", scheme, i, parts[i], want)
		}
	}
}

func TestSignatureSchemes(t *testing.T) {
	secrets := []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")), "old-plain-secret"}
	for _, scheme := range []string{deliver.SignatureStandard, deliver.SignatureSHA256, deliver.SignatureSHA256Base64, deliver.SignatureSHA1} {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, nil)
			e := newEnv(t, []string{"h"})
			e.setHooks(t, hook("h", rc.URL, func(w *deliver.Webhook) { w.Secrets, w.Signature = secrets, scheme }))
			e.write(t, txOf(100, event(100, 0, 7, "a@example.com")))
			waitFor(t, 10*time.Second, "the request", func() bool { return rc.count() == 1 })
			r := rc.requests()[0]
			verify(t, scheme, secrets, r)
			ts, err := strconv.ParseInt(r.Header.Get("Webhook-Timestamp"), 10, 64)
			if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
				t.Errorf("Webhook-Timestamp = %q, want the current unix time", r.Header.Get("Webhook-Timestamp"))
			}

			// A ping is signed the same way.
			att, err := e.q.Test(t.Context(), "h")
			if err != nil || att.Status != 200 {
				t.Fatalf("Test = %d, %v", att.Status, err)
			}
			ping := rc.requests()[1]
			if !strings.HasPrefix(ping.Header.Get("Webhook-Id"), "ping-") {
				t.Errorf("ping Webhook-Id = %q", ping.Header.Get("Webhook-Id"))
			}
			verify(t, scheme, secrets, ping)
		})
	}
}

func BenchmarkSign(b *testing.B) {
	s := deliver.NewSigner(deliver.SignatureStandard, []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	body := []byte(strings.Repeat(`{"id":130333,"email":"john.doe@example.com"}`, 10))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s.Sign("00000000016B3A80-00000003", 1614265330, body)
	}
}
