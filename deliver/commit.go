package deliver

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// appendFill is the bbolt FillPercent of buckets whose keys only grow.
const appendFill = 0.9

// commitItem is a transaction to enqueue or a delivery result to persist.
type commitItem struct {
	tx     *cdc.Tx
	routes [][]string // per event: names of the webhooks that want it
	upd    *update

	backfill      *Backfill // tx holds its rows (see Backfill)
	backfillState []byte    // stored with the rows
	endBackfill   bool      // the end of backfill: no rows
}

// update persists a delivery's new state and the webhook's counters.
type update struct {
	h      *hook
	seq    uint64 // 0: stats only
	rec    []byte
	record *record // of a done delivery, encoded into rec by the committer only if it is kept
	done   bool    // completed successfully: enters the retention index
	stats  bool    // the webhook's counters changed

	eventID string // of a done delivery: the retention index keeps it, so pruning decodes nothing
}

// encoded is the record to store.
func (u *update) encoded() []byte {
	if u.rec == nil && u.record != nil {
		u.rec = encodeRecord(u.record)
	}
	return u.rec
}

// prunedAtOnce picks the successes of a batch that the retention would
// prune in the same commit: the oldest beyond Retention per webhook. They
// are deleted, not written and then deleted.
func (q *Queue) prunedAtOnce(batch []commitItem) map[*update]bool {
	var done map[*hook][]*update
	for _, it := range batch {
		if u := it.upd; u != nil && u.done && u.seq != 0 {
			if done == nil {
				done = map[*hook][]*update{}
			}
			done[u.h] = append(done[u.h], u)
		}
	}
	var skip map[*update]bool
	for _, us := range done {
		extra := len(us) - q.opts.Retention
		if extra <= 0 {
			continue
		}
		slices.SortFunc(us, func(a, b *update) int { return cmp.Compare(a.seq, b.seq) })
		if skip == nil {
			skip = map[*update]bool{}
		}
		for _, u := range us[:extra] {
			skip[u] = true
		}
	}
	return skip
}

// commitLoop is the single writer. Transactions from the WAL are
// committed as soon as they come, many in one bbolt transaction, and
// Durable advances after each commit. Delivery outcomes wait up to
// outcomeLinger and go in with the next commit after that: nothing waits
// for them, and in a big batch the successes that retention would prune in
// the same commit are never written (see commit). A failed commit is
// retried with the same items; Durable stays where it was.
func (q *Queue) commitLoop() {
	defer close(q.committed)
	var (
		batch    []commitItem // transactions
		events   int          // in batch
		outcomes []commitItem // delivery outcomes, oldest first
		since    time.Time    // when the oldest outcome came
	)
	add := func(it commitItem) {
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
	released := time.Now()
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
	fill:
		for len(batch) < maxBatch && events < maxBatchEvents && len(outcomes) < maxOutcomes {
			select {
			case it := <-q.in:
				add(it)
			default:
				break fill
			}
		}
		withOutcomes := len(outcomes) > 0 && (len(outcomes) >= maxOutcomes || time.Since(since) >= outcomeLinger)
		if len(batch) == 0 && !withOutcomes {
			continue
		}
		items := batch
		if withOutcomes {
			items = append(slices.Clip(batch), outcomes...)
		}
		if err := q.commit(items); err != nil {
			q.log.Error("STORE COMMIT FAILED: deliveries are not persisted and the WAL position is not confirmed; retrying", "err", err, "items", len(items))
			e := fmt.Errorf("store commit: %w", err)
			q.health.Store(&e)
			select {
			case <-time.After(time.Second):
			case <-q.ctx.Done():
			}
			if q.ctx.Err() != nil {
				q.finalCommit(append(batch, outcomes...))
				return
			}
			continue
		}
		q.health.Store(nil)
		q.gate.release(events)
		batch, events = batch[:0], 0
		if withOutcomes {
			outcomes = outcomes[:0]
		}
		if time.Since(released) > releaseEvery {
			q.releaseMapped()
			released = time.Now()
		}
	}
}

