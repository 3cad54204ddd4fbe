package deliver

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"walhook/cdc"
	"walhook/deliver/store"
)

// commitItem is a transaction to enqueue or a delivery result to persist.
type commitItem struct {
	tx     *cdc.Tx
	routes [][]string // per event: names of the webhooks that want it
	upd    *update

	flushed chan struct{} // closed once the outcomes before it are committed (Queue.flush)

	backfill      *Backfill // tx holds its rows (see Backfill)
	backfillState []byte    // stored with the rows
	endBackfill   bool      // the end of backfill: no rows
}

// update persists a delivery's new state and the webhook's counters.
type update struct {
	h      *dispatcher
	seq    uint64        // 0: counters only
	record *store.Record // nobody changes it until it is committed
	done   bool          // completed successfully: enters the retention index
	stats  bool          // the webhook's counters changed
	batch  []*update     // the other deliveries of a batch, committed with this one
}

// commitLoop is the single writer. Transactions from the WAL are
// committed as soon as they come, many in one bbolt transaction, and
// Durable advances after each commit. Delivery outcomes wait up to
// outcomeLinger and go in with the next commit after that: nothing waits
// for them, and in a big batch the successes that retention would prune in
// the same commit are never written (see store.Bolt.Commit). A failed commit is
// retried with the same items and what joins them, once the store may
// write again (see retryCommit); Durable stays where it was.
func (q *Queue) commitLoop() {
	defer close(q.committed)
	var (
		batch    []commitItem // transactions
		events   int          // in batch
		outcomes []commitItem // delivery outcomes, oldest first
		since    time.Time    // when the oldest outcome came
		flushes  []chan struct{}
	)
	add := func(it commitItem) {
		if it.flushed != nil {
			flushes = append(flushes, it.flushed)
			return
		}
		if it.upd != nil {
			if len(outcomes) == 0 {
				since = time.Now()
			}
			outcomes = append(outcomes, it)
			return
		}
		batch = append(batch, it)
		events += len(it.tx.Events)
	}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		if len(batch) == 0 {
			var due <-chan time.Time
			if len(outcomes) > 0 {
				linger.Reset(time.Until(since.Add(outcomeLinger)))
				due = linger.C
			}
			select {
			case it := <-q.in:
				add(it)
			case <-due:
			case <-q.ctx.Done():
				linger.Stop()
				q.finalCommit(append(batch, outcomes...))
				return
			}
			linger.Stop()
		}
		flushed := func() {
			for _, f := range flushes {
				close(f)
			}
			flushes = emptied(flushes)
		}
	fill:
		for len(batch) < maxBatch && events < maxBatchEvents && len(outcomes) < maxOutcomes {
			select {
			case it := <-q.in:
				add(it)
			default:
				break fill
			}
		}
		withOutcomes := len(outcomes) > 0 && (len(outcomes) >= maxOutcomes || time.Since(since) >= outcomeLinger || len(flushes) > 0)
		if len(batch) == 0 && !withOutcomes {
			if len(outcomes) == 0 {
				flushed()
			}
			continue
		}
		items := batch
		if withOutcomes {
			items = append(slices.Clip(batch), outcomes...)
		}
		if err := q.commit(items); err != nil {
			if errors.Is(err, store.ErrFenced) && len(batch) > 0 {
				// Another walhook leads now and writes these events (it
				// reads them from the slot, as nothing past the stored
				// position was confirmed): only the outcomes are kept.
				q.log.Warn("another walhook leads the store now: the events this one had not stored are left to it", "transactions", len(batch), "events", events)
				q.gate.release(events)
				batch, events = emptied(batch), 0
				continue
			}
			if !q.retryCommit(err, items) {
				q.finalCommit(append(batch, outcomes...))
				return
			}
			continue
		}
		q.storeWorks()
		q.gate.release(events)
		batch, events = emptied(batch), 0
		if withOutcomes {
			outcomes = emptied(outcomes)
		}
		if len(outcomes) == 0 { // every outcome handed over before a flush is stored
			flushed()
		}
	}
}

// emptied is s cleared for reuse. Only cleared: an item left behind
// in the backing array past the length is still reachable, and after a
// backlog (a store that failed, a restart) the batch's 2,048 items and
// the outcomes' 8,192 held their transactions' events and the attempts'
// headers and bodies as long as walhook ran, tens of MB
// (docs/bench-records/2026-12-06-29-full-disk.txt).
func emptied[S ~[]E, E any](s S) S {
	clear(s)
	return s[:0]
}

// outcomeLinger is how long a delivery outcome may wait for its commit.
// Longer batches more outcomes per fsync and lets more successes skip the
// store (see commit); a crash within it sends those deliveries again, with
// the same id.
const outcomeLinger = 50 * time.Millisecond

// maxOutcomes commits the waiting outcomes before the linger ends.
const maxOutcomes = 8192

// maxWaitingEvents bounds the events written but not yet committed: the
// chunks of a big transaction (see cdc.Tx) wait for the store rather than
// pile up in memory. One batch's worth: while it commits the reader decodes
// the next; letting a second batch wait as well only grew the heap
// (docs/bench-records/2026-11-29-5-perf.txt).
const maxWaitingEvents = maxBatchEvents

