package store

import (
	"cmp"
	"encoding/binary"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// Commit writes b in one bbolt transaction, fsynced, and returns the
// deliveries it queued, in order. A batch with nothing to write (no event
// wanted by any webhook, no outcome, no backfill) opens no transaction and
// stores no WAL position: the transactions PostgreSQL sends again after a
// restart queue nothing either. Successes of the batch that the retention
// would prune in the same commit are deleted, not written and then
// deleted.
func (s *Bolt) Commit(b *Batch) ([]Queued, error) {
	if b.Empty() {
		return nil, nil
	}
	skip := s.prunedAtOnce(b.Outcomes)
	var (
		queued []Queued
		added  map[string]int // retention index entries added, per webhook
		pruned map[string]int
		endLSN uint64
	)
	deliveries := 0 // at most, to allocate queued once
	for _, a := range b.Appends {
		if !a.Backfill {
			endLSN = max(endLSN, a.Tx.EndLSN)
		}
		for _, names := range a.Targets {
			deliveries += len(names)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.db.Update(func(btx *bolt.Tx) error {
		queued, added, pruned = nil, map[string]int{}, map[string]int{}
		if deliveries > 0 {
			queued = make([]Queued, 0, deliveries)
		}
		c := &commitTx{s: s, btx: btx, queue: map[string]*bolt.Bucket{}, done: map[string]*bolt.Bucket{}}
		s.scratch.reset()
		c.events = btx.Bucket(bucketEvents)
		// Keys grow with the WAL (events) and the sequence (deliveries):
		// bbolt's default half-full split would leave every page half
		// empty.
		c.events.FillPercent = appendFill
		meta := btx.Bucket(bucketMeta)
		var persisted uint64
		if v := meta.Get(keyDurable); len(v) == 8 {
			persisted = binary.BigEndian.Uint64(v)
		}
		stats := btx.Bucket(bucketStats)
		for name, st := range b.Counters {
			if err := stats.Put([]byte(name), marshalCounters(st)); err != nil {
				return err
			}
		}
		if err := putCharts(btx, b.Charts); err != nil {
			return err
		}
		for i := range b.Outcomes {
			o := &b.Outcomes[i]
			if err := c.apply(o, added, skip[o]); err != nil {
				return err
			}
		}
		stored := persisted // the end of the latest transaction stored, this batch's included
		for i := range b.Appends {
			a := &b.Appends[i]
			if err := c.append(i, a, &stored, meta, &queued); err != nil {
				return err
			}
		}
		for name, n := range added {
			p, err := c.prune(name, s.doneCount(btx, name)+n)
			if err != nil {
				return err
			}
			pruned[name] = p
		}
		if err := c.applyDerefs(); err != nil {
			return err
		}
		if endLSN > persisted {
			return meta.Put(keyDurable, binary.BigEndian.AppendUint64(nil, endLSN))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for name, n := range added {
		s.done[name] += n - pruned[name]
	}
	if endLSN > s.durable.Load() {
		s.durable.Store(endLSN)
	}
	if time.Since(s.released) > releaseEvery {
		s.releaseMapped()
		s.released = time.Now()
	}
	return queued, nil
}

// Empty reports whether b has nothing to store.
func (b *Batch) Empty() bool {
	if len(b.Outcomes) > 0 || len(b.Counters) > 0 || len(b.Charts) > 0 {
		return false
	}
	for _, a := range b.Appends {
		if a.Backfill {
			return false // its state, or its end
		}
		for _, names := range a.Targets {
			if len(names) > 0 {
				return false
			}
		}
	}
	return true
}

// doneCount is the number of entries in name's retention index before this
// commit; s.mu held.
func (s *Bolt) doneCount(btx *bolt.Tx, name string) int {
	n, ok := s.done[name]
	if !ok {
		if d := btx.Bucket(doneBucket(name)); d != nil {
			n = d.Stats().KeyN
		}
		s.done[name] = n
	}
	return n
}

// prunedAtOnce picks the successes of a batch that the retention would
// prune in the same commit: the oldest beyond the retention per webhook.
func (s *Bolt) prunedAtOnce(outcomes []Outcome) map[*Outcome]bool {
	return prunedAtOnce(outcomes, s.retention)
}

// prunedAtOnce picks the successes among outcomes that a retention of
// retention deliveries would prune in the same commit.
func prunedAtOnce(outcomes []Outcome, retention int) map[*Outcome]bool {
	var done map[string][]*Outcome
	for i := range outcomes {
		if o := &outcomes[i]; o.Done {
			if done == nil {
				done = map[string][]*Outcome{}
			}
			done[o.Webhook] = append(done[o.Webhook], o)
		}
	}
	var skip map[*Outcome]bool
	for _, list := range done {
		extra := len(list) - retention
		if extra <= 0 {
			continue
		}
		slices.SortFunc(list, func(a, b *Outcome) int { return cmp.Compare(a.Seq, b.Seq) })
		if skip == nil {
			skip = map[*Outcome]bool{}
		}
		for _, o := range list[:extra] {
			skip[o] = true
		}
	}
	return skip
}

// scratch hands out the bytes of the values a commit puts: bbolt reads
// them until the transaction ends, so chunks that the next commit reuses
// spare an allocation per value.
type scratch struct {
	chunks [][]byte // each scratchChunk bytes long
	i, n   int      // the chunk in use and its bytes handed out
}

const (
	scratchChunk = 64 << 10
	// keptChunks are kept for the next commit; a commit that queued a
	// very large transaction gives the rest back.
	keptChunks = 64
)

// add returns the bytes fill appends to an empty slice, in the chunk in
// use when they fit there.
func (s *scratch) add(fill func([]byte) ([]byte, error)) ([]byte, error) {
	if len(s.chunks) == 0 || s.n == scratchChunk {
		s.next()
	}
	chunk := s.chunks[s.i]
	v, err := fill(chunk[s.n:s.n])
	if err != nil || len(v) == 0 {
		return v, err
	}
	if &v[0] == &chunk[s.n] { // it fit
		s.n += len(v)
		return v[:len(v):len(v)], nil
	}
	// It did not, and fill's append gave it an array of its own. A small
	// one says the chunk is nearly full: the next go into a new one.
	if len(v) < scratchChunk/2 {
		s.next()
	}
	return v, nil
}

func (s *scratch) next() {
	if len(s.chunks) > 0 {
		s.i++
	}
	if s.i == len(s.chunks) {
		s.chunks = append(s.chunks, make([]byte, scratchChunk))
	}
	s.n = 0
}

// reset makes every chunk free for the next commit.
func (s *scratch) reset() {
	if len(s.chunks) > keptChunks {
		clear(s.chunks[keptChunks:])
		s.chunks = s.chunks[:keptChunks]
	}
	s.i, s.n = 0, 0
}

// commitTx is one commit's transaction and its cached bucket handles and
// cursors: each lookup is a B-tree search of its own, and a commit touches
// the same few buckets per item.
type commitTx struct {
	s      *Bolt
	btx    *bolt.Tx
	events *bolt.Bucket
	queue  map[string]*bolt.Bucket
	done   map[string]*bolt.Bucket
	derefs map[string]uint32 // references dropped per event, applied once at the end
	cursor map[*bolt.Bucket]*bolt.Cursor
}

// put stores key → the bytes value appends, written in the store's
// scratch chunks (bbolt copies keys itself, values only when it writes
// its pages).
func (c *commitTx) put(b *bolt.Bucket, key []byte, value func([]byte) ([]byte, error)) error {
	v, err := c.s.scratch.add(value)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// append queues an Append's deliveries; stored is the end of the latest
// transaction stored.
func (c *commitTx) append(i int, a *Append, stored *uint64, meta *bolt.Bucket, queued *[]Queued) error {
	if a.EndBackfill {
		return meta.Delete(keyBackfill)
	}
	if a.BackfillState != nil {
		if err := meta.Put(keyBackfill, a.BackfillState); err != nil {
			return err
		}
	}
	tx := a.Tx
	fresh := true
	if !a.Backfill {
		if Repeated(tx, *stored) {
			return nil
		}
		// A whole transaction past everything stored has no event in the
		// store yet: its events need no lookup. A last chunk may follow
		// chunks stored before a crash.
		fresh = tx.EndLSN != 0 && len(tx.Events) > 0 && tx.Events[0].Index == 0
		*stored = max(*stored, tx.EndLSN)
	}
	for j := range tx.Events {
		if err := c.queueEvent(i, &tx.Events[j], a.Targets[j], fresh, queued); err != nil {
			return err
		}
	}
	return nil
}

// queueEvent stores ev once and one delivery per webhook in names. An event
// already stored is a repeat and is skipped; fresh says none of its
// transaction can be.
func (c *commitTx) queueEvent(i int, ev *cdc.Event, names []string, fresh bool, queued *[]Queued) error {
	if len(names) == 0 || (!fresh && c.events.Get([]byte(ev.ID)) != nil) {
		return nil
	}
	refs := uint32(len(names))
	if err := c.put(c.events, []byte(ev.ID), func(b []byte) ([]byte, error) { return appendStoredEvent(b, ev, refs) }); err != nil {
		return err
	}
	name := EventName(ev)
	now := time.Now().UTC()
	for _, h := range names {
		b, err := c.queueOf(h, true)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		rec := &Record{Status: StatusPending, EventID: ev.ID, Event: name, Entity: ev.Entity, EntityID: ev.EntityID, PrevEntityID: ev.PrevEntityID, CreatedAt: now}
		if err := c.put(b, seqKey(seq), func(b []byte) ([]byte, error) { return appendRecord(b, rec), nil }); err != nil {
			return err
		}
		*queued = append(*queued, Queued{Append: i, Webhook: h, Seq: seq, Record: rec, Event: ev})
	}
	return nil
}

// EventName is the event type of ev's deliveries, entity.action; without
// an entity, the table's name stands for it.
func EventName(ev *cdc.Event) string {
	entity := ev.Entity
	if entity == "" {
		entity = ev.Table
		if ev.Schema != "public" && ev.Schema != "" {
			entity = ev.QualifiedTable()
		}
	}
	return entity + "." + ev.Action
}

// apply stores a delivery's new state; pruned deletes a success at once
// (see prunedAtOnce). A delivery deleted meanwhile stays deleted.
func (c *commitTx) apply(o *Outcome, added map[string]int, pruned bool) error {
	b, _ := c.queueOf(o.Webhook, false)
	if b == nil {
		return nil
	}
	key := seqKey(o.Seq)
	cur, _, ok := c.find(b, key)
	if !ok {
		return nil
	}
	if pruned {
		if err := cur.Delete(); err != nil {
			return err
		}
		c.deref(o.Record.EventID)
		return nil
	}
	if err := c.put(b, key, func(b []byte) ([]byte, error) { return appendRecord(b, o.Record), nil }); err != nil {
		return err
	}
	if o.Done {
		d, err := c.doneOf(o.Webhook, true)
		if err != nil {
			return err
		}
		if err := d.Put(key, []byte(o.Record.EventID)); err != nil {
			return err
		}
		added[o.Webhook]++
	}
	return nil
}

// prune deletes the oldest completed deliveries beyond the retention; count
// is the retention index's length. It returns how many it deleted.
func (c *commitTx) prune(name string, count int) (int, error) {
	excess := count - c.s.retention
	if excess <= 0 {
		return 0, nil
	}
	d, _ := c.doneOf(name, false)
	b, _ := c.queueOf(name, false)
	if d == nil || b == nil {
		return 0, nil
	}
	var keys, ids [][]byte
	dc := d.Cursor()
	for k, id := dc.First(); k != nil && len(keys) < excess; k, id = dc.Next() {
		keys = append(keys, append([]byte(nil), k...))
		ids = append(ids, append([]byte(nil), id...))
	}
	for i, k := range keys {
		if qc, v, ok := c.find(b, k); ok {
			id := string(ids[i])
			if id == "" { // indexed before the index kept event ids
				if rec, err := decodeRecord(v); err == nil {
					id = rec.EventID
				}
			}
			if id != "" {
				c.deref(id)
			}
			if err := qc.Delete(); err != nil {
				return 0, err
			}
		}
		if dc, _, ok := c.find(d, k); ok {
			if err := dc.Delete(); err != nil {
				return 0, err
			}
		}
	}
	return len(keys), nil
}

// find positions a cursor of b on key. A commit keeps one cursor per
// bucket: Get and Delete make a new one each, and a new cursor allocates
// its path through the tree again.
func (c *commitTx) find(b *bolt.Bucket, key []byte) (cur *bolt.Cursor, v []byte, ok bool) {
	cur = c.cursorOf(b)
	v, ok = seek(cur, key)
	return cur, v, ok
}

func (c *commitTx) cursorOf(b *bolt.Bucket) *bolt.Cursor {
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
func (c *commitTx) deref(id string) {
	if c.derefs == nil {
		c.derefs = map[string]uint32{}
	}
	c.derefs[id]++
}

func (c *commitTx) applyDerefs() error {
	for id, n := range c.derefs {
		if err := derefEventN(c.events, c.cursorOf(c.events), id, n); err != nil {
			return err
		}
	}
	return nil
}

// queueOf is name's bucket of deliveries; nil without create when missing.
func (c *commitTx) queueOf(name string, create bool) (*bolt.Bucket, error) {
	return c.bucket(c.queue, name, queueBucket(name), create)
}

// doneOf is name's index of completed deliveries.
func (c *commitTx) doneOf(name string, create bool) (*bolt.Bucket, error) {
	return c.bucket(c.done, name, doneBucket(name), create)
}

func (c *commitTx) bucket(cache map[string]*bolt.Bucket, name string, key []byte, create bool) (*bolt.Bucket, error) {
	if b := cache[name]; b != nil {
		return b, nil
	}
	b := c.btx.Bucket(key)
	if b == nil && create {
		var err error
		if b, err = c.btx.CreateBucketIfNotExists(key); err != nil {
			return nil, err
		}
	}
	if b != nil {
		// Keys grow with the sequence: bbolt's default half-full split
		// would leave every page half empty.
		b.FillPercent = appendFill
		cache[name] = b
	}
	return b, nil
}

// releaseMapped drops the store's mapped pages from the resident set (see
// dropMapped).
func (s *Bolt) releaseMapped() {
	s.db.View(func(tx *bolt.Tx) error {
		dropMapped(tx)
		return nil
	})
}
