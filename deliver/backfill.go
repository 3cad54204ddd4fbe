package deliver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"walhook/cdc"
)

// ErrBackfillRunning is returned by StartBackfill while a backfill is
// under way.
var ErrBackfillRunning = errors.New("a backfill is under way")

// Backfill brings a snapshot of existing rows into one webhook's queue,
// in order with the changes: a row goes in unless a change of it (or a
// TRUNCATE of its table) that commits at or after the snapshot's point
// was queued for the webhook first. Such a change is newer than the
// snapshot and goes out first; the row would undo it. The changes queued
// after the row go out after it. The committer makes that call, so
// nothing slips between the check and the row.
type Backfill struct {
	Webhook string
	at      atomic.Uint64 // the snapshot's point; 0 until known
	// seen holds, per entity key, the latest commit LSN of a change queued
	// for the webhook since the backfill started. Committer only.
	seen          map[string]uint64
	sent, skipped atomic.Int64
	ended         chan struct{} // closed once the committer came to its end
}

// StartBackfill registers a backfill of webhook name: from now on the
// committer notes the entities of its changes. Call it before the
// snapshot is taken, then WriteBackfill with the snapshot's rows and
// EndBackfill. One backfill runs at a time: two snapshots taken one after
// the other have different points, so their rows never share an event id.
//
// state is the caller's record of where the backfill stands; it is
// stored, and replaced with each WriteBackfill in the same commit as its
// rows, until EndBackfill: PendingBackfill gives it back after a restart.
func (q *Queue) StartBackfill(name string, state []byte) (*Backfill, error) {
	b := &Backfill{Webhook: name, seen: map[string]uint64{}, ended: make(chan struct{})}
	q.mu.Lock()
	_, ok := q.hooks[name]
	busy := q.backfill != nil
	if ok && !busy {
		q.backfill = b
	}
	q.mu.Unlock()
	switch {
	case !ok:
		return nil, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	case busy:
		return nil, ErrBackfillRunning
	}
	// Not under q.mu: nothing may hold it while waiting for the store.
	err := q.st.SetBackfill(state)
	if err != nil {
		q.mu.Lock()
		q.backfill = nil
		q.mu.Unlock()
		return nil, fmt.Errorf("store the backfill: %w", err)
	}
	return b, nil
}

// PendingBackfill is the state of a backfill that was under way when
// walhook stopped without ending it (nil: none).
func (q *Queue) PendingBackfill() []byte {
	state, err := q.st.Backfill()
	if err != nil {
		q.log.Error("read the pending backfill", "err", err)
	}
	return state
}

// DropBackfill forgets a pending backfill that will not be resumed.
func (q *Queue) DropBackfill() error {
	return q.st.SetBackfill(nil)
}

// SetPoint records the snapshot's WAL position: every change committed
// before it is in the rows, none committed at or after it.
func (b *Backfill) SetPoint(at uint64) { b.at.Store(at) }

// Sent and Skipped count the rows queued and those left out for a newer
// change, as the committer stored them.
func (b *Backfill) Sent() int64    { return b.sent.Load() }
func (b *Backfill) Skipped() int64 { return b.skipped.Load() }

// WriteBackfill hands a chunk of the snapshot's rows (create events) to
// the committer for b's webhook alone; the webhook's entities and ids
// come from the matcher, as for a change. It blocks only while the
// committer's backlog is full.
func (q *Queue) WriteBackfill(ctx context.Context, b *Backfill, tx *cdc.Tx, state []byte) error {
	item := commitItem{tx: tx, routes: make([][]string, len(tx.Events)), backfill: b, backfillState: state}
	for i := range tx.Events {
		if q.opts.Route != nil && slices.Contains(q.opts.Route(&tx.Events[i]), b.Webhook) {
			item.routes[i] = []string{b.Webhook}
		}
	}
	return q.hand(ctx, item)
}

// EndBackfill ends b once the committer has come to it: changes after
// that are queued after every row of it, and its state is dropped.
func (q *Queue) EndBackfill(ctx context.Context, b *Backfill) error {
	return q.hand(ctx, commitItem{tx: &cdc.Tx{}, backfill: b, endBackfill: true})
}

// LeaveBackfill unregisters b, interrupted before its end (walhook lost
// the lead, or stops): another backfill may start here, and the state
// stored with b's last rows stays for whoever resumes it.
func (q *Queue) LeaveBackfill(b *Backfill) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.backfill == b {
		q.backfill = nil
	}
}

// endBackfill unregisters b; committer only.
func (q *Queue) endBackfill(b *Backfill) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.backfill == b {
		q.backfill = nil
		close(b.ended)
	}
}

// Wait waits until the committer came to b's end: its rows are stored and
// Sent and Skipped are final.
func (b *Backfill) Wait(ctx context.Context) error {
	select {
	case <-b.ended:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func backfillKey(ev *cdc.Event, id string) string {
	return ev.Entity + "\x00" + id
}

// truncated is the key under which a TRUNCATE of an entity's table is
// noted: it is newer than every row of the table.
const truncated = "\x01truncate"

// saw notes a change queued for the webhook; committer only.
func (b *Backfill) saw(ev *cdc.Event) {
	if ev.Action == cdc.ActionTruncate {
		k := backfillKey(ev, truncated)
		b.seen[k] = max(b.seen[k], ev.CommitLSN)
		return
	}
	for _, id := range []string{ev.EntityID, ev.PrevEntityID} {
		if id == "" {
			continue
		}
		k := backfillKey(ev, id)
		b.seen[k] = max(b.seen[k], ev.CommitLSN)
	}
}

// newer reports whether a change of the row's entity, or a TRUNCATE of
// its table, that commits at or after the snapshot's point was queued
// already; committer only.
func (b *Backfill) newer(ev *cdc.Event) bool {
	at := b.at.Load()
	for _, id := range []string{ev.EntityID, truncated} {
		if lsn, ok := b.seen[backfillKey(ev, id)]; ok && lsn >= at {
			return true
		}
	}
	return false
}
