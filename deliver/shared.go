package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"time"

	"walhook/deliver/store"
)

// A Queue whose store is shared with other walhooks (Options.Shared: a
// store in PostgreSQL) delivers only the partitions its walhook holds
// (Own; see store.Postgres.Claim), hears of new deliveries and changed
// webhooks from the others (Noted), and writes events only while its
// walhook leads (Lead).

// leaderStore is a store several walhooks share, one of which writes
// events (store.Postgres).
type leaderStore interface {
	Lead(ctx context.Context) error
}

// Parts are the partitions whose deliveries this Queue sends.
func (q *Queue) Parts() store.Parts { return store.Parts(q.parts.Load()) }

// Lead makes this Queue's walhook the one that writes events to the store
// (it has just taken the leader lock): the store fences the previous
// leader's writes, and Durable is the position the previous leader
// stored, which the reader starts from.
func (q *Queue) Lead(ctx context.Context) error {
	ls, ok := q.st.(leaderStore)
	if !ok {
		return nil
	}
	if err := ls.Lead(ctx); err != nil {
		return err
	}
	q.durable.Store(q.st.Durable())
	q.leading.Store(true)
	return nil
}

// Follow notes that this Queue's walhook no longer leads the store.
func (q *Queue) Follow() { q.leading.Store(false) }

// Own makes the Queue send the deliveries of parts, and no others. It
// returns when the deliveries of the partitions it gave up are no longer
// sent by it and their outcomes are stored, unless the store fails: then
// it waits for that at most ownFlush. Each webhook's window is read afresh
// from the store, as at a start. Requests under way may end for ownAbort;
// those that do not are aborted (they end as failed attempts, and go out
// again under the same ids): a slow receiver must not hold the change up
// while the leases run.
func (q *Queue) Own(parts store.Parts) {
	q.admin.Lock()
	defer q.admin.Unlock()
	was := store.Parts(q.parts.Swap(uint32(parts)))
	if was == parts || q.closed.Load() {
		return
	}
	hooks := q.dispatchers()
	var wg sync.WaitGroup
	for _, h := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			abort := h.abort
			t := time.AfterFunc(ownAbort, abort)
			h.stop(false)
			t.Stop()
		}()
	}
	wg.Wait()
	q.flush(ownFlush)
	for _, h := range hooks {
		if !h.deleted.Load() {
			h.restart()
		}
	}
	q.log.Info("delivering partitions", "parts", parts.Len(), "of", store.Partitions)
}

// ownAbort bounds Own's wait for the requests under way; ownFlush its wait
// for the outcomes of the partitions given up.
const (
	ownAbort = 2 * time.Second
	ownFlush = 5 * time.Second
)

// flush waits until the outcomes handed to the committer so far are
// stored, at most wait.
func (q *Queue) flush(wait time.Duration) {
	done := make(chan struct{})
	select {
	case q.in <- commitItem{flushed: done}:
	case <-q.ctx.Done():
		return
	case <-time.After(wait):
		return
	}
	select {
	case <-done:
	case <-q.ctx.Done():
	case <-time.After(wait):
	}
}

// restart starts a stopped dispatcher again, its window empty: it loads
// the pending deliveries of the Queue's partitions from the store.
func (h *dispatcher) restart() {
	h.mu.Lock()
	h.entities = map[entityKey][]*pending{}
	h.ready = nil
	h.inWindow, h.inFlight = 0, 0
	h.nextLoad, h.diskMore, h.queuedMeanwhile = 1, true, false
	h.forming, h.stored = nil, nil
	h.mu.Unlock()
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.reqCtx, h.abort = context.WithCancel(context.Background())
	h.refill()
	h.start()
}

