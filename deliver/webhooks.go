package deliver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SetConfigWebhooks replaces the webhooks defined in the config file.
// Queued deliveries of webhooks still present are kept; those of removed
// ones are dropped. API-defined webhooks are untouched.
func (q *Queue) SetConfigWebhooks(hooks []Webhook) error {
	if q.closed.Load() {
		return errClosed
	}
	want := map[string]Webhook{}
	for _, w := range hooks {
		w = w.clone()
		w.Source = SourceConfig
		if err := w.Validate(); err != nil {
			return fmt.Errorf("webhook %q: %w", w.Name, err)
		}
		if _, dup := want[w.Name]; dup {
			return fmt.Errorf("webhook %q: name: defined twice", w.Name)
		}
		want[w.Name] = w
	}
	q.admin.Lock()
	defer q.admin.Unlock()

	q.mu.Lock()
	var remove []*hook
	update := map[*hook]Webhook{}
	for name, h := range q.hooks {
		w, keep := want[name]
		src := h.webhook().Source
		if src == SourceAPI {
			if keep {
				q.mu.Unlock()
				return fmt.Errorf("webhook %q: name: already used by a webhook created through the API", name)
			}
			continue
		}
		if keep {
			update[h] = w
			delete(want, name)
		} else {
			remove = append(remove, h)
		}
	}
	q.mu.Unlock()

	for h, w := range update {
		if err := q.reloadWebhook(h, w); err != nil {
			return err
		}
	}
	for _, w := range want {
		h, err := q.newHook(w)
		if err != nil {
			return fmt.Errorf("webhook %q: %w", w.Name, err)
		}
		q.mu.Lock()
		q.hooks[w.Name] = h
		q.mu.Unlock()
	}
	for _, h := range remove {
		if err := q.dropHook(h); err != nil {
			return err
		}
	}
	if err := q.dropOrphans(); err != nil {
		return err
	}
	q.changed()
	return nil
}

// reloadWebhook gives config webhook h its definition w from the file. It
// stays switched off where the store says so (a 410, the admin switch) or a
// 410 has not been persisted yet, while its URL stays the same.
func (q *Queue) reloadWebhook(h *hook, w Webhook) error {
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	fileActive := w.Active
	h.mu.Lock()
	gone := h.goneURL != "" && h.goneURL == w.URL
	h.mu.Unlock()
	if err := q.db.Update(func(tx *bolt.Tx) error {
		if gone || switchedOff(tx, w.Name, w.URL) {
			w.Active = false
			return nil
		}
		return tx.Bucket(bucketActive).Delete([]byte(w.Name)) // its URL changed
	}); err != nil {
		return fmt.Errorf("webhook %q: %w", w.Name, err)
	}
	h.mu.Lock()
	h.fileActive = fileActive
	h.mu.Unlock()
	if err := h.setWebhook(w); err != nil {
		return fmt.Errorf("webhook %q: %w", w.Name, err)
	}
	return nil
}

// dropOrphans deletes the queues of webhooks that exist no more.
func (q *Queue) dropOrphans() error {
	q.mu.Lock()
	live := map[string]bool{}
	for n := range q.hooks {
		live[n] = true
	}
	q.mu.Unlock()
	var orphans []string
	q.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if n, ok := strings.CutPrefix(string(name), "q/"); ok && !live[n] {
				orphans = append(orphans, n)
			}
			return nil
		})
	})
	for _, n := range orphans {
		if err := q.dropQueue(n); err != nil {
			return fmt.Errorf("drop queue of %q: %w", n, err)
		}
		q.log.Info("dropped the queue of a removed webhook", "webhook", n)
	}
	return nil
}

// dropHook stops a webhook, aborting its requests, and drops its queue.
func (q *Queue) dropHook(h *hook) error {
	h.deleted.Store(true)
	q.mu.Lock()
	if q.hooks[h.name] == h {
		delete(q.hooks, h.name)
	}
	q.mu.Unlock()
	h.stop(true)
	h.closeLog()
	q.metrics.depth.DeleteLabelValues(h.name)
	err := q.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWebhooks).Delete([]byte(h.name))
	})
	if err == nil {
		err = q.dropQueue(h.name)
	}
	if err != nil {
		return fmt.Errorf("drop webhook %q: %w", h.name, err)
	}
	return nil
}

