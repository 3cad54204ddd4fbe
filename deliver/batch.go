package deliver

import (
	"cmp"
	"container/heap"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	"walhook/cdc"
)

// A webhook with batch_size > 1 sends up to that many events in one
// request (issue 18). A batch is formed of due deliveries each at the head
// of its entities, so one entity's events keep their commit order within
// a batch (it has at most one of them) and across batches (the next waits
// until the batch is done). The batch's attempt is filed on each of its
// deliveries, which then name it (store.Record.Batch): a failed batch is
// retried whole and fails whole, and after a restart its pending
// deliveries form it again.

// batch is the deliveries one request carries, in queue order.
// members[0] leads: between attempts it alone waits in the ready heap.
type batch struct {
	id      string // batchID of the members' event ids
	members []*pending
}

// BatchData is what the template of a webhook with batch_size > 1 renders.
type BatchData struct {
	ID      string         // the batch's id, its Webhook-Id
	Webhook string         // the webhook's name
	Events  []TemplateData // each event as a template of one event sees it
}

// sampleBatchID is the id of the sample batch a template is tried on.
const sampleBatchID = "batch_0123456789abcdef0123456789abcdef"

// batchID is the id of a batch of these events, in order: the same events
// always make the same id, whenever and however often the batch is sent,
// and different ones a different id.
func batchID(eventIDs []string) string {
	h := sha256.New()
	for _, id := range eventIDs {
		h.Write([]byte(id))
		h.Write([]byte{'\n'})
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// newBatch makes members a batch, sorted into queue order.
func newBatch(members []*pending) *batch {
	slices.SortFunc(members, func(a, b *pending) int { return cmp.Compare(a.seq, b.seq) })
	ids := make([]string, len(members))
	for i, p := range members {
		ids[i] = p.rec.EventID
	}
	b := &batch{id: batchID(ids), members: members}
	for _, p := range members {
		p.batch = b
	}
	return b
}

func renderBatchTemplate(t *bodyTemplate, webhook, id string, evs []*cdc.Event) ([]byte, error) {
	d := BatchData{ID: id, Webhook: webhook, Events: make([]TemplateData, len(evs))}
	for i, ev := range evs {
		d.Events[i] = templateData(webhook, ev)
	}
	return t.execute(d)
}

// encodeBatch renders a batch's body: the webhook's template over the
// events, or {"webhook": ..., "events": [...]} with each event's usual
// JSON body. Validate leaves batches to JSON bodies sent by POST.
func (e *encoder) encodeBatch(id string, evs []*event) (body, error) {
	if e.tmpl != nil {
		list := make([]*cdc.Event, len(evs))
		for i, sev := range evs {
			list[i] = sev.Event
			if e.cols != nil {
				list[i] = e.cols.apply(sev.Event)
			}
		}
		b, err := renderBatchTemplate(e.tmpl, e.name, id, list)
		return body{b, e.ctype()}, err
	}
	// Each event is written into the batch's body, which is sized for
	// all of them at once: an event's body built apart and copied in, and
	// the body grown by doubling, were each a copy of every event.
	size := 32 + len(e.quotedName)
	for _, sev := range evs {
		size += e.sizeHint(sev)
	}
	b := make([]byte, 0, size)
	b = append(append(append(b, `{"webhook":`...), e.quotedName...), `,"events":[`...)
	for i, sev := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = e.appendJSON(b, sev); err != nil {
			return body{}, err
		}
	}
	return body{append(b, "]}"...), "application/json"}, nil
}

// joinLocked adds p, read back from the store, to the batch its record
// names; it reports whether p joined one formed already, and so waits
// for that batch's first delivery rather than in the ready heap.
func (h *dispatcher) joinLocked(p *pending) bool {
	if p.rec.Batch == "" {
		return false
	}
	if b := h.stored[p.rec.Batch]; b != nil {
		b.members = append(b.members, p)
		p.batch = b
		return true
	}
	if h.stored == nil {
		h.stored = map[string]*batch{}
	}
	b := &batch{id: p.rec.Batch, members: []*pending{p}}
	h.stored[p.rec.Batch] = b
	p.batch = b
	return false
}

// nextBatchLocked is nextLocked with batch_size > 1 (or deliveries still
// forming one when it went back to 1). A batch formed before goes out as
// it was; otherwise due deliveries are gathered until batch_size of them
// are, or batch_wait has passed since the oldest one's commit.
func (h *dispatcher) nextBatchLocked(now time.Time) (*pending, time.Duration) {
	size := h.w.batchSize()
	for h.ready.Len() > 0 && len(h.forming) < size && !h.ready[0].due.After(now) {
		p := heap.Pop(&h.ready).(*pending)
		if p.batch != nil {
			h.readyLocked(p.batch)
			if size == 1 {
				h.dissolveLocked(p.batch)
			}
			return p, 0
		}
		h.forming = append(h.forming, p)
	}
	wait := time.Duration(-1)
	if h.ready.Len() > 0 {
		wait = max(h.ready[0].due.Sub(now), 0)
	}
	if len(h.forming) == 0 {
		return nil, wait
	}
	if size == 1 {
		p := h.forming[0]
		h.forming[0] = nil
		h.forming = h.forming[1:]
		return p, 0
	}
	oldest := h.forming[0].ev.CommitTime
	for _, p := range h.forming[1:] {
		if p.ev.CommitTime.Before(oldest) {
			oldest = p.ev.CommitTime
		}
	}
	if d := oldest.Add(h.w.BatchWait).Sub(now); len(h.forming) < size && d > 0 {
		if wait < 0 || d < wait {
			wait = d
		}
		return nil, wait
	}
	b := newBatch(h.forming)
	h.forming = nil
	return b.members[0], 0
}

// readyLocked settles a batch read back from the store as its first
// delivery goes out: only deliveries at the head of their entities go
// (after a restart they all are), and its id is that of what it holds.
func (h *dispatcher) readyLocked(b *batch) {
	if lead := b.members[0]; h.stored[lead.rec.Batch] == b {
		delete(h.stored, lead.rec.Batch)
	}
	keep := b.members[:0]
	for _, p := range b.members {
		if p == b.members[0] || h.headLocked(p) {
			keep = append(keep, p)
		} else {
			p.batch = nil // it goes out when its entity's earlier ones are done
		}
	}
	ids := make([]string, len(keep))
	for i, p := range keep {
		ids[i] = p.rec.EventID
	}
	b.members, b.id = keep, batchID(ids)
}

// dissolveLocked sends b's deliveries one by one from now on; its first
// is on its way.
func (h *dispatcher) dissolveLocked(b *batch) {
	for _, p := range b.members {
		p.batch = nil
		if p != b.members[0] && p.index < 0 && h.headLocked(p) {
			heap.Push(&h.ready, p)
		}
	}
}

// deliverBatch makes one attempt of a batch and files it on each of its
// deliveries: it succeeds, is retried or fails for good as one.
func (h *dispatcher) deliverBatch(b *batch) {
	w, res, n := h.tryBatch(b)
	h.q.logAttempt(h, &w, b.id, "batch", len(b.members), n, res)
	h.stat.duration.Observe(res.att.Duration.Seconds())

	ok := res.att.Status >= 200 && res.att.Status < 300
	outs := make([]filed, len(b.members))
	h.mu.Lock()
	h.countLocked(res.att, ok) // one request
	for i, p := range b.members {
		r := res
		if i > 0 {
			// The first delivery keeps the body: a copy in each of a
			// hundred records would write it a hundred times.
			r.att.RequestBody = ""
		}
		outs[i] = h.recordLocked(p, &w, r, n, b.id)
		h.chart.attempt(res.att.At, ok, res.att.Duration, outs[i].queued) // per delivery, as the chart counts
	}
	h.inFlight--
	disabled := !outs[0].gone && h.streakLocked(&w, res.att, ok)
	if disabled {
		if !outs[0].final {
			lead := b.members[0]
			outs[0].failed = h.deliveryLocked(lead.seq, lead.rec)
			outs[0].failed.Attempts = slices.Clone(outs[0].failed.Attempts)
		}
		for i := range outs {
			outs[i].failed.SwitchedOff = h.offReason
		}
	}
	h.mu.Unlock()

	o := outs[0]
	for _, m := range outs[1:] {
		o.update.batch = append(o.update.batch, m.update)
	}
	h.stat.depth.Set(float64(outs[len(outs)-1].queued))
	count := float64(len(b.members))
	switch {
	case o.ok:
		h.stat.success.Add(count)
		for _, p := range b.members {
			h.q.metrics.endToEnd.Observe(time.Since(p.ev.CommitTime).Seconds())
		}
	case o.final:
		h.stat.failed.Add(count)
	default:
		h.stat.retry.Add(count)
	}
	h.q.send(o.update) // all of the batch in one commit
	if !o.final {
		h.mu.Lock()
		heap.Push(&h.ready, b.members[0])
		h.mu.Unlock()
	}
	h.poke()
	if o.gone || disabled {
		h.q.switchOff(h, w)
	}
	if o.final && !o.ok {
		if !o.gone {
			h.q.log.Warn("batch failed for good", "webhook", h.name, "batch_id", b.id, "events", len(b.members), "attempts", n)
		}
		for _, m := range outs {
			h.q.failed(w, m.failed)
		}
	} else if disabled {
		h.q.failed(w, o.failed) // its first delivery: the batch stays pending until the webhook is switched on
	}
}

// tryBatch makes attempt n of b with the webhook's definition as it is
// now, which it returns.
func (h *dispatcher) tryBatch(b *batch) (w Webhook, res result, n int) {
	h.mu.Lock()
	w, enc, signer, names, tmpl := h.w, h.enc, h.signer, h.names, h.tmpl
	h.mu.Unlock()
	evs := make([]*event, len(b.members))
	for i, p := range b.members {
		evs[i] = p.ev
		n = max(n, len(p.rec.Attempts)+1)
	}
	bd, err := enc.encodeBatch(b.id, evs)
	if err != nil {
		return w, result{att: Attempt{N: n, At: time.Now().UTC(), Error: "encode body: " + err.Error()}}, n
	}
	return w, h.q.attempt(h.reqCtx, &w, signer, request{
		id: b.id, event: "batch", count: len(evs), body: bd, attempt: n,
		client: h.client, names: names, tmpl: tmpl,
	}), n
}