// faultWaitingEvents is maxWaitingEvents while the store cannot commit
// (see retryCommit). Reading has paused then anyway, and each retry builds
// the whole batch again in the store's transaction: a batch's worth held
// and built again was what grew walhook's memory most on a full disk
// (docs/bench-records/2026-12-06-29-full-disk.txt).
const faultWaitingEvents = 1000

// eventGate counts the events handed to the committer and not yet
// committed. Write (the Reader writes from one loop) and a backfill's
// WriteBackfill wait on it; each release wakes one of them, and whoever
// passes is released by a later commit, which wakes the next.
type eventGate struct {
	mu      sync.Mutex
	n       int
	failing bool          // the store cannot commit: the bound is faultWaitingEvents
	free    chan struct{} // signalled when n drops or the bound rises
}

// acquire waits until n more events fit. A single item bigger than the
// bound is let through when nothing else waits.
func (g *eventGate) acquire(ctx context.Context, closed <-chan struct{}, n int) error {
	for {
		g.mu.Lock()
		bound := maxWaitingEvents
		if g.failing {
			bound = faultWaitingEvents
		}
		if g.n == 0 || g.n+n <= bound {
			g.n += n
			g.mu.Unlock()
			return nil
		}
		g.mu.Unlock()
		select {
		case <-g.free:
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return errClosed
		}
	}
}

func (g *eventGate) release(n int) {
	if n == 0 {
		return
	}
	g.mu.Lock()
	g.n -= n
	g.mu.Unlock()
	g.wake()
}

// setFailing lowers the bound to faultWaitingEvents while the store
// cannot commit, and raises it again when it can. Events already let
// through stay; only what comes next waits.
func (g *eventGate) setFailing(failing bool) {
	g.mu.Lock()
	g.failing = failing
	g.mu.Unlock()
	if !failing {
		g.wake()
	}
}

func (g *eventGate) wake() {
	select {
	case g.free <- struct{}{}:
	default:
	}
}

// maxBatchEvents stops filling a batch: chunks of a big transaction (see
// cdc.Tx) are thousands of events each.
const maxBatchEvents = 8000

// finalCommit persists what was waiting and what is still sent when the
// Queue closes.
func (q *Queue) finalCommit(waiting []commitItem) {
	batch := waiting
	for {
	drain:
		for len(batch) < maxBatch+maxOutcomes {
			select {
			case it := <-q.in:
				batch = append(batch, it)
			default:
				break drain
			}
		}
		if len(batch) == 0 {
			return
		}
		if err := q.commit(batch); err != nil {
			q.notStored(err, batch)
			return
		}
		q.health.Store(nil)
		batch = nil
	}
}

// target is a webhook and the actions it wants, as a commit began.
type target struct {
	h        *dispatcher
	actions  []string
	filter   *Filter   // the webhook's when; nil: every event
	backfill *Backfill // under way for the webhook: notes its changes
}

// commit persists a batch through the store and hands the deliveries it
// queued to their webhooks. Who gets a delivery of each event is decided
// here, before the store's transaction, from the webhooks as the commit
// began: the store is never inside a lock of ours.
func (q *Queue) commit(batch []commitItem) error {
	hooks := q.targets()
	b, plan := q.batch(batch, hooks)
	if e := q.failCommit.Load(); e != nil && !b.Empty() {
		return *e
	}
	queued, err := q.st.Commit(b)
	if err != nil {
		return err
	}
	sent := map[*Backfill]int64{}
	byHook := map[*dispatcher][]*pending{}
	var order []*dispatcher
	var sev *event
	for _, d := range queued {
		h := hooks[d.Webhook].h
		if sev == nil || sev.Event != d.Event {
			sev = &event{Event: d.Event}
		}
		if _, ok := byHook[h]; !ok {
			order = append(order, h)
		}
		byHook[h] = append(byHook[h], &pending{seq: d.Seq, rec: d.Record, ev: sev})
		if bf := plan.backfills[d.Append]; bf != nil {
			sent[bf]++
		}
	}
	for bf, n := range sent {
		bf.sent.Add(n)
	}
	for bf, n := range plan.skipped {
		bf.skipped.Add(n)
	}
	for _, it := range batch {
		if it.endBackfill {
			q.endBackfill(it.backfill)
		}
	}
	q.countEvents(batch, q.durable.Load())
	if plan.endLSN > q.durable.Load() {
		q.durable.Store(plan.endLSN)
	}
	for _, h := range order {
		h.enqueue(byHook[h])
	}
	return nil
}

// targets snapshots the webhooks and the actions they want. It resolves
// them before the store's transaction: nothing inside that may wait for a
// lock that is held around another store transaction.
func (q *Queue) targets() map[string]target {
	q.mu.Lock()
	all := make([]*dispatcher, 0, len(q.hooks))
	for _, h := range q.hooks {
		all = append(all, h)
	}
	backfill := q.backfill
	q.mu.Unlock()
	hooks := make(map[string]target, len(all))
	for _, h := range all {
		t := target{h: h}
		if backfill != nil && backfill.Webhook == h.name {
			t.backfill = backfill
		}
		h.mu.Lock()
		t.actions = slices.Clone(h.w.Actions)
		t.filter = h.filter
		h.mu.Unlock()
		hooks[h.name] = t
	}
	return hooks
}

