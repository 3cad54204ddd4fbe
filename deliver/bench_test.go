package deliver_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/internal/testkit"
)

// BenchmarkEnqueueBatch measures Write until durable: 100-event
// transactions, group-committed to bbolt with fsync, sent to a receiver.
func BenchmarkEnqueueBatch(b *testing.B) {
	rc := newReceiver(b, nil)
	e := newEnv(b, []string{"h"})
	e.setHooks(b, hook("h", rc.URL))
	b.ReportAllocs()
	var lsn uint64 = 10
	for b.Loop() {
		evs := make([]cdc.Event, 100)
		for j := range evs {
			evs[j] = event(lsn, uint32(j), int64(j), "bench@example.com")
		}
		if err := e.q.Write(b.Context(), txOf(lsn, evs...)); err != nil {
			b.Fatal(err)
		}
		lsn += 10
	}
	waitFor(b, time.Minute, "durable", func() bool { return e.q.Durable() == lsn-10+1 })
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDeliver measures the whole path in one process: Write, commit,
// the worker's request to a receiver that only counts, the outcome's
// commit. cpu-µs/delivery is the process's CPU time (receiver included)
// per delivery; allocs/op are per delivery too.
func BenchmarkDeliver(b *testing.B) {
	benchDeliveries(b, hook("h", ""), func(lsn uint64, j uint32, id int64) cdc.Event {
		return event(lsn, j, id, "bench@example.com")
	}, "cpu-µs/delivery")
}

// benchDeliveries writes b.N events made by mk, ten per transaction, for
// webhook w (its URL a receiver that only counts: recording would weigh
// in the CPU and allocations measured, a batch counting as its
// X-Walhook-Event-Count), waits until every one arrived and reports the
// process's CPU µs per event under unit.
func benchDeliveries(b *testing.B, w deliver.Webhook, mk func(lsn uint64, j uint32, id int64) cdc.Event, unit string) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n := int64(1)
		if c := r.Header.Get("X-Walhook-Event-Count"); c != "" {
			n, _ = strconv.ParseInt(c, 10, 64)
		}
		got.Add(n)
	}))
	defer srv.Close()
	e := newEnv(b, []string{w.Name})
	w.URL = srv.URL
	e.setHooks(b, w)
	const txSize = 10
	var lsn uint64 = 10
	b.ReportAllocs()
	b.ResetTimer()
	start := testkit.ProcessCPU()
	for i := 0; i < b.N; i += txSize {
		evs := make([]cdc.Event, min(txSize, b.N-i))
		for j := range evs {
			evs[j] = mk(lsn, uint32(j), int64(i+j))
		}
		if err := e.q.Write(b.Context(), txOf(lsn, evs...)); err != nil {
			b.Fatal(err)
		}
		lsn += 10
	}
	waitFor(b, 5*time.Minute, "every event", func() bool { return got.Load() >= int64(b.N) })
	b.StopTimer()
	b.ReportMetric(float64((testkit.ProcessCPU()-start).Microseconds())/float64(b.N), unit)
}
