package deliver_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"walhook/cdc"
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
	var got atomic.Int64
	// Counts only: recording would weigh in the CPU and allocations
	// measured.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
	}))
	defer srv.Close()
	e := newEnv(b, []string{"h"})
	e.setHooks(b, hook("h", srv.URL))
	const txSize = 10
	var lsn uint64 = 10
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cpu()
	for i := 0; i < b.N; i += txSize {
		evs := make([]cdc.Event, min(txSize, b.N-i))
		for j := range evs {
			evs[j] = event(lsn, uint32(j), int64(i+j), "bench@example.com")
		}
		if err := e.q.Write(b.Context(), txOf(lsn, evs...)); err != nil {
			b.Fatal(err)
		}
		lsn += 10
	}
	waitFor(b, 5*time.Minute, "every delivery", func() bool { return got.Load() >= int64(b.N) })
	b.StopTimer()
	b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-µs/delivery")
}
