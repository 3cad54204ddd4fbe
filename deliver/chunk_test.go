package deliver_test

import (
	"net/http"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

// chunk is a part of the transaction at lsn; end is 0 but for the last.
func chunk(lsn, end uint64, evs ...cdc.Event) *cdc.Tx {
	return &cdc.Tx{CommitLSN: lsn, EndLSN: end, CommitTime: commitTime, Events: evs}
}

// TestChunkedTx: the chunks of a big transaction are queued as they come,
// Durable moves only with the last one, and when PostgreSQL sends the
// transaction again (after a crash mid-way or after it was whole) the
// events already stored are not queued twice.
func TestChunkedTx(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	first := chunk(100, 0, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x"))
	last := chunk(100, 150, event(100, 2, 3, "c@x"))

	e.write(t, first)
	waitFor(t, 10*time.Second, "the first chunk delivered", func() bool { return e.q.Stats("h").SuccessfulCalls == 2 })
	if d := e.q.Durable(); d != 0 {
		t.Fatalf("Durable = %d after a chunk before the last", d)
	}

	// A crash mid-transaction: it comes again from its start.
	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, chunk(100, 0, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	e.write(t, last)
	waitFor(t, 10*time.Second, "Durable at the transaction's end", func() bool { return e.q.Durable() == 150 })
	waitFor(t, 10*time.Second, "the last chunk delivered", func() bool { return e.q.Stats("h").SuccessfulCalls == 3 })

	// Sent again once whole (the confirmation had not reached PostgreSQL),
	// then a later transaction.
	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, chunk(100, 0, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	e.write(t, chunk(100, 150, event(100, 2, 3, "c@x")))
	e.write(t, txOf(300, event(300, 0, 4, "d@x")))
	waitFor(t, 10*time.Second, "the later transaction", func() bool { return e.q.Stats("h").SuccessfulCalls == 4 })
	if n := rc.count(); n != 4 {
		t.Errorf("%d requests, want 4 (one per event)", n)
	}
	seen := map[string]int{}
	for _, r := range rc.requests() {
		seen[r.Header.Get("Webhook-Id")]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s sent %d times", id, n)
		}
	}
	if d := e.q.Durable(); d != 301 {
		t.Errorf("Durable = %d, want 301", d)
	}
}

// TestRetryAfterFromResponse: Retry-After counts from when the response
// came, not from when the slow attempt started.
func TestRetryAfterFromResponse(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		time.Sleep(1500 * time.Millisecond) // a slow endpoint, not a wait in the test
		return http.StatusTooManyRequests, http.Header{"Retry-After": {"4"}}, "slow down"
	})
	e := newEnv(t, []string{"h"})
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, txOf(100, event(100, 0, 1, "a@x")))
	waitFor(t, 10*time.Second, "the first attempt persisted", func() bool {
		ds, _ := e.q.Deliveries("h", 1, "")
		return len(ds) == 1 && len(ds[0].Attempts) == 1
	})
	ds, _ := e.q.Deliveries("h", 1, "")
	a := ds[0].Attempts[0]
	if earliest := a.At.Add(a.Duration).Add(4 * time.Second); ds[0].NextAttemptAt.Before(earliest) {
		t.Errorf("next attempt at %s, before the response (%s after %s) plus Retry-After 4s", ds[0].NextAttemptAt, a.Duration, a.At)
	}
}

// TestChunkOfDurableTxSkipped: a transaction whose last chunk is stored is
// skipped whole when it comes again, also where retention already pruned
// its first chunk's events.
func TestChunkOfDurableTxSkipped(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, nil)
	e := newEnv(t, []string{"h"}, func(o *deliver.Options) { o.Retention = 1 })
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, chunk(100, 0, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	e.write(t, chunk(100, 150, event(100, 2, 3, "c@x")))
	waitFor(t, 10*time.Second, "the transaction delivered", func() bool { return e.q.Stats("h").SuccessfulCalls == 3 })
	waitFor(t, 10*time.Second, "Durable at its end", func() bool { return e.q.Durable() == 150 })

	e.reopen(t)
	e.setHooks(t, hook("h", rc.URL))
	e.write(t, chunk(100, 0, event(100, 0, 1, "a@x"), event(100, 1, 2, "b@x")))
	e.write(t, chunk(100, 150, event(100, 2, 3, "c@x")))
	e.write(t, txOf(300, event(300, 0, 4, "d@x")))
	waitFor(t, 10*time.Second, "the later transaction", func() bool { return e.q.Stats("h").SuccessfulCalls == 4 })
	if n := rc.count(); n != 4 {
		t.Errorf("%d requests, want 4: a repeated chunk was queued again", n)
	}
}
