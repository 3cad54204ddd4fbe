package deliver

import (
	"sync"
	"time"
)

// Overview is the queue at a glance, for the admin page's strip.
type Overview struct {
	EventsPerSecond float64 `json:"events_per_second"` // row changes read, over the last minute
	Queued          int     `json:"queued"`            // pending deliveries, all webhooks
	Failed          int     `json:"failed"`            // failed for good, kept until redelivered
	// OldestPending is when the oldest undelivered event was committed
	// (queued, for a backfill's rows); zero when nothing is pending.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
}

// Overview sums the webhooks' queues and finds the oldest event a delivery
// still waits for: the oldest head among each webhook's entities in
// memory, since the deliveries beyond a webhook's window are newer. With a
// shared store the queue's sizes are the store's, every walhook's; the
// events are those this walhook read (the leader's), and the oldest
// pending event is that of the partitions it delivers.
func (q *Queue) Overview(now time.Time) Overview {
	o := Overview{EventsPerSecond: q.rate.perSecond(now)}
	hooks := q.dispatchers()
	for _, h := range hooks {
		h.mu.Lock()
		o.Queued += h.queued
		o.Failed += h.failedN
		for _, list := range h.entities {
			if len(list) == 0 {
				continue
			}
			p := list[0]
			at := p.rec.CreatedAt
			if p.ev != nil && p.ev.Event != nil && !p.ev.CommitTime.IsZero() {
				at = p.ev.CommitTime
			}
			if o.OldestPending.IsZero() || at.Before(o.OldestPending) {
				o.OldestPending = at
			}
		}
		h.mu.Unlock()
	}
	if q.opts.Shared { // every walhook's queue, as stored
		o.Queued, o.Failed = 0, 0
		for _, h := range hooks {
			var st Stats
			q.sharedStats(h.name, &st)
			o.Queued += st.Queued
			o.Failed += st.Failed
		}
	}
	return o
}

// eventRate counts the events committed in each of the last 60 seconds.
type eventRate struct {
	mu     sync.Mutex
	counts [60]int
	secs   [60]int64 // the Unix second each count is of
}

func (r *eventRate) add(now time.Time, n int) {
	if n == 0 {
		return
	}
	sec := now.Unix()
	i := sec % 60
	r.mu.Lock()
	if r.secs[i] != sec {
		r.secs[i], r.counts[i] = sec, 0
	}
	r.counts[i] += n
	r.mu.Unlock()
}

// perSecond is the mean over the 60 seconds before now.
func (r *eventRate) perSecond(now time.Time) float64 {
	sec := now.Unix()
	total := 0
	r.mu.Lock()
	for i, s := range r.secs {
		if s > sec-60 && s <= sec {
			total += r.counts[i]
		}
	}
	r.mu.Unlock()
	return float64(total) / 60
}
