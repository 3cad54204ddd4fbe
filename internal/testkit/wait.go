package testkit

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails the test naming what it
// waited for when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Eventually polls cond until it holds and reports whether it did before
// timeout passed. It polls every 5 ms at first, then less often, at most
// every 20 ms: a condition that reads a receiver or an HTTP endpoint costs
// the machine less while a long wait goes on.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
	return true
}