// dropChunk is how many deliveries one transaction of dropQueue deletes.
var dropChunk = 10000

// dropQueue deletes a webhook's deliveries, counters and override. The
// deliveries go dropChunk to a transaction, each with its reference on its
// event: a single transaction for a long queue held the store's only
// writer, and so every commit, for seconds, and took memory in proportion
// (1,000,000 deliveries: 3.4 s and 150 MB of heap). A crash in between
// leaves the queue of a webhook that exists no more, which dropOrphans
// finishes; no reference is dropped twice, as each goes with its delivery.
func (q *Queue) dropQueue(name string) error {
	for more := true; more; {
		err := q.db.Update(func(tx *bolt.Tx) error {
			more = false
			if b := tx.Bucket(queueBucket(name)); b != nil {
				events := tx.Bucket(bucketEvents)
				evc, c := events.Cursor(), b.Cursor()
				for n, v := 0, firstValue(c); v != nil; n, v = n+1, firstValue(c) {
					if n == dropChunk {
						more = true
						return nil
					}
					if rec, err := decodeRecord(v); err == nil {
						if err := derefEventN(events, evc, rec.EventID, 1); err != nil {
							return err
						}
					}
					if err := c.Delete(); err != nil {
						return err
					}
				}
			}
			// Empty now, in this transaction: a delivery queued again
			// (Redeliver) between two chunks has been dropped with its
			// reference too.
			for _, bk := range [][]byte{queueBucket(name), doneBucket(name)} {
				if tx.Bucket(bk) != nil {
					if err := tx.DeleteBucket(bk); err != nil {
						return err
					}
				}
			}
			if err := tx.Bucket(bucketStats).Delete([]byte(name)); err != nil {
				return err
			}
			return tx.Bucket(bucketActive).Delete([]byte(name))
		})
		if err == nil && q.afterDropChunk != nil {
			err = q.afterDropChunk()
		}
		if err != nil {
			return err
		}
		q.releaseMapped()
	}
	return nil
}

// firstValue moves c to its first key and returns that key's value, nil
// when the bucket is empty. A cursor's Next after its Delete can skip a key:
// deleting from the front, seek the front again.
func firstValue(c *bolt.Cursor) []byte {
	k, v := c.First()
	if k == nil {
		return nil
	}
	return v
}

// CreateWebhook adds a webhook through the API and persists it. Without a
// secret but with a signature scheme it generates one, returned only here.
func (q *Queue) CreateWebhook(w Webhook) (Webhook, error) {
	if q.closed.Load() {
		return Webhook{}, errClosed
	}
	w = w.clone()
	w.Source = SourceAPI
	if len(w.Secrets) == 0 && w.Signature != "" {
		key := make([]byte, 32)
		rand.Read(key)
		w.Secrets = []string{"whsec_" + base64.StdEncoding.EncodeToString(key)}
	}
	if err := w.Validate(); err != nil {
		return Webhook{}, err
	}
	q.admin.Lock()
	defer q.admin.Unlock()
	if q.hook(w.Name) != nil {
		return Webhook{}, fmt.Errorf("webhook %q: %w", w.Name, ErrExists)
	}
	if err := q.putWebhook(w); err != nil {
		return Webhook{}, err
	}
	h, err := q.newHook(w)
	if err != nil {
		return Webhook{}, err
	}
	q.mu.Lock()
	q.hooks[w.Name] = h
	q.mu.Unlock()
	q.changed()
	return w.clone(), nil
}

func (q *Queue) putWebhook(w Webhook) error {
	v, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encode webhook: %w", err)
	}
	if err := q.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWebhooks).Put([]byte(w.Name), v)
	}); err != nil {
		return fmt.Errorf("store webhook %q: %w", w.Name, err)
	}
	return nil
}

