package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"walhook/internal/bench"
	"walhook/internal/testkit"
)

// TestHelperCeilingClient: bench-helper ceiling-client sends signed
// requests with the body it is given for -duration and prints how many
// were answered 2xx, which is what the server counted.
func TestHelperCeilingClient(t *testing.T) {
	srv := testkit.NewReceiver(t, func(_ int, r testkit.Request) testkit.Response {
		if string(r.Body) != `{"x":1}` || r.Header.Get("Webhook-Id") == "" || !strings.HasPrefix(r.Header.Get("Webhook-Signature"), "v1,") {
			return testkit.Response{Status: http.StatusBadRequest, Body: "not like walhook's"}
		}
		return testkit.Response{}
	})
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, []byte(`{"x":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := bench.Helper(t.Context(), []string{"ceiling-client", "-url", srv.URL, "-body", path, "-concurrency", "2", "-duration", "200ms"},
		&out, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Requests, Seconds float64 }
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("printed %q: %v", out.String(), err)
	}
	got := 0
	for _, req := range srv.Requests() {
		if req.Status/100 == 2 {
			got++
		}
	}
	if r.Requests < 1 || int(r.Requests) != got {
		t.Errorf("printed %v requests, the server answered %d with 2xx", r.Requests, got)
	}
	if r.Seconds < 0.2 {
		t.Errorf("seconds = %v, want at least the 200ms asked for", r.Seconds)
	}
}

// TestHelperServe: bench-helper serve hands the config and the worker
// count to the Serve it is given and writes the heap profile at the end.
func TestHelperServe(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "mem")
	var gotPath string
	var gotConcurrency int
	serve := func(ctx context.Context, path string, concurrency int) error {
		gotPath, gotConcurrency = path, concurrency
		return nil
	}
	err := bench.Helper(t.Context(), []string{"serve", "-config", "/x/config.toml", "-concurrency", "7", "-memprofile", prof}, io.Discard, io.Discard, serve)
	if err != nil {
		t.Fatal(err)
	}
	if gotPath != "/x/config.toml" || gotConcurrency != 7 {
		t.Errorf("serve got (%q, %d), want (/x/config.toml, 7)", gotPath, gotConcurrency)
	}
	if _, err := os.Stat(prof + ".end"); err != nil {
		t.Errorf("no heap profile at the end: %v", err)
	}
}

// TestHelperRefuses: no helper, an unknown one, or a stray argument is an
// error, not a silent run.
func TestHelperRefuses(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"bench"},
		{"ceiling-client", "-url", "http://127.0.0.1:1", "extra"},
	} {
		if err := bench.Helper(t.Context(), args, io.Discard, io.Discard, nil); err == nil {
			t.Errorf("Helper(%q) = nil, want an error", args)
		}
	}
}
