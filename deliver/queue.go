// Package deliver owns webhooks, the persisted delivery queue, the workers
// that send signed requests, the per-webhook .log files and the stats.
package deliver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"walhook/cdc"
	"walhook/deliver/store"
)

// Sentinel errors of the webhook operations.
var (
	ErrExists    = errors.New("webhook exists")
	ErrNotFound  = errors.New("not found")
	ErrReadOnly  = errors.New("webhook is defined in the config file")
	ErrOffInFile = errors.New("the config file sets active = false")
)

// errClosed is returned by operations on a closed Queue.
var errClosed = errors.New("queue closed")

// Options configure a Queue.
type Options struct {
	Store         Store                        // where the queue lives; nil: a store.Bolt in Dir
	Dir           string                       // directory of the bbolt file walhook.db, without a Store; created if missing
	LogDir        string                       // <LogDir>/<webhook>.log; "" disables the log files
	LogMaxSizeMB  int                          // rotate a .log at this size
	LogMaxBackups int                          // rotated .log files kept
	LogMaxAgeDays int                          // rotated .log files older than this are removed
	LogCompress   bool                         // gzip rotated .log files
	Retention     int                          // completed deliveries kept per webhook (default 100); failed ones stay until redelivered
	Route         func(ev *cdc.Event) []string // names of the webhooks that want ev; fills ev.Entity, EntityID and EntityURL
	Logger        *slog.Logger                 // default slog.Default()
	Registerer    prometheus.Registerer        // metrics are registered here; may be nil
	Version       string                       // in the User-Agent walhook/<version>
	OnFailed      func(w Webhook, d Delivery)  // called asynchronously when a delivery fails for good or a 410 switches a webhook off
	Concurrency   int                          // workers per webhook, default 16
	Client        *http.Client                 // default: keep-alive transport that never follows redirects
	MaxBodyBytes  int                          // the largest body a template renders; default DefaultMaxBodyBytes
	Policy        AddressPolicy                // which addresses webhooks may connect to (not applied to Client)
	// Shared: other walhooks share the Store (see shared.go). The Queue
	// then delivers no partition until Own gives it some, counts as the
	// store does, and drops the queues of removed config webhooks only
	// while it leads.
	Shared bool
}

// Stats are a webhook's call counters and queue sizes.
type Stats struct {
	LatestStatus    int       `json:"latest_status"` // 0 = no attempt yet
	SuccessfulCalls int64     `json:"successful_calls"`
	TotalCalls      int64     `json:"total_calls"`
	LastAttemptAt   time.Time `json:"last_attempt_at"`
	Queued          int       `json:"queued"`
	Failed          int       `json:"failed"`
	// FilterErrors counts, since walhook started, the events the
	// webhook's when failed on (they were not sent); LastFilterError is
	// the latest.
	FilterErrors    int64        `json:"filter_errors"`
	LastFilterError *FilterError `json:"last_filter_error,omitempty"`
	// SwitchedOff says why the webhook switched itself off (a 410, or
	// disable_after), until it is switched on again; "" otherwise.
	SwitchedOff string `json:"switched_off,omitempty"`
	// FailingSince is the first failed attempt since the latest 2xx
	// (zero: the latest attempt succeeded): disable_after counts from it.
	FailingSince time.Time `json:"failing_since,omitzero"`
}

// Delivery is one event queued for one webhook, with its attempts.
type Delivery struct {
	ID            string    `json:"id"`
	Webhook       string    `json:"webhook"`
	EventID       string    `json:"event_id"`
	Event         string    `json:"event"`
	EntityID      string    `json:"entity_id"`
	Status        string    `json:"status"` // pending, success or failed
	CreatedAt     time.Time `json:"created_at"`
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"` // of a pending delivery that failed before
	Attempts      []Attempt `json:"attempts"`
	Payload       []byte    `json:"-"` // the body as it is sent now

	// Batch is the id of the batch its attempts went out in (batch_size >
	// 1); the batch's first delivery keeps the request body.
	Batch string `json:"batch,omitempty"`

	// SwitchedOff is set in OnFailed's delivery whose attempt switched the
	// webhook off, and says why: a 410, or disable_after's failures (the
	// delivery then stays pending until the webhook is switched on).
	SwitchedOff string `json:"switched_off,omitempty"`
}

// MarshalJSON shows the payload as text.
func (d Delivery) MarshalJSON() ([]byte, error) {
	type plain Delivery
	return json.Marshal(struct {
		plain
		Payload string `json:"payload"`
	}{plain(d), string(d.Payload)})
}

// Attempt is one HTTP request of a delivery.
type Attempt = store.Attempt

// Delivery statuses.
const (
	StatusPending = store.StatusPending
	StatusSuccess = store.StatusSuccess
	StatusFailed  = store.StatusFailed
)

