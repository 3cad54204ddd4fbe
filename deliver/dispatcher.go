package deliver

import (
	"container/heap"
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"

	"walhook/cdc"
	"walhook/deliver/store"
)

// pending is a delivery held in a webhook's in-memory window.
type pending struct {
	seq   uint64
	rec   *store.Record
	ev    *event
	due   time.Time
	index int    // in the ready heap; -1 when not in it
	batch *batch // the batch it goes out in, once formed
}

// entityKey names the entity whose deliveries go out in commit order.
type entityKey struct{ entity, id string }

// orderKeys are the entities p is ordered in: its own, and for an UPDATE
// that changed the row's key the previous one too, so it goes out after
// both ids' earlier deliveries and before both ids' later ones.
// keys[:n] are they; an array, as this runs for every delivery.
func (p *pending) orderKeys() (keys [2]entityKey, n int) {
	keys[0] = entityKey{p.rec.Entity, p.rec.EntityID}
	if prev := p.rec.PrevEntityID; prev != "" && prev != p.rec.EntityID {
		keys[1] = entityKey{p.rec.Entity, prev}
		return keys, 2
	}
	return keys, 1
}

// readyHeap orders the deliverable heads of each entity by due time, then
// commit order.
type readyHeap []*pending

func (r readyHeap) Len() int { return len(r) }
func (r readyHeap) Less(i, j int) bool {
	if !r[i].due.Equal(r[j].due) {
		return r[i].due.Before(r[j].due)
	}
	return r[i].seq < r[j].seq
}
func (r readyHeap) Swap(i, j int) {
	r[i], r[j] = r[j], r[i]
	r[i].index, r[j].index = i, j
}
func (r *readyHeap) Push(x any) {
	p := x.(*pending)
	p.index = len(*r)
	*r = append(*r, p)
}
func (r *readyHeap) Pop() any {
	old := *r
	p := old[len(old)-1]
	old[len(old)-1] = nil
	p.index = -1
	*r = old[:len(old)-1]
	return p
}

// dispatcher is the live state of one webhook: its config, its window of
// pending deliveries, a scheduler and a pool of workers. Its mu comes after
// the Queue's locks (see Queue).
type dispatcher struct {
	q       *Queue
	name    string
	active  atomic.Bool
	deleted atomic.Bool

	mu              sync.Mutex
	w               Webhook
	enc             *encoder
	filter          *Filter // the webhook's when; nil: every event
	filterErrs      filterErrors
	signer          *Signer
	names           *headerNames
	tmpl            *http.Request // the method and parsed URL every request copies; nil if the URL does not parse (each attempt then says why)
	stats           store.Counters
	chart           chart // the admin page's charts, stored as the counters are
	queued          int
	failedN         int
	entities        map[entityKey][]*pending // per entity, in commit order; the head may be in flight
	ready           readyHeap
	inWindow        int
	nextLoad        uint64 // first sequence not yet considered for the window
	diskMore        bool   // pending deliveries may wait on disk beyond the window
	queuedMeanwhile bool   // enqueue left deliveries on disk while a refill read it

	forming []*pending        // due deliveries a batch is being formed of (batch_size > 1)
	stored  map[string]*batch // batches read back from the store, by their stored id, until they go out

	fileActive bool   // of a config webhook: active as the file sets it (w.Active may be switched off in the store)
	goneURL    string // the URL that answered 410 Gone, until switchOff has persisted it (or found it superseded)

	// Endpoint control: rate_limit, max_in_flight, disable_after.
	inFlight  int       // deliveries handed out whose attempt is not filed yet
	tokens    float64   // rate_limit's bucket
	tokensAt  time.Time // when tokens was topped up last; zero: the bucket is full
	offReason string    // why it is off, as Stats says: stats.SwitchedOff (stored), or that another walhook sharing the store switched it off

	log    *logFile
	stat   dispatcherMetrics
	client *http.Client // the webhook's own keep-alive pool
	wake   chan struct{}
	work   chan *pending
	ctx    context.Context // stops the scheduler and workers
	cancel context.CancelFunc
	reqCtx context.Context // aborts in-flight requests (on delete only)
	abort  context.CancelFunc
	wg     sync.WaitGroup
}

