package deliver

import (
	"time"

	"walhook/deliver/store"
)

// chart is a webhook's chart as it is kept in memory, and which of its
// buckets changed since a commit last took them. Its dispatcher's mu
// guards it.
//
// Each attempt adds to two buckets (its minute and its quarter hour) and
// marks them; the committer stores the marked ones with the batch that
// carries the attempt's outcome, the same way the counters go (see
// Queue.batch). A commit that fails loses the marks, not the data: the
// bucket is stored whole with its next change.
type chart struct {
	c     store.Chart
	dirty [(store.ChartSlots + 63) / 64]uint64
}

// bucket returns the bucket of slot for the interval from start, emptied
// when it held an older interval, and marks it.
func (c *chart) bucket(slot int, start int64) *store.Bucket {
	b := &c.c[slot]
	if b.Start != start {
		if b.Start > start { // the clock went back: keep the newer one
			return &store.Bucket{}
		}
		*b = store.Bucket{Start: start} // its callers set the depth
	}
	c.dirty[slot/64] |= 1 << (slot % 64)
	return b
}

// attempt adds an attempt that ended at at.
func (c *chart) attempt(at time.Time, ok bool, d time.Duration, depth int) {
	bin := store.DurationBin(d)
	for _, b := range c.buckets(at) {
		if ok {
			b.OK++
		} else {
			b.Failed++
		}
		b.Durations[bin]++
		b.Depth = uint32(max(depth, 0))
	}
}

// depth notes the queue's depth at at.
func (c *chart) depth(at time.Time, depth int) {
	for _, b := range c.buckets(at) {
		b.Depth = uint32(max(depth, 0))
	}
}

func (c *chart) buckets(at time.Time) [2]*store.Bucket {
	ms, mstart := store.MinuteSlot(at)
	qs, qstart := store.QuarterSlot(at)
	return [2]*store.Bucket{c.bucket(ms, mstart), c.bucket(qs, qstart)}
}

// take appends the marked buckets to out and clears the marks.
func (c *chart) take(name string, out []store.ChartBucket) []store.ChartBucket {
	for i, word := range c.dirty {
		for word != 0 {
			bit := 0
			for word&(1<<bit) == 0 {
				bit++
			}
			word &^= 1 << bit
			slot := i*64 + bit
			out = append(out, store.ChartBucket{Webhook: name, Slot: slot, Bucket: c.c[slot]})
		}
		c.dirty[i] = 0
	}
	return out
}

// takeCharts gathers the chart buckets the webhooks changed since the last
// commit.
func takeCharts(hooks map[string]target, out []store.ChartBucket) []store.ChartBucket {
	for name, t := range hooks {
		t.h.mu.Lock()
		out = t.h.chart.take(name, out)
		t.h.mu.Unlock()
	}
	return out
}

// ChartPoint is one interval of a webhook's chart.
type ChartPoint struct {
	Start     time.Time `json:"start"`
	Delivered uint32    `json:"delivered"` // attempts answered 2xx
	Failed    uint32    `json:"failed"`    // attempts that failed: another status, a timeout, no connection
	// P50MS and P99MS are attempt durations in milliseconds, the upper
	// edge of the power-of-two bin the quantile falls in; 0 without an
	// attempt.
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
	// QueueDepth is the pending deliveries last seen in the interval (or
	// before it, when nothing changed within).
	QueueDepth uint32 `json:"queue_depth"`
}

// Chart is a webhook's attempts over a span, oldest interval first.
type Chart struct {
	Webhook  string       `json:"webhook"`
	Interval int          `json:"interval_seconds"`
	Points   []ChartPoint `json:"points"`
}

// Chart spans.
const (
	ChartHour = "1h"  // 60 one-minute intervals
	ChartDay  = "24h" // 96 fifteen-minute intervals
)

// Chart returns a webhook's chart over span (ChartHour or ChartDay) up to
// now; false for an unknown webhook.
func (q *Queue) Chart(name, span string, now time.Time) (Chart, bool) {
	h := q.dispatcherOf(name)
	if h == nil {
		return Chart{}, false
	}
	h.mu.Lock()
	c := h.chart.c
	h.mu.Unlock()
	if q.opts.Shared { // every walhook's attempts, as stored
		if stored, err := q.st.Chart(name); err == nil {
			c = stored
		} else {
			q.log.Warn("read a webhook's chart", "webhook", name, "err", err)
		}
	}
	first, n, step, slotOf := 0, store.ChartMinutes, int64(60), store.MinuteSlot
	if span == ChartDay {
		first, n, step, slotOf = store.ChartMinutes, store.ChartQuarters, 900, store.QuarterSlot
	}
	out := Chart{Webhook: name, Interval: int(step), Points: make([]ChartPoint, n)}
	_, last := slotOf(now)
	from := last - int64(n-1)*step
	// The depth before the span: that of the latest bucket before it.
	var depth uint32
	var depthAt int64
	for _, b := range c[first : first+n] {
		if b.Start != 0 && b.Start < from && b.Start > depthAt {
			depth, depthAt = b.Depth, b.Start
		}
	}
	for i := range out.Points {
		start := from + int64(i)*step
		p := &out.Points[i]
		p.Start = time.Unix(start, 0).UTC()
		slot, _ := slotOf(p.Start)
		b := c[slot]
		if b.Start != start {
			p.QueueDepth = depth
			continue
		}
		depth = b.Depth
		p.Delivered, p.Failed, p.QueueDepth = b.OK, b.Failed, b.Depth
		p.P50MS, p.P99MS = quantileMS(&b, 0.5), quantileMS(&b, 0.99)
	}
	return out, true
}

// quantileMS is the upper edge, in milliseconds, of the duration bin that
// holds quantile f of a bucket's attempts.
func quantileMS(b *store.Bucket, f float64) float64 {
	var total uint64
	for _, n := range b.Durations {
		total += uint64(n)
	}
	if total == 0 {
		return 0
	}
	rank := uint64(f*float64(total) + 0.999999)
	var seen uint64
	for i, n := range b.Durations {
		if seen += uint64(n); seen >= rank {
			return float64(uint64(1) << i)
		}
	}
	return float64(uint64(1) << (store.DurationBins - 1))
}