const (
	defaultRetention   = 100
	defaultConcurrency = 16
	windowSize         = 1000 // pending deliveries per webhook held in memory (see dispatcher.windowLocked)
	maxWindow          = 8000 // the most a batching webhook holds
	pendingItems       = 4096 // Write blocks when this many items wait for the committer
	maxBatch           = 2048 // items per commit
	loadedEvents       = 2048 // events read back from the store kept for the other webhooks that want them
)

// Queue is the persisted delivery queue. It is a cdc.Sink.
//
// Lock order. A goroutine that holds several of these takes them in this
// order, never the other way round:
//
//  1. admin: changes to the webhook set (config reloads, the admin API);
//  2. switchMu: a 410's switch-off against reloads and the admin API's
//     changes of one webhook;
//  3. mu: the map of dispatchers, the backfill under way, onChange;
//  4. a dispatcher's mu: its window, counters and definition.
//
// The store comes after all of them: the admin API's changes call it under
// admin and switchMu (PutWebhook, SetSwitchedOff, DropQueue), but nothing a
// store call does waits for any of these locks, the committer holds none of
// them while it commits (it snapshots its targets first), and a dispatcher
// reads its window with its mu released. go test -race runs every path
// that takes them.
type Queue struct {
	opts      Options
	log       *slog.Logger
	st        Store
	client    *http.Client
	metrics   *metrics
	userAgent string // walhook/<version>

	in        chan commitItem
	loaded    *lru.Cache[*cdc.Event, *event] // events read back from the store, shared by the webhooks that load them
	gate      eventGate                      // bounds the events in items not yet committed
	durable   atomic.Uint64
	parts     atomic.Uint32 // the store.Parts it delivers
	leading   atomic.Bool   // Lead was called (Options.Shared)
	health    atomic.Pointer[error]
	fault     storeFault // while commits fail
	closed    atomic.Bool
	closeOnce sync.Once
	ctx       context.Context // canceled by Close: stops schedulers and the committer
	cancel    context.CancelFunc
	committed chan struct{} // closed when the committer has exited

	failCommit      atomic.Pointer[error] // when set, commits fail with it (tests: a full disk)
	beforeSwitchOff func()                // when set, called after a 410 has switched a webhook off and before that is persisted (tests)

	admin    sync.Mutex // serializes changes to the webhook set
	switchMu sync.Mutex // serializes a 410's switch-off with reloads and the admin API's changes of a webhook (after admin)
	mu       sync.Mutex
	hooks    map[string]*dispatcher
	backfill *Backfill  // the one under way
	types    tableTypes // column types of the tables filters saw
	rate     eventRate  // events committed per second, for Overview
	onChange []func()
}

var _ cdc.Sink = (*Queue)(nil)

