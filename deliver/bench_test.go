package deliver_test

import (
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