// outcomeLinger is how long a delivery outcome may wait for its commit.
// Longer batches more outcomes per fsync and lets more successes skip the
// store (see commit); a crash within it sends those deliveries again, with
// the same id.
const outcomeLinger = 50 * time.Millisecond

// maxOutcomes commits the waiting outcomes before the linger ends.
const maxOutcomes = 8192

// releaseEvery is how often the committer drops the store's mapped pages
// from the resident set (see releaseMapped).
const releaseEvery = time.Second

// releaseMapped drops the store's mapped pages from the resident set (see
// dropMapped).
func (q *Queue) releaseMapped() {
	q.db.View(func(tx *bolt.Tx) error {
		dropMapped(tx)
		return nil
	})
}

// maxWaitingEvents bounds the events written but not yet committed: the
// chunks of a big transaction (see cdc.Tx) wait for the store rather than
// pile up in memory. One batch's worth: while it commits the reader decodes
// the next; letting a second batch wait as well only grew the heap
// (testdata/bench/2026-11-29-5-perf.txt).
const maxWaitingEvents = maxBatchEvents

// eventGate counts the events handed to the committer and not yet
// committed. Write (the Reader writes from one loop) and a backfill's
// WriteBackfill wait on it; each release wakes one of them, and whoever
// passes is released by a later commit, which wakes the next.
type eventGate struct {
	mu   sync.Mutex
	n    int
	free chan struct{} // signalled when n drops
}

// acquire waits until n more events fit. A single item bigger than the
// bound is let through when nothing else waits.
func (g *eventGate) acquire(ctx context.Context, closed <-chan struct{}, n int) error {
	for {
		g.mu.Lock()
		if g.n == 0 || g.n+n <= maxWaitingEvents {
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
			q.log.Error("store commit at close failed", "err", err, "items", len(batch))
			return
		}
		batch = nil
	}
}

// target is a webhook and the actions it wants, as a commit began.
type target struct {
	h        *hook
	actions  []string
	backfill *Backfill // under way for the webhook: notes its changes
}

// enqueued is a delivery created by a commit, handed to its webhook after.
type enqueued struct {
	h *hook
	p *pending
}