// batchPlan is what a commit does once the store has its batch.
type batchPlan struct {
	backfills []*Backfill         // per Append: the backfill whose rows it holds
	skipped   map[*Backfill]int64 // rows left out for a newer change
	endLSN    uint64              // the end of the batch's latest transaction
}

// batch turns commit items into the store's batch: each event's live,
// active webhooks that want its action; the rows of a backfill its webhook
// has a newer change of left out (see Backfill); each webhook's counters
// once, as they are now (they include every update in the batch, whatever
// order the workers sent them in).
func (q *Queue) batch(batch []commitItem, hooks map[string]target) (*store.Batch, batchPlan) {
	b := &store.Batch{}
	var plan batchPlan
	for _, it := range batch {
		if u := it.upd; u != nil {
			if u.h.deleted.Load() {
				continue
			}
			if u.stats {
				if _, ok := b.Counters[u.h.name]; !ok {
					if b.Counters == nil {
						b.Counters = map[string]store.Counters{}
					}
					u.h.mu.Lock()
					b.Counters[u.h.name] = u.h.stats
					u.h.mu.Unlock()
				}
			}
			if u.seq != 0 {
				b.Outcomes = append(b.Outcomes, store.Outcome{Webhook: u.h.name, Seq: u.seq, Record: u.record, Done: u.done})
			}
			for _, m := range u.batch {
				b.Outcomes = append(b.Outcomes, store.Outcome{Webhook: m.h.name, Seq: m.seq, Record: m.record, Done: m.done})
			}
			continue
		}
		plan.endLSN = max(plan.endLSN, it.tx.EndLSN)
		plan.backfills = append(plan.backfills, it.backfill)
		a := store.Append{Tx: it.tx, Targets: make([][]string, len(it.tx.Events)),
			Backfill: it.backfill != nil, BackfillState: it.backfillState, EndBackfill: it.endBackfill}
		for i := range it.tx.Events {
			ev := &it.tx.Events[i]
			if it.backfill != nil && len(it.routes[i]) > 0 && it.backfill.newer(ev) {
				if plan.skipped == nil {
					plan.skipped = map[*Backfill]int64{}
				}
				plan.skipped[it.backfill]++
				continue
			}
			a.Targets[i] = eventTargets(ev, it.routes[i], hooks)
		}
		b.Appends = append(b.Appends, a)
	}
	b.Charts = takeCharts(hooks, nil)
	return b, plan
}

// eventTargets are the webhooks among names that are live and active and
// want ev's action and whose when holds for it; a backfill under way for
// one of them notes the change. A when that fails on ev keeps ev from its
// webhook, which notes the error (see filterErrors).
func eventTargets(ev *cdc.Event, names []string, hooks map[string]target) []string {
	var out []string
	for _, n := range names {
		t, ok := hooks[n]
		if !ok || t.h.deleted.Load() || !t.h.active.Load() || !slices.Contains(t.actions, ev.Action) {
			continue
		}
		if t.backfill != nil {
			// Also when the when leaves the change out: the row the
			// backfill read is older than it either way.
			t.backfill.saw(ev)
		}
		if t.filter != nil {
			t.h.q.types.note(ev)
			pass, err := t.filter.Match(ev)
			if err != nil {
				t.h.filterFailed(ev, err)
			}
			if !pass {
				continue
			}
		}
		out = append(out, n)
	}
	return out
}

// countEvents adds the batch's events to walhook_events_total once it is
// committed, leaving out the transactions PostgreSQL sent again.
func (q *Queue) countEvents(batch []commitItem, durable uint64) {
	n := 0
	defer func() { q.rate.add(time.Now(), n) }()
	for _, it := range batch {
		tx := it.tx
		if tx == nil || it.backfill != nil || store.Repeated(tx, durable) {
			continue
		}
		durable = max(durable, tx.EndLSN) // a repeat later in the same batch is left out too
		n += len(tx.Events)
		for i := range tx.Events {
			ev := &tx.Events[i]
			entity := ev.Entity
			if entity == "" {
				entity = ev.QualifiedTable()
			}
			q.metrics.events.WithLabelValues(entity, ev.Action).Inc()
		}
	}
}

// send hands an update to the committer. While the store cannot commit it
// waits until it can: a worker then makes no more attempts whose outcomes
// would pile up with nowhere to go. Counters alone (a ping's) are not worth
// the wait.
func (q *Queue) send(u *update) {
	if back := q.storeWaits(); back != nil {
		if u.seq == 0 {
			select {
			case q.in <- commitItem{upd: u}:
			default:
			}
			return
		}
		select {
		case <-back:
		case <-q.committed:
			return
		}
	}
	select {
	case q.in <- commitItem{upd: u}:
	case <-q.committed:
	}
}
