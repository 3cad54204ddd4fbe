package testkit_test

import (
	"net/http"
	"testing"

	"walhook/internal/testkit"
)

// The example of the Standard Webhooks specification, checked the way a
// test computes it and the way a receiver verifies it.
func TestStandardSignatureKnownAnswer(t *testing.T) {
	const secret, id, ts, want = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	body := []byte(`{"test": 2432232314}`)
	if got := testkit.StandardSignature(t, secret, id, ts, body); got != want {
		t.Errorf("StandardSignature = %q, want %q", got, want)
	}
	h := http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}}
	for _, tc := range []struct {
		header string
		body   string
		valid  bool
	}{
		{want, string(body), true},
		{"v1,bm90LXRoZS1zaWduYXR1cmU= " + want, string(body), true}, // one of several (a rotated secret)
		{want, `{"test": 2432232315}`, false},
		{"v1,bm90LXRoZS1zaWduYXR1cmU=", string(body), false},
		{"", string(body), false},
	} {
		h.Set("Webhook-Signature", tc.header)
		if got := testkit.StandardSignatureValid(secret, h, []byte(tc.body)); got != tc.valid {
			t.Errorf("StandardSignatureValid(%q over %s) = %v, want %v", tc.header, tc.body, got, tc.valid)
		}
	}
	if testkit.StandardSignatureValid("whsec_not base64!", h, body) {
		t.Error("StandardSignatureValid accepts under a secret that is not base64")
	}
}
