package deliver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"walhook/deliver/store"
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
	var remove []*dispatcher
	update := map[*dispatcher]Webhook{}
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
		h, err := q.newDispatcher(w)
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
func (q *Queue) reloadWebhook(h *dispatcher, w Webhook) error {
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	fileActive := w.Active
	h.mu.Lock()
	gone := h.goneURL != "" && h.goneURL == w.URL
	h.mu.Unlock()
	off := gone
	if !off {
		var err error
		if off, err = q.st.SwitchedOff(w.Name, w.URL); err != nil {
			return fmt.Errorf("webhook %q: %w", w.Name, err)
		}
	}
	if off {
		w.Active = false
	} else if err := q.st.SetSwitchedOff(w.Name, w.URL, false); err != nil { // its URL changed
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

// dropOrphans deletes the queues of webhooks that exist no more. In a
// shared store, only the leader does, as its config decides (the API's
// webhooks another walhook made and this one has not read yet are kept).
func (q *Queue) dropOrphans() error {
	if !q.mayDrop() {
		return nil
	}
	defs, err := q.st.WebhookDefs()
	if err != nil {
		return fmt.Errorf("list webhooks: %w", err)
	}
	q.mu.Lock()
	live := map[string]bool{}
	for n := range q.hooks {
		live[n] = true
	}
	q.mu.Unlock()
	for n := range defs {
		live[n] = true
	}
	queues, err := q.st.Queues()
	if err != nil {
		return fmt.Errorf("list queues: %w", err)
	}
	for _, n := range queues {
		if live[n] {
			continue
		}
		if err := q.st.DropQueue(n); err != nil {
			return fmt.Errorf("drop queue of %q: %w", n, err)
		}
		q.log.Info("dropped the queue of a removed webhook", "webhook", n)
	}
	return nil
}

// dropHook stops a webhook, aborting its requests, and drops its queue.
func (q *Queue) dropHook(h *dispatcher) error {
	h.deleted.Store(true)
	q.mu.Lock()
	if q.hooks[h.name] == h {
		delete(q.hooks, h.name)
	}
	q.mu.Unlock()
	h.stop(true)
	h.closeLog()
	q.metrics.depth.DeleteLabelValues(h.name)
	if h.webhook().Source == SourceConfig && !q.mayDrop() {
		return nil // the leader's reload drops it
	}
	err := q.st.DeleteWebhook(h.name)
	if err == nil {
		err = q.st.DropQueue(h.name)
	}
	if err != nil {
		return fmt.Errorf("drop webhook %q: %w", h.name, err)
	}
	return nil
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
	if q.dispatcherOf(w.Name) != nil {
		return Webhook{}, fmt.Errorf("webhook %q: %w", w.Name, ErrExists)
	}
	if err := q.putWebhook(w); err != nil {
		return Webhook{}, err
	}
	h, err := q.newDispatcher(w)
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
	if err := q.st.PutWebhook(w.Name, v); err != nil {
		return fmt.Errorf("store webhook %q: %w", w.Name, err)
	}
	return nil
}

// UpdateWebhook changes an API-defined webhook through patch; config
// webhooks are read-only.
//
// patch and Validate run without the queue's locks (a template is tried
// on a sample, the admin's patch asks PostgreSQL): the change is applied
// under them only if the definition is still the one patched, else patch
// runs again on the new one.
func (q *Queue) UpdateWebhook(name string, patch func(*Webhook) error) (Webhook, error) {
	for {
		h := q.dispatcherOf(name)
		if h == nil {
			return Webhook{}, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
		}
		was := h.webhook()
		if was.Source == SourceConfig {
			return Webhook{}, fmt.Errorf("webhook %q: %w", name, ErrReadOnly)
		}
		w := was.clone()
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
		done, err := q.applyUpdate(h, was, w)
		if done {
			return w.redacted(), err
		}
	}
}

// applyUpdate gives h the checked definition w unless it changed from was
// meanwhile (or h was deleted); it reports whether it did.
func (q *Queue) applyUpdate(h *dispatcher, was, w Webhook) (bool, error) {
	q.admin.Lock()
	defer q.admin.Unlock()
	q.switchMu.Lock()
	if q.dispatcherOf(w.Name) != h || !reflect.DeepEqual(h.webhook(), was) {
		q.switchMu.Unlock()
		return false, nil
	}
	err := q.putWebhook(w)
	if err == nil {
		err = h.setWebhook(w)
	}
	q.switchMu.Unlock()
	if err != nil {
		return true, err
	}
	q.changed()
	return true, nil
}

// DeleteWebhook removes an API-defined webhook and drops its queue.
func (q *Queue) DeleteWebhook(name string) error {
	q.admin.Lock()
	defer q.admin.Unlock()
	h := q.dispatcherOf(name)
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
	h := q.dispatcherOf(name)
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
	if err := q.st.SetSwitchedOff(name, url, !active); err != nil {
		return Webhook{}, fmt.Errorf("webhook %q: %w", name, err)
	}
	h.mu.Lock()
	h.w.Active = active
	h.goneURL = "" // a 410 not persisted yet is superseded
	persist := h.switchedOnLocked()
	w := h.w.clone()
	h.mu.Unlock()
	if persist {
		h.persistStats()
	}
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
func (q *Queue) switchOff(h *dispatcher, w Webhook) {
	if q.beforeSwitchOff != nil {
		q.beforeSwitchOff()
	}
	if q.persistSwitchOff(h, w) {
		q.changed() // outside switchMu: it may wait on PostgreSQL (the publication)
	}
}

// persistSwitchOff is switchOff's part under switchMu; it reports whether
// the webhook was switched off.
func (q *Queue) persistSwitchOff(h *dispatcher, w Webhook) bool {
	q.switchMu.Lock()
	defer q.switchMu.Unlock()
	h.mu.Lock()
	superseded := h.goneURL != w.URL || h.w.URL != w.URL || h.w.Active
	h.goneURL = ""
	cur, reason := h.w.clone(), h.offReason
	h.mu.Unlock()
	if superseded || h.deleted.Load() {
		return false
	}
	q.log.Warn("webhook "+reason, "webhook", w.Name, "url", RedactURL(w.URL))
	var err error
	if cur.Source == SourceAPI {
		err = q.putWebhook(cur)
	} else {
		err = q.st.SetSwitchedOff(w.Name, cur.URL, true)
	}
	if err != nil {
		q.log.Error("persist switched-off webhook", "webhook", w.Name, "err", err)
	}
	return true
}

// Webhooks returns all webhooks sorted by name, without secrets.
func (q *Queue) Webhooks() []Webhook {
	hooks := q.dispatchers()
	out := make([]Webhook, 0, len(hooks))
	for _, h := range hooks {
		out = append(out, h.webhook().redacted())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Webhook returns one webhook without secrets.
func (q *Queue) Webhook(name string) (Webhook, bool) {
	h := q.dispatcherOf(name)
	if h == nil {
		return Webhook{}, false
	}
	return h.webhook().redacted(), true
}

// Stats returns a webhook's counters; zero for an unknown name. With a
// shared store the counters and queue sizes are the store's: every
// walhook's.
func (q *Queue) Stats(name string) Stats {
	h := q.dispatcherOf(name)
	if h == nil {
		return Stats{}
	}
	h.mu.Lock()
	st := Stats{
		LatestStatus: h.stats.LatestStatus, SuccessfulCalls: h.stats.SuccessfulCalls,
		TotalCalls: h.stats.TotalCalls, LastAttemptAt: h.stats.LastAttemptAt,
		Queued: h.queued, Failed: h.failedN,
		FilterErrors: h.filterErrs.n, LastFilterError: h.filterErrs.last,
		SwitchedOff: h.offReason, FailingSince: h.stats.FailingSince,
	}
	h.mu.Unlock()
	if q.opts.Shared {
		q.sharedStats(name, &st)
	}
	return st
}

// Deliveries returns a webhook's latest deliveries, newest first, filtered
// by status when status is not "".
func (q *Queue) Deliveries(name string, limit int, status string) ([]Delivery, error) {
	h := q.dispatcherOf(name)
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
	stored, err := q.st.Deliveries(name, limit, status)
	if err != nil {
		return nil, err
	}
	out := make([]Delivery, 0, len(stored))
	for _, p := range stored {
		rec := p.Record
		d := Delivery{
			ID: deliveryID(name, p.Seq), Webhook: name, EventID: rec.EventID,
			Event: rec.Event, EntityID: rec.EntityID, Status: rec.Status, CreatedAt: rec.CreatedAt,
			NextAttemptAt: rec.Due, Attempts: rec.Attempts, Batch: rec.Batch,
		}
		if p.Event != nil && enc != nil {
			body, err := enc.encode(&event{Event: p.Event})
			if err == nil {
				d.Payload = body.data
			} else if errors.Is(err, ErrTemplateLimit) {
				enc = nil // each may take the template's time limit: the rest go without
			}
		}
		out = append(out, d)
	}
	return out, nil
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
	h := q.dispatcherOf(name)
	if h == nil {
		return fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	r, err := q.st.Redeliver(name, seq)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	case errors.Is(err, store.ErrPending):
		return fmt.Errorf("delivery %q is still pending", id)
	case err != nil:
		return err
	}
	h.requeued([]store.Redelivered{r})
	return nil
}

// requeued hands deliveries queued again, in sequence order, to the
// webhook's window.
func (h *dispatcher) requeued(rs []store.Redelivered) {
	ps := make([]*pending, len(rs))
	fails := 0
	for i, r := range rs {
		ps[i] = &pending{seq: r.Seq, rec: r.Record, ev: &event{Event: r.Event}}
		if r.WasFailed {
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
	h := q.dispatcherOf(name)
	if h == nil {
		return 0, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	seqs, err := q.st.FailedSince(name, since)
	if err != nil {
		return 0, err
	}
	n := 0
	for chunk := range slices.Chunk(seqs, recoverChunk) {
		rs, err := q.st.RedeliverFailed(name, chunk)
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
	h := q.dispatcherOf(name)
	if h == nil {
		return Attempt{}, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	h.mu.Lock()
	w, enc, signer := h.w.clone(), h.enc, h.signer
	h.mu.Unlock()
	id := "ping-" + randomID(8)
	res := q.attempt(ctx, &w, signer, request{id: id, event: "ping", body: enc.encodePing(id, time.Now()), attempt: 1, client: h.client})
	q.logAttempt(h, &w, id, "ping", 0, 1, res)
	ok := res.att.Status >= 200 && res.att.Status < 300
	h.mu.Lock()
	h.countLocked(res.att, ok)
	h.mu.Unlock()
	h.persistStats()
	return res.att, nil
}
