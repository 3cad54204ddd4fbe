package testkit_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"walhook/internal/testkit"
)

// TestReceiver: each request is recorded with what it carried and what it
// was answered; the hook's answer reaches the client; a delayed answer
// ends when the client gives the request up.
func TestReceiver(t *testing.T) {
	rc := testkit.NewReceiver(t, func(n int, r testkit.Request) testkit.Response {
		switch n {
		case 1:
			return testkit.Response{Status: http.StatusTeapot, Header: http.Header{"X-Answer": {"one"}}, Body: "short and stout"}
		case 2:
			return testkit.Response{Delay: time.Minute}
		}
		return testkit.Response{}
	})
	resp, err := http.Post(rc.URL+"/hook?a=1", "application/json", strings.NewReader(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || resp.Header.Get("X-Answer") != "one" || string(body) != "short and stout" {
		t.Errorf("answer: %d %v %q", resp.StatusCode, resp.Header, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rc.URL, nil)
	start := time.Now()
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("delayed answer: %v, want the client's deadline", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the delayed request took %s", d)
	}

	got := rc.Requests()
	if len(got) != 2 || rc.Count() != 2 {
		t.Fatalf("recorded %d requests (Count %d), want 2", len(got), rc.Count())
	}
	first := got[0]
	if first.Method != "POST" || first.Path != "/hook" || first.Query != "a=1" || string(first.Body) != `{"x":1}` ||
		first.Header.Get("Content-Type") != "application/json" || first.Status != http.StatusTeapot || first.At.IsZero() {
		t.Errorf("first request recorded as %+v", first)
	}
	if last := rc.Last(t); last.Method != "GET" || last.Status != http.StatusOK {
		t.Errorf("last request recorded as %+v", last)
	}
}