// UpdateWebhook changes an API-defined webhook through patch; config
// webhooks are read-only.
func (q *Queue) UpdateWebhook(name string, patch func(*Webhook) error) (Webhook, error) {
	q.admin.Lock()
	defer q.admin.Unlock()
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	h := q.hook(name)
	if h == nil {
		return Webhook{}, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	w := h.webhook()
	if w.Source == SourceConfig {
		return Webhook{}, fmt.Errorf("webhook %q: %w", name, ErrReadOnly)
	}
	if err := patch(&w); err != nil {
		return Webhook{}, err
	}
	if w.Name != name {
		return Webhook{}, fmt.Errorf("name: cannot be changed (got %q)", w.Name)
	}
	w.Source = SourceAPI
	if err := w.Validate(); err != nil {
		return Webhook{}, err
	}
	if err := q.putWebhook(w); err != nil {
		return Webhook{}, err
	}
	if err := h.setWebhook(w); err != nil {
		return Webhook{}, err
	}
	q.changed()
	return w.redacted(), nil
}

// DeleteWebhook removes an API-defined webhook and drops its queue.
func (q *Queue) DeleteWebhook(name string) error {
	q.admin.Lock()
	defer q.admin.Unlock()
	h := q.hook(name)
	if h == nil {
		return fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	if h.webhook().Source == SourceConfig {
		return fmt.Errorf("webhook %q: %w", name, ErrReadOnly)
	}
	if err := q.dropHook(h); err != nil {
		return err
	}
	q.changed()
	return nil
}

// SetActive switches a webhook on or off from the admin API. An API
// webhook changes as through UpdateWebhook. A config webhook keeps the
// switch in the store, as after a 410 Gone, until its URL changes in the
// file: switching it on clears that, and so brings back a webhook a 410
// switched off; it cannot override active = false in the file
// (ErrOffInFile).
func (q *Queue) SetActive(name string, active bool) (Webhook, error) {
	q.admin.Lock()
	h := q.hook(name)
	if h == nil {
		q.admin.Unlock()
		return Webhook{}, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	if h.webhook().Source == SourceAPI {
		q.admin.Unlock()
		return q.UpdateWebhook(name, func(w *Webhook) error { w.Active = active; return nil })
	}
	defer q.admin.Unlock()
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	h.mu.Lock()
	fileActive, url := h.fileActive, h.w.URL
	h.mu.Unlock()
	if active && !fileActive {
		return Webhook{}, fmt.Errorf("webhook %q: %w", name, ErrOffInFile)
	}
	err := q.db.Update(func(tx *bolt.Tx) error {
		if active {
			return tx.Bucket(bucketActive).Delete([]byte(name))
		}
		return keepSwitchedOff(tx, name, url)
	})
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook %q: %w", name, err)
	}
	h.mu.Lock()
	h.w.Active = active
	h.goneURL = "" // a 410 not persisted yet is superseded
	w := h.w.clone()
	h.mu.Unlock()
	h.active.Store(active)
	h.poke()
	q.changed()
	return w.redacted(), nil
}

// switchOff persists active=false after a 410 Gone. For a config webhook
// the store keeps an override until its URL changes in the config.
//
// It holds q.switchMu, as reloads and the admin API's changes do: one
// that came between the 410 and here either kept the webhook off (a reload
// of the same URL: goneURL) or superseded the 410 (activate, a new URL),
// and then nothing is switched off or persisted. Not q.admin: deleting a
// webhook holds that while it waits for the workers, one of which is here.
func (q *Queue) switchOff(h *hook, w Webhook) {
	if q.beforeSwitchOff != nil {
		q.beforeSwitchOff()
	}
	if q.persistSwitchOff(h, w) {
		q.changed() // outside switchMu: it may wait on PostgreSQL (the publication)
	}
}

// persistSwitchOff is switchOff's part under switchMu; it reports whether
// the webhook was switched off.
func (q *Queue) persistSwitchOff(h *hook, w Webhook) bool {
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	h.mu.Lock()
	superseded := h.goneURL != w.URL || h.w.URL != w.URL || h.w.Active
	h.goneURL = ""
	cur := h.w.clone()
	h.mu.Unlock()
	if superseded || h.deleted.Load() {
		return false
	}
	q.log.Warn("endpoint answered 410 Gone: webhook switched off", "webhook", w.Name, "url", redactURL(w.URL))
	var err error
	if cur.Source == SourceAPI {
		err = q.putWebhook(cur)
	} else {
		err = q.db.Update(func(tx *bolt.Tx) error { return keepSwitchedOff(tx, w.Name, cur.URL) })
	}
	if err != nil {
		q.log.Error("persist switched-off webhook", "webhook", w.Name, "err", err)
	}
	return true
}

// Webhooks returns all webhooks sorted by name, without secrets.
func (q *Queue) Webhooks() []Webhook {
	q.mu.Lock()
	hooks := make([]*hook, 0, len(q.hooks))
	for _, h := range q.hooks {
		hooks = append(hooks, h)
	}
	q.mu.Unlock()
	out := make([]Webhook, 0, len(hooks))
	for _, h := range hooks {
		out = append(out, h.webhook().redacted())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Webhook returns one webhook without secrets.
func (q *Queue) Webhook(name string) (Webhook, bool) {
	h := q.hook(name)
	if h == nil {
		return Webhook{}, false
	}
	return h.webhook().redacted(), true
}

// Stats returns a webhook's counters; zero for an unknown name.
func (q *Queue) Stats(name string) Stats {
	h := q.hook(name)
	if h == nil {
		return Stats{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{
		LatestStatus: h.stats.LatestStatus, SuccessfulCalls: h.stats.SuccessfulCalls,
		TotalCalls: h.stats.TotalCalls, LastAttemptAt: h.stats.LastAttemptAt,
		Queued: h.queued, Failed: h.failedN,
	}
}

// Deliveries returns a webhook's latest deliveries, newest first, filtered
// by status when status is not "".
func (q *Queue) Deliveries(name string, limit int, status string) ([]Delivery, error) {
	h := q.hook(name)
	if h == nil {
		return nil, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	switch status {
	case "", StatusPending, StatusSuccess, StatusFailed:
	default:
		return nil, fmt.Errorf("status: must be pending, success or failed (got %q)", status)
	}
	if limit <= 0 {
		limit = 100
	}
	h.mu.Lock()
	enc := h.enc
	h.mu.Unlock()
	var out []Delivery
	err := q.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(queueBucket(name))
		if b == nil {
			return nil
		}
		events := tx.Bucket(bucketEvents)
		c := b.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			if status != "" && v[0] != statusByte(status) {
				continue
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			d := Delivery{
				ID: deliveryID(name, binary.BigEndian.Uint64(k)), Webhook: name, EventID: rec.EventID,
				Event: rec.Event, EntityID: rec.EntityID, Status: rec.Status, CreatedAt: rec.CreatedAt,
				NextAttemptAt: rec.Due, Attempts: rec.Attempts,
			}
			if ev, err := decodeEvent(events.Get([]byte(rec.EventID))); err == nil {
				if body, err := enc.encode(&event{Event: ev}); err == nil {
					d.Payload = body.data
				}
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

func parseDeliveryID(id string) (string, uint64, error) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		return "", 0, fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	seq, err := strconv.ParseUint(id[i+1:], 16, 64)
	if err != nil || seq == 0 {
		return "", 0, fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	return id[:i], seq, nil
}

// Redeliver queues a past delivery again as a new one. A failed delivery
// is replaced by it; a successful one stays in the history.
func (q *Queue) Redeliver(id string) error {
	name, seq, err := parseDeliveryID(id)
	if err != nil {
		return err
	}
	h := q.hook(name)
	if h == nil {
		return fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	var r redelivered
	if err := q.db.Update(func(tx *bolt.Tx) error {
		r, err = redeliverIn(tx, name, seq)
		return err
	}); err != nil {
		return err
	}
	h.requeued([]redelivered{r})
	return nil
}

// redelivered is a delivery queued again, and whether it replaced a failed one.
type redelivered struct {
	p       *pending
	wasFail bool
}

// redeliverIn queues delivery seq of webhook name again within tx (see
// Redeliver).
func redeliverIn(tx *bolt.Tx, name string, seq uint64) (redelivered, error) {
	id := deliveryID(name, seq)
	b := tx.Bucket(queueBucket(name))
	var v []byte
	if b != nil {
		v = b.Get(seqKey(seq))
	}
	if v == nil {
		return redelivered{}, fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	if v[0] == recPending {
		return redelivered{}, fmt.Errorf("delivery %q is still pending", id)
	}
	old, err := decodeRecord(v)
	if err != nil {
		return redelivered{}, err
	}
	events := tx.Bucket(bucketEvents)
	ev, err := decodeEvent(events.Get([]byte(old.EventID)))
	if err != nil {
		return redelivered{}, err
	}
	if err := refEvent(events, old.EventID); err != nil {
		return redelivered{}, err
	}
	nseq, err := b.NextSequence()
	if err != nil {
		return redelivered{}, err
	}
	rec := &record{Status: StatusPending, EventID: old.EventID, Event: old.Event, Entity: old.Entity, EntityID: old.EntityID, PrevEntityID: old.PrevEntityID, CreatedAt: time.Now().UTC()}
	if err := b.Put(seqKey(nseq), encodeRecord(rec)); err != nil {
		return redelivered{}, err
	}
	r := redelivered{p: &pending{seq: nseq, rec: rec, ev: &event{Event: ev}}}
	if v[0] == recFailed {
		r.wasFail = true
		if err := b.Delete(seqKey(seq)); err != nil {
			return redelivered{}, err
		}
		if err := derefEvent(events, old.EventID); err != nil {
			return redelivered{}, err
		}
	}
	return r, nil
}

// requeued hands deliveries queued again, in sequence order, to the
// webhook's window.
func (h *hook) requeued(rs []redelivered) {
	ps := make([]*pending, len(rs))
	fails := 0
	for i, r := range rs {
		ps[i] = r.p
		if r.wasFail {
			fails++
		}
	}
	h.mu.Lock()
	h.failedN -= fails
	h.mu.Unlock()
	h.enqueue(ps)
}

// recoverChunk is how many deliveries one transaction of Recover queues
// again: one transaction, and fsync, per delivery took 0.67 ms each.
var recoverChunk = 1000

// Recover queues again every delivery of a webhook that failed since then.
// It returns how many it queued; those of a chunk that failed to commit
// are not counted.
func (q *Queue) Recover(name string, since time.Time) (int, error) {
	h := q.hook(name)
	if h == nil {
		return 0, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	var seqs []uint64
	err := q.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(queueBucket(name))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if v[0] != recFailed {
				return nil
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return nil
			}
			at := rec.CreatedAt
			if n := len(rec.Attempts); n > 0 {
				at = rec.Attempts[n-1].At
			}
			if !at.Before(since) {
				seqs = append(seqs, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for chunk := range slices.Chunk(seqs, recoverChunk) {
		var rs []redelivered
		err := q.db.Update(func(tx *bolt.Tx) error {
			for _, seq := range chunk {
				r, err := redeliverIn(tx, name, seq)
				if errors.Is(err, ErrNotFound) {
					continue // redelivered or dropped meanwhile
				}
				if err != nil {
					return err
				}
				rs = append(rs, r)
			}
			return nil
		})
		if err != nil {
			return n, err
		}
		h.requeued(rs)
		n += len(rs)
	}
	return n, nil
}

// Test sends a ping now, signed like any event, and counts it in the stats.
func (q *Queue) Test(ctx context.Context, name string) (Attempt, error) {
	h := q.hook(name)
	if h == nil {
		return Attempt{}, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	h.mu.Lock()
	w, enc, signer := h.w.clone(), h.enc, h.signer
	h.mu.Unlock()
	id := "ping-" + randomID(8)
	res := q.attempt(ctx, &w, signer, request{id: id, event: "ping", body: enc.encodePing(id, time.Now()), attempt: 1})
	q.logAttempt(h, &w, id, "ping", 1, res)
	ok := res.att.Status >= 200 && res.att.Status < 300
	h.mu.Lock()
	h.countLocked(res.att, ok)
	h.mu.Unlock()
	q.send(&update{h: h, stats: true})
	return res.att, nil
}
