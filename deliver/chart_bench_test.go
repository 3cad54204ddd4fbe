package deliver

import (
	"testing"
	"time"

	"walhook/deliver/store"
)

// BenchmarkChartAttempt is the chart's bookkeeping of one attempt, which
// each delivery's worker does under its dispatcher's lock, and the
// committer's take of the buckets it marked (once per commit, here once
// per attempt: the most it can cost). Against walhook's CPU per delivery
// (80-140 µs in docs/bench-records) it tells what the charts cost:
//
//	go test -run XXX -bench Chart ./deliver/
func BenchmarkChartAttempt(b *testing.B) {
	var c chart
	out := make([]store.ChartBucket, 0, 4)
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for i := 0; b.Loop(); i++ {
		c.attempt(at.Add(time.Duration(i)*time.Millisecond), i%7 != 0, 12*time.Millisecond, 3)
		out = c.take("h", out[:0])
	}
	if len(out) != 2 {
		b.Fatalf("took %d buckets, want the minute's and the quarter hour's", len(out))
	}
}