func (q *Queue) commit(batch []commitItem) error {
	// Resolve webhooks before the bbolt transaction: nothing inside it may
	// wait for a lock that is held around another bbolt transaction.
	q.mu.Lock()
	all := make([]*hook, 0, len(q.hooks))
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
		h.mu.Unlock()
		hooks[h.name] = t
	}

	// The counters as they are now: they include every update in the
	// batch, whatever order the workers sent them in.
	stats := map[*hook][]byte{}
	for _, it := range batch {
		if u := it.upd; u != nil && u.stats {
			if _, ok := stats[u.h]; !ok {
				u.h.mu.Lock()
				stats[u.h] = marshalStats(u.h.stats)
				u.h.mu.Unlock()
			}
		}
	}
	var (
		news      []enqueued
		doneAdded map[*hook]int
		pruned    map[*hook]int
		endLSN    uint64
		hasWrites bool
		filled    map[*Backfill][2]int64 // rows queued and left out
	)
	for _, it := range batch {
		if it.upd != nil {
			hasWrites = true
			continue
		}
		if it.tx.EndLSN > endLSN {
			endLSN = it.tx.EndLSN
		}
		if it.backfill != nil {
			hasWrites = true // its state, or its end
		}
		for _, names := range it.routes {
			if len(names) > 0 {
				hasWrites = true
			}
		}
	}
	skip := q.prunedAtOnce(batch)
	if hasWrites {
		err := q.db.Update(func(btx *bolt.Tx) error {
			news, doneAdded, pruned, filled = nil, map[*hook]int{}, map[*hook]int{}, nil
			if e := q.failCommit.Load(); e != nil {
				return *e
			}
			events := btx.Bucket(bucketEvents)
			// Keys grow with the WAL (events) and the sequence (deliveries):
			// bbolt's default half-full split would leave every page half
			// empty.
			events.FillPercent = appendFill
			meta := btx.Bucket(bucketMeta)
			var persisted uint64
			if v := meta.Get(keyDurable); len(v) == 8 {
				persisted = binary.BigEndian.Uint64(v)
			}
			stored := persisted // the end of the latest transaction stored, this batch's included
			bk := &txBuckets{btx: btx, queue: map[*hook]*bolt.Bucket{}, done: map[*hook]*bolt.Bucket{}}
			for _, it := range batch {
				if it.upd != nil {
					// Each webhook's counters go in once: they are the
					// same for the whole batch.
					st := stats[it.upd.h]
					delete(stats, it.upd.h)
					if err := q.applyUpdate(bk, it.upd, st, doneAdded, skip[it.upd]); err != nil {
						return err
					}
					continue
				}
				tx := it.tx
				if it.backfill != nil {
					if filled == nil {
						filled = map[*Backfill][2]int64{}
					}
					if err := q.enqueueBackfill(bk, meta, events, it, hooks, &news, filled); err != nil {
						return err
					}
					continue
				}
				if repeated(tx, stored) {
					continue
				}
				// A whole transaction past everything stored has no event
				// in the store yet: its events need no lookup. A last
				// chunk may follow chunks stored before a crash.
				fresh := tx.EndLSN != 0 && len(tx.Events) > 0 && tx.Events[0].Index == 0
				stored = max(stored, tx.EndLSN)
				for i := range tx.Events {
					ev := &tx.Events[i]
					if err := q.enqueueEvent(bk, events, ev, it.routes[i], hooks, fresh, &news); err != nil {
						return err
					}
				}
			}
			for h, added := range doneAdded {
				n, err := q.prune(bk, h, h.doneCount+added)
				if err != nil {
					return err
				}
				pruned[h] = n
			}
			if err := bk.applyDerefs(events); err != nil {
				return err
			}
			if endLSN > persisted {
				if err := meta.Put(keyDurable, binary.BigEndian.AppendUint64(nil, endLSN)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for h, added := range doneAdded {
		h.doneCount += added - pruned[h]
	}
	for b, n := range filled {
		b.sent.Add(n[0])
		b.skipped.Add(n[1])
	}
	for _, it := range batch {
		if it.endBackfill {
			q.endBackfill(it.backfill)
		}
	}
	q.countEvents(batch, q.durable.Load())
	if endLSN > q.durable.Load() {
		q.durable.Store(endLSN)
	}
	byHook := map[*hook][]*pending{}
	var order []*hook
	for _, e := range news {
		if _, ok := byHook[e.h]; !ok {
			order = append(order, e.h)
		}
		byHook[e.h] = append(byHook[e.h], e.p)
	}
	for _, h := range order {
		h.enqueue(byHook[h])
	}
	return nil
}

// repeated reports whether PostgreSQL sent tx again (after a restart or a
// reconnect) when everything up to stored is in the store: a transaction
// that ends there or before, or a chunk of one that commits before it
// (commits before the durable end are all durable).
func repeated(tx *cdc.Tx, stored uint64) bool {
	if tx.EndLSN != 0 {
		return tx.EndLSN <= stored
	}
	return tx.CommitLSN != 0 && tx.CommitLSN < stored
}

// enqueueBackfill stores a backfill item: its end drops the backfill's
// state; a chunk of rows stores its state and queues each row the
// backfill's webhook has no newer change of (see Backfill), counting the
// rows queued and left out in filled.
func (q *Queue) enqueueBackfill(bk *txBuckets, meta, events *bolt.Bucket, it commitItem, hooks map[string]target, news *[]enqueued, filled map[*Backfill][2]int64) error {
	if it.endBackfill {
		return meta.Delete(keyBackfill)
	}
	if it.backfillState != nil {
		if err := meta.Put(keyBackfill, it.backfillState); err != nil {
			return err
		}
	}
	n := filled[it.backfill]
	for i := range it.tx.Events {
		ev := &it.tx.Events[i]
		if len(it.routes[i]) == 0 {
			continue
		}
		if it.backfill.newer(ev) {
			n[1]++
			continue
		}
		before := len(*news)
		if err := q.enqueueEvent(bk, events, ev, it.routes[i], hooks, true, news); err != nil {
			return err
		}
		n[0] += int64(len(*news) - before)
	}
	filled[it.backfill] = n
	return nil
}

// countEvents adds the batch's events to walhook_events_total once it is
// committed, leaving out the transactions PostgreSQL sent again.
func (q *Queue) countEvents(batch []commitItem, durable uint64) {
	for _, it := range batch {
		tx := it.tx
		if tx == nil || it.backfill != nil || repeated(tx, durable) {
			continue
		}
		durable = max(durable, tx.EndLSN) // a repeat later in the same batch is left out too
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

// enqueueEvent stores ev once and one delivery per live, active webhook that
// wants it. An event already stored is a repeat and is skipped; fresh says
// none of its transaction can be (see commit).
func (q *Queue) enqueueEvent(bk *txBuckets, events *bolt.Bucket, ev *cdc.Event, names []string, hooks map[string]target, fresh bool, news *[]enqueued) error {
	if len(names) == 0 || (!fresh && events.Get([]byte(ev.ID)) != nil) {
		return nil
	}
	var targets []*hook
	for _, n := range names {
		t, ok := hooks[n]
		if !ok || t.h.deleted.Load() || !t.h.active.Load() || !slices.Contains(t.actions, ev.Action) {
			continue
		}
		targets = append(targets, t.h)
		if t.backfill != nil {
			t.backfill.saw(ev)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	v, err := encodeEvent(ev, uint32(len(targets)))
	if err != nil {
		return err
	}
	if err := events.Put([]byte(ev.ID), v); err != nil {
		return err
	}
	name := eventName(ev)
	sev := &event{Event: ev}
	for _, h := range targets {
		b, err := bk.queueOf(h, true)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		rec := &record{Status: StatusPending, EventID: ev.ID, Event: name, Entity: ev.Entity, EntityID: ev.EntityID, PrevEntityID: ev.PrevEntityID, CreatedAt: time.Now().UTC()}
		if err := b.Put(seqKey(seq), encodeRecord(rec)); err != nil {
			return err
		}
		*news = append(*news, enqueued{h, &pending{seq: seq, rec: rec, ev: sev}})
	}
	return nil
}

// applyUpdate stores a delivery's new state; pruned deletes a success at
// once (see prunedAtOnce).
func (q *Queue) applyUpdate(bk *txBuckets, u *update, stats []byte, doneAdded map[*hook]int, pruned bool) error {
	if u.h.deleted.Load() {
		return nil
	}
	if stats != nil {
		if err := bk.btx.Bucket(bucketStats).Put([]byte(u.h.name), stats); err != nil {
			return err
		}
	}
	if u.seq == 0 {
		return nil
	}
	b, _ := bk.queueOf(u.h, false)
	if b == nil {
		return nil
	}
	cur, _, ok := bk.find(b, seqKey(u.seq))
	if !ok {
		return nil // deleted meanwhile
	}
	if pruned {
		if err := cur.Delete(); err != nil {
			return err
		}
		bk.deref(u.eventID)
		return nil
	}
	if err := b.Put(seqKey(u.seq), u.encoded()); err != nil {
		return err
	}
	if u.done {
		d, err := bk.doneOf(u.h, true)
		if err != nil {
			return err
		}
		if err := d.Put(seqKey(u.seq), []byte(u.eventID)); err != nil {
			return err
		}
		doneAdded[u.h]++
	}
	return nil
}

// prune deletes the oldest completed deliveries beyond the retention.
func (q *Queue) prune(bk *txBuckets, h *hook, count int) (int, error) {
	excess := count - q.opts.Retention
	if excess <= 0 {
		return 0, nil
	}
	d, _ := bk.doneOf(h, false)
	b, _ := bk.queueOf(h, false)
	if d == nil || b == nil {
		return 0, nil
	}
	var keys, ids [][]byte
	c := d.Cursor()
	for k, id := c.First(); k != nil && len(keys) < excess; k, id = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
		ids = append(ids, append([]byte(nil), id...))
	}
	for i, k := range keys {
		if qc, v, ok := bk.find(b, k); ok {
			id := string(ids[i])
			if id == "" { // indexed before the index kept event ids
				if rec, err := decodeRecord(v); err == nil {
					id = rec.EventID
				}
			}
			if id != "" {
				bk.deref(id)
			}
			if err := qc.Delete(); err != nil {
				return 0, err
			}
		}
		if dc, _, ok := bk.find(d, k); ok {
			if err := dc.Delete(); err != nil {
				return 0, err
			}
		}
	}
	return len(keys), nil
}

// txBuckets caches a commit's bucket handles: each lookup is a B-tree
// search of its own, and a commit touches the same few buckets per item.
type txBuckets struct {
	btx    *bolt.Tx
	queue  map[*hook]*bolt.Bucket
	done   map[*hook]*bolt.Bucket
	derefs map[string]uint32 // references dropped per event, applied once at the end
	cursor map[*bolt.Bucket]*bolt.Cursor
}

// find positions a cursor of b on key. A commit keeps one cursor per
// bucket: Get and Delete make a new one each, and a new cursor allocates
// its path through the tree again.
func (c *txBuckets) find(b *bolt.Bucket, key []byte) (cur *bolt.Cursor, v []byte, ok bool) {
	cur = c.cursorOf(b)
	v, ok = seek(cur, key)
	return cur, v, ok
}

func (c *txBuckets) cursorOf(b *bolt.Bucket) *bolt.Cursor {
	cur := c.cursor[b]
	if cur == nil {
		if c.cursor == nil {
			c.cursor = map[*bolt.Bucket]*bolt.Cursor{}
		}
		cur = b.Cursor()
		c.cursor[b] = cur
	}
	return cur
}

// deref drops a reference to an event when the commit ends: the webhooks
// that share an event usually finish it in the same commit, and each
// decrement would rewrite the whole event.
func (c *txBuckets) deref(id string) {
	if c.derefs == nil {
		c.derefs = map[string]uint32{}
	}
	c.derefs[id]++
}

func (c *txBuckets) applyDerefs(events *bolt.Bucket) error {
	for id, n := range c.derefs {
		if err := derefEventN(events, c.cursorOf(events), id, n); err != nil {
			return err
		}
	}
	return nil
}

// queueOf is h's bucket of deliveries; nil without create when missing.
func (c *txBuckets) queueOf(h *hook, create bool) (*bolt.Bucket, error) {
	return c.bucket(c.queue, h, queueBucket(h.name), create)
}

// doneOf is h's index of completed deliveries.
func (c *txBuckets) doneOf(h *hook, create bool) (*bolt.Bucket, error) {
	return c.bucket(c.done, h, doneBucket(h.name), create)
}

func (c *txBuckets) bucket(cache map[*hook]*bolt.Bucket, h *hook, name []byte, create bool) (*bolt.Bucket, error) {
	if b := cache[h]; b != nil {
		return b, nil
	}
	b := c.btx.Bucket(name)
	if b == nil && create {
		var err error
		if b, err = c.btx.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	if b != nil {
		// Keys grow with the sequence: bbolt's default half-full split
		// would leave every page half empty.
		b.FillPercent = appendFill
		cache[h] = b
	}
	return b, nil
}

// send hands an update to the committer.
func (q *Queue) send(u *update) {
	select {
	case q.in <- commitItem{upd: u}:
	case <-q.committed:
	}
}

func marshalStats(s callStats) []byte {
	b, _ := json.Marshal(s)
	return b
}