// Open opens (or creates) the store under opts.Dir, loads the API-defined
// webhooks and resumes their pending deliveries.
func Open(opts Options) (*Queue, error) {
	if opts.Retention <= 0 {
		opts.Retention = defaultRetention
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = defaultConcurrency
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.LogDir != "" {
		if err := os.MkdirAll(opts.LogDir, 0o750); err != nil {
			return nil, fmt.Errorf("open log dir: %w", err)
		}
	}
	st := opts.Store
	if st == nil {
		var err error
		st, err = store.OpenBolt(opts.Dir, store.BoltOptions{Retention: opts.Retention, Logger: opts.Logger, Registerer: opts.Registerer})
		if err != nil {
			return nil, err
		}
	}
	defs, err := st.WebhookDefs()
	var apiHooks []Webhook
	if err == nil {
		apiHooks, err = decodeWebhooks(defs)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	loaded, err := lru.New[*cdc.Event, *event](loadedEvents)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	q := &Queue{
		loaded:    loaded,
		opts:      opts,
		log:       opts.Logger,
		st:        st,
		client:    newClient(opts),
		userAgent: "walhook/" + opts.Version,
		metrics:   newMetrics(opts.Registerer),
		in:        make(chan commitItem, pendingItems),
		gate:      eventGate{free: make(chan struct{}, 1)},
		committed: make(chan struct{}),
		hooks:     map[string]*dispatcher{},
	}
	q.durable.Store(st.Durable())
	if !opts.Shared {
		q.parts.Store(uint32(store.AllParts))
	}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	for _, w := range apiHooks {
		h, err := q.newDispatcher(w)
		if err != nil {
			q.log.Error("stored webhook is unusable", "webhook", w.Name, "err", err)
			continue
		}
		q.hooks[w.Name] = h
	}
	go q.commitLoop()
	return q, nil
}

func newClient(opts Options) *http.Client {
	if opts.Client != nil {
		c := *opts.Client
		if c.CheckRedirect == nil {
			c.CheckRedirect = noRedirect
		}
		return &c
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = opts.Concurrency
	t.DisableCompression = true // no Accept-Encoding: gzip on every request; bodies are read 4 KiB deep only
	t.MaxResponseHeaderBytes = maxResponseHeader
	t.DialContext = policyDialer(opts.Policy, SourceAPI).DialContext // the strictest: a webhook's own client is used where there is one
	return &http.Client{Transport: t, CheckRedirect: noRedirect}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close stops the workers (in-flight requests end within their timeout),
// persists their outcomes and closes the store. With a store that cannot
// commit it does not wait for it: the error wraps ErrNotStored and says
// what was left.
func (q *Queue) Close() error {
	var err error
	q.closeOnce.Do(func() {
		q.closed.Store(true)
		hooks := q.dispatchers()
		for _, h := range hooks {
			h.stop(false)
		}
		q.cancel()
		<-q.committed
		for _, h := range hooks {
			h.closeLog()
		}
		err = q.st.Close()
		if p := q.health.Load(); p != nil && errors.Is(*p, ErrNotStored) {
			err = errors.Join(*p, err)
		}
	})
	return err
}

// StopDelivering stops every webhook's deliveries, aborting the requests
// under way (they end as failed attempts). For a walhook that no longer
// leads its store: another sends those deliveries now. Close still
// follows.
func (q *Queue) StopDelivering() {
	hooks := q.dispatchers()
	for _, h := range hooks {
		h.stop(true)
	}
}

// Healthy reports whether the store accepts writes; nil when it does.
func (q *Queue) Healthy() error {
	if q.closed.Load() {
		return errClosed
	}
	if p := q.health.Load(); p != nil {
		return *p
	}
	return nil
}

// Durable returns the EndLSN of the latest transaction whose deliveries are
// fsynced; every earlier transaction is durable too.
func (q *Queue) Durable() uint64 { return q.durable.Load() }

// Write routes tx's events to webhooks and hands them to the committer. It
// blocks only while the committer's backlog is full.
func (q *Queue) Write(ctx context.Context, tx *cdc.Tx) error {
	item := commitItem{tx: tx, routes: make([][]string, len(tx.Events))}
	for i := range tx.Events {
		ev := &tx.Events[i]
		if ev.CommitTime.IsZero() {
			ev.CommitTime = tx.CommitTime
		}
		if q.opts.Route != nil {
			item.routes[i] = q.opts.Route(ev)
		}
	}
	return q.hand(ctx, item)
}

// hand passes an item of events to the committer, once the events waiting
// for it leave room.
func (q *Queue) hand(ctx context.Context, item commitItem) error {
	if q.closed.Load() {
		return errClosed
	}
	n := len(item.tx.Events)
	if err := q.gate.acquire(ctx, q.ctx.Done(), n); err != nil {
		return err
	}
	select {
	case q.in <- item:
		return nil
	case <-ctx.Done():
		q.gate.release(n)
		return ctx.Err()
	case <-q.ctx.Done():
		q.gate.release(n)
		return errClosed
	}
}

// OnChange registers f to be called after the set of webhooks changed.
func (q *Queue) OnChange(f func()) {
	q.mu.Lock()
	q.onChange = append(q.onChange, f)
	q.mu.Unlock()
}

func (q *Queue) changed() {
	q.mu.Lock()
	fs := append([]func(){}, q.onChange...)
	q.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// LogPath returns the path of a webhook's .log file ("" without a log dir).
func (q *Queue) LogPath(name string) string {
	if q.opts.LogDir == "" {
		return ""
	}
	return filepath.Join(q.opts.LogDir, name+".log")
}

// FlushLog writes a webhook's buffered .log lines to the file now (they
// reach it within a tenth of a second anyway): the admin API does before
// it reads the file.
func (q *Queue) FlushLog(name string) {
	if h := q.dispatcherOf(name); h != nil && h.log != nil {
		h.log.flush()
	}
}

// dispatchers returns every webhook's dispatcher, as they are now.
func (q *Queue) dispatchers() []*dispatcher {
	q.mu.Lock()
	defer q.mu.Unlock()
	hooks := make([]*dispatcher, 0, len(q.hooks))
	for _, h := range q.hooks {
		hooks = append(hooks, h)
	}
	return hooks
}

// dispatcherOf is the dispatcher of webhook name, nil if there is none.
func (q *Queue) dispatcherOf(name string) *dispatcher {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.hooks[name]
}

// failed calls OnFailed without blocking the caller.
func (q *Queue) failed(w Webhook, d Delivery) {
	if q.opts.OnFailed != nil {
		go q.opts.OnFailed(w.redacted(), d)
	}
}