// newDispatcher loads a webhook's counters and pending deliveries and starts its
// scheduler and workers.
func (q *Queue) newDispatcher(w Webhook) (*dispatcher, error) {
	enc, err := newEncoder(&w, q.opts.MaxBodyBytes)
	if err != nil {
		return nil, err
	}
	filter, err := compileFilter(&w)
	if err != nil {
		return nil, err
	}
	w = w.clone() // deliver shares its maps and slices: nobody may change them
	tmpl, _ := requestTemplate(&w)
	h := &dispatcher{
		q: q, name: w.Name, w: w, enc: enc, filter: filter,
		signer:   NewSigner(w.effectiveSignature(), w.Secrets),
		names:    newHeaderNames(w.HeaderPrefix),
		tmpl:     tmpl,
		entities: map[entityKey][]*pending{},

		fileActive: w.Active,
		nextLoad:   1,
		diskMore:   true,
		wake:       make(chan struct{}, 1),
		work:       make(chan *pending),
		client:     q.hookClient(w.Source),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.reqCtx, h.abort = context.WithCancel(context.Background())
	if err := h.load(); err != nil {
		return nil, err
	}
	h.active.Store(h.w.Active)
	if q.opts.LogDir != "" {
		h.log = newLogFile(w.Name, &lumberjack.Logger{
			Filename: q.LogPath(w.Name), MaxSize: q.opts.LogMaxSizeMB, MaxBackups: q.opts.LogMaxBackups,
			MaxAge: q.opts.LogMaxAgeDays, Compress: q.opts.LogCompress,
		}, q.log)
	}
	h.stat = q.metrics.forHook(w.Name)
	h.stat.depth.Set(float64(h.queued))
	h.refill()
	h.start()
	return h, nil
}

// start starts the scheduler and the workers.
func (h *dispatcher) start() {
	h.wg.Add(1 + h.q.opts.Concurrency)
	go h.schedule()
	for range h.q.opts.Concurrency {
		go h.worker()
	}
}

// load reads the webhook's counters, queue sizes and, for a config
// webhook, whether the store keeps it switched off.
func (h *dispatcher) load() error {
	sq, err := h.q.st.Queue(h.name)
	if err != nil {
		return err
	}
	h.stats, h.queued, h.failedN = sq.Counters, sq.Pending, sq.Failed
	if h.chart.c, err = h.q.st.Chart(h.name); err != nil {
		return err
	}
	if h.w.Source == SourceConfig {
		off, err := h.q.st.SwitchedOff(h.name, h.w.URL)
		if err != nil {
			return fmt.Errorf("load webhook %s: %w", h.name, err)
		}
		if off {
			h.w.Active = false
		}
	}
	if !h.w.Active {
		h.offReason = h.stats.SwitchedOff // why it switched itself off, before the restart
	}
	return nil
}

// setWebhook swaps in a changed definition; queued deliveries stay.
func (h *dispatcher) setWebhook(w Webhook) error {
	enc, err := newEncoder(&w, h.q.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	filter, err := compileFilter(&w)
	if err != nil {
		return err
	}
	w = w.clone()
	tmpl, _ := requestTemplate(&w)
	h.mu.Lock()
	persist := w.Active && !h.w.Active && h.switchedOnLocked()
	h.w, h.enc, h.signer, h.names, h.tmpl = w, enc, NewSigner(w.effectiveSignature(), w.Secrets), newHeaderNames(w.HeaderPrefix), tmpl
	h.filter = filter
	h.mu.Unlock()
	if persist {
		h.persistStats()
	}
	h.active.Store(w.Active)
	h.poke()
	return nil
}

func (h *dispatcher) webhook() Webhook {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.w.clone()
}

// stop ends the scheduler and workers; abort also cancels in-flight requests.
func (h *dispatcher) stop(abort bool) {
	if abort {
		h.abort()
	}
	h.cancel()
	h.wg.Wait()
	h.abort()
	if h.client != h.q.client {
		h.client.CloseIdleConnections()
	}
}

func (h *dispatcher) closeLog() {
	if h.log != nil {
		h.log.close()
	}
}

func (h *dispatcher) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// enqueue takes deliveries just committed, in sequence order.
func (h *dispatcher) enqueue(ps []*pending) {
	parts := h.q.Parts()
	h.mu.Lock()
	for _, p := range ps {
		if parts != store.AllParts && !parts.Has(store.PartOf(p.rec.EntityID)) {
			continue // another walhook's to send, and to count
		}
		h.queued++
		switch {
		case p.seq < h.nextLoad:
			// already loaded from disk
		case !h.diskMore && p.seq == h.nextLoad && h.inWindow < h.windowLocked():
			h.addLocked(p)
			h.nextLoad = p.seq + 1
		default:
			h.diskMore = true
			h.queuedMeanwhile = true
		}
	}
	q := h.queued
	h.chart.depth(time.Now(), q)
	h.mu.Unlock()
	h.stat.depth.Set(float64(q))
	h.poke()
}

func (h *dispatcher) addLocked(p *pending) {
	keys, n := p.orderKeys()
	for _, key := range keys[:n] {
		h.entities[key] = append(h.entities[key], p)
	}
	p.index = -1
	if !h.joinLocked(p) && h.headLocked(p) {
		heap.Push(&h.ready, p)
	}
	h.inWindow++
}

// headLocked reports whether p is first in each of its entities' lists:
// nothing before it in commit order is still to go out.
func (h *dispatcher) headLocked(p *pending) bool {
	keys, n := p.orderKeys()
	for _, key := range keys[:n] {
		if list := h.entities[key]; len(list) == 0 || list[0] != p {
			return false
		}
	}
	return true
}

// refillDueLocked reports whether the window has drained to half while
// pending deliveries wait on disk.
func (h *dispatcher) refillDueLocked() bool { return h.diskMore && h.inWindow <= h.windowLocked()/2 }

// windowLocked is how many pending deliveries the webhook holds in memory:
// windowSize, or four batches per worker when it batches, so that its
// workers all have one under way while the next ones form (batch_size 100
// with 16 workers keeps 1,600 deliveries in flight) and few are read back
// under a backlog; at most maxWindow. Beyond it they wait on disk and are
// read back. h.mu held.
func (h *dispatcher) windowLocked() int {
	return min(max(windowSize, 4*h.w.batchSize()*h.w.inFlightLimit(h.q.opts.Concurrency)), maxWindow)
}

// refill loads pending deliveries from disk into the window when it is
// due. It reads the store without holding h.mu, so that workers finishing
// deliveries meanwhile do not wait on it. Only the scheduler calls it (and
// newDispatcher, before the scheduler starts): one refill at a time.
func (h *dispatcher) refill() {
	h.mu.Lock()
	if !h.refillDueLocked() {
		h.mu.Unlock()
		return
	}
	from, room := h.nextLoad, h.windowLocked()-h.inWindow
	h.queuedMeanwhile = false
	parts := h.q.Parts()
	if parts == 0 { // nothing of the store's to send, until Own
		h.diskMore = false
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()

	win, err := h.q.st.Window(h.name, from, room, parts)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.q.log.Error("load pending deliveries", "webhook", h.name, "err", err)
		return
	}
	for _, sp := range win.Pending {
		h.addLocked(&pending{seq: sp.Seq, rec: sp.Record, ev: h.q.shared(sp.Event), due: sp.Record.Due})
	}
	// nextLoad and diskMore are the refill's alone while it runs: enqueue
	// leaves deliveries on disk while diskMore is set, and says so.
	h.nextLoad = win.Last + 1
	h.diskMore = !win.Exhausted || h.queuedMeanwhile
}

// shared wraps a stored event for delivery. The store hands webhooks that
// load the same event at about the same time one decoded copy; they share
// its wrapper too, and so the body built from it.
func (q *Queue) shared(ev *cdc.Event) *event {
	if sev, ok := q.loaded.Get(ev); ok {
		return sev
	}
	sev := &event{Event: ev}
	q.loaded.Add(ev, sev)
	return sev
}

// backoff is the wait after failed attempt n, never shorter than retryAfter.
func (h *dispatcher) backoff(n int, retryAfter time.Duration) time.Duration {
	var d time.Duration
	if h.w.RetryMode == RetryTest {
		d = 3 * time.Second
	} else {
		d = time.Duration(h.w.Timeout.Milliseconds()/1000)*time.Second + time.Duration(n*n*n*n)*time.Second
	}
	return max(d, retryAfter)
}

// schedule hands due deliveries to the workers and sleeps until the
// earliest retry is due: one timer per webhook, none per delivery.
func (h *dispatcher) schedule() {
	defer h.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var next *pending
		wait := time.Duration(-1)
		h.mu.Lock()
		if h.refillDueLocked() {
			h.mu.Unlock()
			h.refill()
			h.mu.Lock()
		}
		next, wait = h.nextLocked(time.Now())
		h.mu.Unlock()
		if next != nil {
			select {
			case h.work <- next:
				continue
			case <-h.ctx.Done():
				return
			}
		}
		if wait >= 0 {
			timer.Reset(wait)
		}
		select {
		case <-h.wake:
		case <-timer.C:
		case <-h.ctx.Done():
			return
		}
		if wait >= 0 && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func (h *dispatcher) worker() {
	defer h.wg.Done()
	for {
		select {
		case p := <-h.work:
			// A busy worker takes its next delivery itself: no hand-off
			// through the scheduler (two goroutine wake-ups) per delivery.
			for p != nil && h.ctx.Err() == nil {
				h.deliver(p)
				select {
				case p = <-h.work:
				default:
					p = h.take()
				}
			}
		case <-h.ctx.Done():
			return
		}
	}
}

// take pops the earliest due delivery (or batch, see nextLocked), nil
// when none is due.
func (h *dispatcher) take() *pending {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, _ := h.nextLocked(time.Now())
	return p
}

// nextLocked pops what goes out next at now: a delivery, or the leader of
// a batch (p.batch). With nothing due it says how long until something
// may be, -1 when nothing waits. What it pops counts against max_in_flight
// until its attempt is filed, and takes a token of rate_limit's bucket.
func (h *dispatcher) nextLocked(now time.Time) (*pending, time.Duration) {
	if !h.active.Load() {
		return nil, -1
	}
	if h.inFlight >= h.w.inFlightLimit(h.q.opts.Concurrency) {
		return nil, -1 // the attempt filed next pokes the scheduler
	}
	if d := h.bucketLocked(now); d > 0 {
		return nil, d
	}
	p, wait := h.popLocked(now)
	if p != nil {
		h.inFlight++
		if h.w.RateLimit > 0 {
			h.tokens--
		}
	}
	return p, wait
}

// bucketLocked tops up rate_limit's bucket to now and says how long until
// it holds a token; 0 when it does, or without a limit.
func (h *dispatcher) bucketLocked(now time.Time) time.Duration {
	rate := h.w.RateLimit
	if rate <= 0 {
		return 0
	}
	const burst = 1.0 // a receiver is promised the rate over any second, also after a quiet spell
	if h.tokensAt.IsZero() {
		h.tokens = burst
	} else {
		h.tokens = min(burst, h.tokens+max(now.Sub(h.tokensAt).Seconds(), 0)*rate)
	}
	h.tokensAt = now
	if h.tokens >= 1 {
		return 0
	}
	return time.Duration((1-h.tokens)/rate*float64(time.Second)) + time.Millisecond/10
}

// popLocked is nextLocked without the endpoint's limits.
func (h *dispatcher) popLocked(now time.Time) (*pending, time.Duration) {
	if h.w.batchSize() > 1 || len(h.forming) > 0 {
		return h.nextBatchLocked(now)
	}
	if h.ready.Len() == 0 {
		return nil, -1
	}
	if d := h.ready[0].due.Sub(now); d > 0 {
		return nil, d
	}
	p := heap.Pop(&h.ready).(*pending)
	if p.batch != nil { // formed before batch_size went back to 1
		h.readyLocked(p.batch)
		h.dissolveLocked(p.batch)
	}
	return p, 0
}

// deliver makes one attempt and files its outcome.
func (h *dispatcher) deliver(p *pending) {
	if p.batch != nil {
		h.deliverBatch(p.batch)
		return
	}
	w, res, n := h.try(p)
	ev := p.ev
	h.q.logAttempt(h, &w, ev.ID, p.rec.Event, 0, n, res)
	h.stat.duration.Observe(res.att.Duration.Seconds())

	h.mu.Lock()
	h.inFlight--
	o := h.fileLocked(p, &w, res, n)
	h.chart.attempt(res.att.At, o.ok, res.att.Duration, o.queued)
	h.mu.Unlock()

	h.stat.depth.Set(float64(o.queued))
	switch {
	case o.ok:
		h.stat.success.Inc()
		h.q.metrics.endToEnd.Observe(time.Since(ev.CommitTime).Seconds())
	case o.final:
		h.stat.failed.Inc()
	default:
		h.stat.retry.Inc()
	}
	h.q.send(o.update)
	if !o.final {
		// Only now: its next attempt must not overtake this update.
		h.mu.Lock()
		heap.Push(&h.ready, p)
		h.mu.Unlock()
	}
	h.poke()
	if o.gone || o.disabled {
		h.q.switchOff(h, w)
	}
	if o.final && !o.ok {
		if !o.gone {
			h.q.log.Warn("delivery failed for good", "webhook", h.name, "event_id", ev.ID, "attempts", n)
		}
		h.q.failed(w, o.failed)
	} else if o.disabled {
		h.q.failed(w, o.failed) // still pending: it goes out when the webhook is switched on
	}
}

// try makes attempt n of p with the webhook's definition as it is now,
// which it returns.
func (h *dispatcher) try(p *pending) (w Webhook, res result, n int) {
	h.mu.Lock()
	// A shallow copy: h.w's maps and slices are replaced, never changed.
	w, enc, signer, names, tmpl := h.w, h.enc, h.signer, h.names, h.tmpl
	h.mu.Unlock()
	n = len(p.rec.Attempts) + 1
	ev := p.ev
	b, err := enc.encode(ev)
	if err != nil {
		return w, result{att: Attempt{N: n, At: time.Now().UTC(), Error: "encode body: " + err.Error()}}, n
	}
	return w, h.q.attempt(h.reqCtx, &w, signer, request{
		id: ev.ID, event: p.rec.Event, entityID: ev.EntityID, entityURL: ev.EntityURL, body: b, attempt: n,
		client: h.client, names: names, tmpl: tmpl,
	}), n
}

// filed is what fileLocked decided of an attempt.
type filed struct {
	ok, final, gone bool     // a success; the delivery's last attempt; a 410
	disabled        bool     // disable_after switched the webhook off
	update          *update  // for the committer
	failed          Delivery // when it failed for good
	queued          int      // the webhook's queue after it
}

// fileLocked records attempt n's result on p: its status, its next due
// time or its end, the counters, a 410's switch-off; h.mu held.
func (h *dispatcher) fileLocked(p *pending, w *Webhook, res result, n int) filed {
	ok := res.att.Status >= 200 && res.att.Status < 300
	h.countLocked(res.att, ok)
	o := h.recordLocked(p, w, res, n, "")
	if !o.gone && h.streakLocked(w, res.att, ok) {
		o.disabled = true
		if !o.final {
			o.failed = h.deliveryLocked(p.seq, p.rec)
			o.failed.Attempts = slices.Clone(o.failed.Attempts)
		}
		o.failed.SwitchedOff = h.offReason
	}
	return o
}

// streakLocked follows the webhook's run of failed attempts and reports
// whether it has now lasted disable_after, and so switched the webhook
// off; h.mu held.
func (h *dispatcher) streakLocked(w *Webhook, att Attempt, ok bool) bool {
	if ok {
		h.stats.FailingSince = time.Time{}
		return false
	}
	if h.stats.FailingSince.IsZero() {
		h.stats.FailingSince = att.At
	}
	if w.DisableAfter <= 0 || !h.w.Active || att.At.Sub(h.stats.FailingSince) < w.DisableAfter {
		return false
	}
	h.switchOffLocked(w.URL, fmt.Sprintf("switched off after %s of failures", FormatDuration(w.DisableAfter)))
	return true
}

// switchOffLocked switches the webhook off at once, before anything more
// goes out; switchOff persists it, and a reload meanwhile keeps it off
// (goneURL). h.mu held.
func (h *dispatcher) switchOffLocked(url, reason string) {
	h.active.Store(false)
	h.w.Active = false
	h.goneURL = url
	h.offReason = reason
	h.stats.SwitchedOff = reason // stored with the attempt's counters
}

// switchedOnLocked starts the webhook afresh when it is switched on: no
// reason to be off, no failures counted towards disable_after; h.mu held.
// It reports whether the stored counters must say so (persistStats).
func (h *dispatcher) switchedOnLocked() bool {
	h.offReason = ""
	changed := !h.stats.FailingSince.IsZero() || h.stats.SwitchedOff != ""
	h.stats.FailingSince, h.stats.SwitchedOff = time.Time{}, ""
	return changed
}

// persistStats stores the webhook's counters with the next commit.
func (h *dispatcher) persistStats() { h.q.send(&update{h: h, stats: true}) }

// recordLocked is fileLocked but for the counters, which count requests:
// a batch's request is filed on each of its deliveries (batchID names it
// in their records, "" for a delivery sent alone); h.mu held.
func (h *dispatcher) recordLocked(p *pending, w *Webhook, res result, n int, batchID string) filed {
	att := res.att
	o := filed{ok: att.Status >= 200 && att.Status < 300, gone: att.Status == 410}
	o.final = o.ok || o.gone || n >= w.MaxAttempts
	p.rec.Attempts = append(p.rec.Attempts, att)
	p.rec.Batch = batchID
	switch {
	case o.ok:
		p.rec.Status = StatusSuccess
	case o.final:
		p.rec.Status = StatusFailed
		h.failedN++
	default:
		wait := res.retryAfter
		if wait > 0 {
			wait += att.Duration // Retry-After counts from the response
		}
		p.due = att.At.Add(h.backoff(n, wait))
		p.rec.Due = p.due
	}
	if o.gone {
		// Before the entity's next delivery is freed: nothing more goes out.
		// switchOff persists it; a reload meanwhile must keep it off.
		h.switchOffLocked(w.URL, "switched off: the endpoint answered 410 Gone")
	}
	if o.final {
		p.rec.Due = time.Time{}
		h.queued--
		h.completeLocked(p)
	}
	o.update = &update{h: h, seq: p.seq, done: o.ok, stats: true, record: p.rec}
	if !o.final {
		rec := *p.rec // the next attempt changes p.rec again
		o.update.record = &rec
	}
	if o.final && !o.ok {
		o.failed = h.deliveryLocked(p.seq, p.rec)
		if o.gone {
			o.failed.SwitchedOff = h.offReason
		}
	}
	o.queued = h.queued
	return o
}

// countLocked adds an attempt to the call counters.
func (h *dispatcher) countLocked(att Attempt, ok bool) {
	h.stats.TotalCalls++
	if ok {
		h.stats.SuccessfulCalls++
	}
	h.stats.LatestStatus = att.Status
	h.stats.LastAttemptAt = att.At
}

// completeLocked removes a finished delivery and frees its entities' next
// ones that nothing else holds back.
func (h *dispatcher) completeLocked(p *pending) {
	keys, n := p.orderKeys()
	for _, key := range keys[:n] {
		list := h.entities[key]
		if len(list) == 0 || list[0] != p {
			continue // not held there: nothing freed
		}
		list[0] = nil
		list = list[1:]
		if len(list) == 0 {
			delete(h.entities, key)
			continue
		}
		h.entities[key] = list
		if next := list[0]; next.index < 0 && h.headLocked(next) && (next.batch == nil || next.batch.members[0] == next) {
			heap.Push(&h.ready, next) // a batch's other deliveries wait with its first
		}
	}
	h.inWindow--
	if h.refillDueLocked() {
		h.poke() // the scheduler refills
	}
}

func (h *dispatcher) deliveryLocked(seq uint64, rec *store.Record) Delivery {
	return Delivery{
		ID: deliveryID(h.name, seq), Webhook: h.name, EventID: rec.EventID, Event: rec.Event,
		EntityID: rec.EntityID, Status: rec.Status, CreatedAt: rec.CreatedAt, Attempts: rec.Attempts, Batch: rec.Batch,
	}
}

func deliveryID(name string, seq uint64) string { return fmt.Sprintf("%s-%016x", name, seq) }