// Noted takes what another walhook sharing the store told: deliveries
// queued up to a sequence (each webhook looks in the store for those of
// its partitions it has not read), or webhooks changed (read again).
func (q *Queue) Noted(n store.Note) {
	if q.closed.Load() {
		return
	}
	if n.Seq != 0 {
		for _, h := range q.dispatchers() {
			h.mu.Lock()
			if n.Seq >= h.nextLoad {
				h.diskMore, h.queuedMeanwhile = true, true
			}
			h.mu.Unlock()
			h.poke()
		}
	}
	if n.Webhooks {
		if err := q.syncWebhooks(); err != nil {
			q.log.Error("read the webhooks another walhook changed", "err", err)
		}
	}
}

// syncWebhooks brings the API's webhooks, and the config webhooks'
// switches, to what the store holds: another walhook sharing it changed
// them. Nothing is stored here, and no queue is dropped (the walhook that
// deleted a webhook dropped its queue).
func (q *Queue) syncWebhooks() error {
	defs, err := q.st.WebhookDefs()
	if err != nil {
		return err
	}
	stored, err := decodeWebhooks(defs)
	if err != nil {
		return err
	}
	q.admin.Lock()
	defer q.admin.Unlock()
	want := map[string]Webhook{}
	for _, w := range stored {
		want[w.Name] = w
	}
	changed := false
	for _, h := range q.dispatchers() {
		w, ok := want[h.name]
		delete(want, h.name)
		cur := h.webhook()
		switch {
		case cur.Source == SourceConfig:
			if q.syncSwitch(h) {
				changed = true
			}
		case !ok:
			h.deleted.Store(true)
			q.mu.Lock()
			delete(q.hooks, h.name)
			q.mu.Unlock()
			h.stop(true)
			h.closeLog()
			changed = true
		default:
			was, _ := json.Marshal(cur)
			if !bytes.Equal(was, defs[h.name]) {
				if err := h.setWebhook(w); err != nil {
					q.log.Error("webhook changed by another walhook is unusable", "webhook", h.name, "err", err)
					continue
				}
				changed = true
			}
		}
	}
	for _, w := range want {
		h, err := q.newDispatcher(w)
		if err != nil {
			q.log.Error("webhook created by another walhook is unusable", "webhook", w.Name, "err", err)
			continue
		}
		q.mu.Lock()
		q.hooks[w.Name] = h
		q.mu.Unlock()
		changed = true
	}
	if changed {
		q.changed()
	}
	return nil
}

// syncSwitch switches config webhook h off or on as the store says
// another walhook switched it; it reports whether it changed.
func (q *Queue) syncSwitch(h *dispatcher) bool {
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	h.mu.Lock()
	url, active, fileActive, gone := h.w.URL, h.w.Active, h.fileActive, h.goneURL != ""
	h.mu.Unlock()
	off, err := q.st.SwitchedOff(h.name, url)
	if err != nil || gone || off == !active || (!off && !fileActive) {
		return false
	}
	h.mu.Lock()
	h.w.Active = !off
	if off {
		h.offReason = "switched off by another walhook sharing the store"
	} else {
		h.switchedOnLocked() // the walhook that switched it on stores it
	}
	h.mu.Unlock()
	h.active.Store(!off)
	h.poke()
	return true
}

// sharedStats are a webhook's counters and queue sizes as the store holds
// them: the sums of every walhook sharing it.
func (q *Queue) sharedStats(name string, st *Stats) {
	sq, err := q.st.Queue(name)
	if err != nil {
		q.log.Warn("read a webhook's counters", "webhook", name, "err", err)
		return
	}
	st.LatestStatus, st.SuccessfulCalls, st.TotalCalls, st.LastAttemptAt = sq.Counters.LatestStatus, sq.Counters.SuccessfulCalls, sq.Counters.TotalCalls, sq.Counters.LastAttemptAt
	st.Queued, st.Failed = sq.Pending, sq.Failed
	if st.SwitchedOff != "" && sq.Counters.SwitchedOff != "" {
		st.SwitchedOff = sq.Counters.SwitchedOff // the walhook's that switched it off: a 410, disable_after
	}
}

// mayDrop reports whether the Queue drops the queues of config webhooks
// removed from its config: always on the local disk; in a shared store
// only while it leads.
func (q *Queue) mayDrop() bool { return !q.opts.Shared || q.leading.Load() }
