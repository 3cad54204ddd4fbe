package deliver

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// While the store cannot commit (a full or read-only file system, a
// PostgreSQL store that is down), walhook holds what is waiting and
// nothing more: the reader's Write stops at the events already handed over
// (eventGate, whose bound drops to faultWaitingEvents, so that little is
// held and built again at each retry), a worker waits with its attempt's
// outcome instead of retrying and piling up more (send), and the committer
// tries a probe that costs a page rather than building the whole batch
// again every second.
// Building it again was what grew walhook's memory on a full disk: tens of
// MB of garbage a second, held at its peak while bbolt wrote, with the
// outcomes of retries against a receiver that was down growing the batch
// to its limit.

// prober is a store that can tell cheaply whether it writes again
// (store.Bolt, store.Postgres). A store without Probe is tried with the
// batch itself. On a full disk bbolt's probe may pass while the batch
// still fails (a free page is reused, the batch needs the file to grow):
// the batch is then tried every maxRetryWait, which costs little as long
// as little waits (faultWaitingEvents).
type prober interface {
	Probe() error
}

// storeFault is the committer's state while commits fail.
type storeFault struct {
	back     atomic.Pointer[chan struct{}] // closed when commits work again; nil while they do
	since    time.Time                     // of the first failed commit; committer only
	tries    int                           // commits failed since
	reminded time.Time                     // the failure was last logged
	timer    *time.Timer                   // the committer's wait, made once
}

// ErrNotStored is what Close returns when the Queue stopped with
// transactions or outcomes its store never committed.
var ErrNotStored = errors.New("stopped with changes the store did not commit")

// Backoff of the full retries of a failed commit, and how often the
// failure is logged again.
const (
	probeEvery    = time.Second
	maxRetryWait  = 8 * time.Second
	remindFailing = 5 * time.Minute
)

// retryCommit notes a failed commit of items and waits until it is worth
// trying them again: a while (1 s, doubling to maxRetryWait), then until
// the store's probe passes. It returns false when the Queue closes
// meanwhile.
func (q *Queue) retryCommit(err error, items []commitItem) bool {
	q.gate.setFailing(true) // before Healthy says so (tests wait on that)
	e := fmt.Errorf("store commit: %w", err)
	q.health.Store(&e)
	f := &q.fault
	now := time.Now()
	if f.back.Load() == nil {
		back := make(chan struct{})
		f.back.Store(&back)
		f.since, f.tries, f.reminded = now, 0, now
		q.metrics.storeHealthy.Set(0)
		txs, events, outcomes := countItems(items)
		q.log.Error("STORE COMMIT FAILED: reading the WAL has paused and deliveries wait; nothing is confirmed to PostgreSQL past what is stored, and the replication connection is kept alive; retrying",
			"err", err, "transactions", txs, "events", events, "outcomes", outcomes, "confirmed_lsn", lsnText(q.durable.Load()))
	} else if now.Sub(f.reminded) >= remindFailing {
		f.reminded = now
		q.log.Error("STORE COMMIT STILL FAILING: reading the WAL is paused", "err", err, "since", f.since.UTC().Format(time.RFC3339), "tries", f.tries+1)
	}
	f.tries++
	if f.timer == nil {
		f.timer = time.NewTimer(probeEvery)
	}
	next := now.Add(min(time.Second<<min(f.tries-1, 4), maxRetryWait))
	p, _ := q.st.(prober)
	for {
		f.timer.Reset(probeEvery)
		select {
		case <-f.timer.C:
		case <-q.ctx.Done():
			return false
		}
		if q.closed.Load() {
			return false
		}
		if time.Now().Before(next) {
			continue
		}
		if p == nil || p.Probe() == nil {
			return true
		}
	}
}

// storeWorks notes a commit that worked: after failures, the readiness,
// the gauge and the workers waiting in send are told.
func (q *Queue) storeWorks() {
	q.health.Store(nil)
	f := &q.fault
	back := f.back.Load()
	if back == nil {
		return
	}
	f.back.Store(nil)
	q.gate.setFailing(false)
	close(*back)
	q.metrics.storeHealthy.Set(1)
	q.log.Info("store commits again: reading the WAL resumes", "failed_for", time.Since(f.since).Round(time.Second).String(), "tries", f.tries)
}

// storeWaits is closed when the store commits again; nil while it works.
func (q *Queue) storeWaits() <-chan struct{} {
	if back := q.fault.back.Load(); back != nil {
		return *back
	}
	return nil
}

// notStored says, as walhook stops, what its store never committed: the
// transactions are read again from the slot at the next start (nothing
// past them was confirmed), the deliveries whose outcomes are missing are
// sent again under the same ids.
func (q *Queue) notStored(err error, items []commitItem) {
	txs, events, outcomes := countItems(items)
	first, last := uint64(0), uint64(0)
	for _, it := range items {
		if it.tx != nil && it.backfill == nil && it.tx.EndLSN != 0 {
			if first == 0 {
				first = it.tx.EndLSN
			}
			last = max(last, it.tx.EndLSN)
		}
	}
	e := fmt.Errorf("%w: %d transactions (%d events) and %d delivery outcomes: %w", ErrNotStored, txs, events, outcomes, err)
	q.health.Store(&e)
	q.log.Error("stopping with the store failing: NOT STORED, and so not confirmed to PostgreSQL, which sends these changes again at the next start; deliveries whose outcome was not stored are sent again under the same ids",
		"err", err, "transactions", txs, "events", events, "first_end_lsn", lsnText(first), "last_end_lsn", lsnText(last),
		"outcomes", outcomes, "confirmed_lsn", lsnText(q.durable.Load()))
}

// countItems counts the transactions, their events and the delivery
// outcomes among items.
func countItems(items []commitItem) (txs, events, outcomes int) {
	for _, it := range items {
		if it.upd != nil {
			outcomes++
			continue
		}
		if it.tx != nil {
			txs++
			events += len(it.tx.Events)
		}
	}
	return txs, events, outcomes
}

// lsnText is an LSN as PostgreSQL writes it (16/B374D848).
func lsnText(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }
