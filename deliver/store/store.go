// Package store persists walhook's queue: the events read from the WAL, one
// delivery of an event per webhook that wants it, the outcome of each
// attempt, the durable WAL position, the webhooks made through the admin
// API and the state of a backfill under way. It says what walhook needs of
// its persistence, in walhook's terms; how the bytes are laid out is the
// implementation's alone. Bolt keeps everything in one bbolt file on the
// local disk.
//
// The queue (package deliver) declares the interface it uses (deliver.Store)
// and storetest holds the tests every implementation must pass.
package store

import (
	"errors"
	"net/http"
	"time"

	"walhook/cdc"
)

// Delivery statuses.
const (
	StatusPending = "pending"
	StatusSuccess = "success"
	StatusFailed  = "failed"
)

// Errors callers branch on.
var (
	// ErrBusy: another walhook holds the store.
	ErrBusy = errors.New("the store is in use (is walhook running?)")
	// ErrDamaged marks a store walhook cannot open as it is.
	ErrDamaged = errors.New("damaged")
	// ErrNotFound: no such delivery.
	ErrNotFound = errors.New("not found")
	// ErrPending: a delivery still pending cannot be delivered again.
	ErrPending = errors.New("is still pending")
)

// Record is a stored delivery: one event for one webhook.
type Record struct {
	Status   string `json:"-"`
	EventID  string `json:"event_id"`
	Event    string `json:"event"`
	Entity   string `json:"entity,omitempty"`
	EntityID string `json:"entity_id,omitempty"`
	// PrevEntityID: the entity id before the UPDATE that changed it; the
	// delivery is ordered after that id's earlier ones too.
	PrevEntityID string    `json:"prev_entity_id,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	Due          time.Time `json:"due,omitzero"` // of the next attempt, after a failed one
	// Batch: the id of the batch its attempts went out in (issue 18); its
	// deliveries that are still pending form that batch again after a
	// restart.
	Batch    string    `json:"batch,omitempty"`
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one HTTP request of a delivery.
type Attempt struct {
	N               int           `json:"n"`
	At              time.Time     `json:"at"`
	RequestHeaders  http.Header   `json:"request_headers"` // Authorization and custom header values redacted
	RequestBody     string        `json:"request_body"`
	Status          int           `json:"status"` // 0 when no response came
	ResponseHeaders http.Header   `json:"response_headers,omitempty"`
	ResponseBody    string        `json:"response_body,omitempty"` // the first 4 KiB
	Duration        time.Duration `json:"duration"`
	Error           string        `json:"error,omitempty"`
}

// Counters are a webhook's persisted call counters, and the state of its
// failures that must outlive a restart.
type Counters struct {
	LatestStatus    int       `json:"latest_status"`
	SuccessfulCalls int64     `json:"successful_calls"`
	TotalCalls      int64     `json:"total_calls"`
	LastAttemptAt   time.Time `json:"last_attempt_at"`
	// FailingSince is the first failed attempt since the latest 2xx (zero:
	// none failed): disable_after counts from it, across restarts.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// SwitchedOff says why the webhook switched itself off (a 410,
	// disable_after), until it is switched on again.
	SwitchedOff string `json:"switched_off,omitempty"`
}

// minus is what c counted since base: the calls' differences, c's latest
// attempt.
func (c Counters) minus(base Counters) Counters {
	c.SuccessfulCalls -= base.SuccessfulCalls
	c.TotalCalls -= base.TotalCalls
	return c
}

// add sums two walhooks' counts; the latest attempt is the later one's.
func (c Counters) add(d Counters) Counters {
	sum := c
	sum.SuccessfulCalls += d.SuccessfulCalls
	sum.TotalCalls += d.TotalCalls
	if d.LastAttemptAt.After(c.LastAttemptAt) {
		sum.LatestStatus, sum.LastAttemptAt = d.LatestStatus, d.LastAttemptAt
	}
	return sum
}

// merge is the stored counters of walhooks sharing a store after one of
// them adds now, having stored base before: the counts summed (add), and
// the state of the failures now's where it changed since base (a failed
// run begun or ended, a switch-off or on), the stored one where not.
func (c Counters) merge(now, base Counters) Counters {
	sum := c.add(now.minus(base))
	if !now.FailingSince.Equal(base.FailingSince) || now.SwitchedOff != base.SwitchedOff {
		sum.FailingSince, sum.SwitchedOff = now.FailingSince, now.SwitchedOff
	}
	return sum
}

// Batch is what one commit writes, all of it or nothing.
type Batch struct {
	// Appends are WAL transactions (or chunks of one) and backfill rows, in
	// the order their deliveries are queued.
	Appends []Append
	// Outcomes are attempts' results for deliveries stored before.
	Outcomes []Outcome
	// Counters replace the stored counters of these webhooks.
	Counters map[string]Counters
	// Charts replace these buckets of the webhooks' charts.
	Charts []ChartBucket
}

// Append queues the deliveries of one transaction's events. A transaction
// that ends at or before the durable position, or an event already stored,
// is a repeat PostgreSQL sent again, and queues nothing; the durable
// position becomes the latest EndLSN stored.
type Append struct {
	Tx      *cdc.Tx
	Targets [][]string // per event of Tx: the webhooks it is queued for, in order

	// Backfill marks rows of a backfill (Tx has no LSN): they are never
	// repeats. BackfillState, when not nil, replaces the stored state of the
	// backfill (see Store.Backfill); EndBackfill drops it.
	Backfill      bool
	BackfillState []byte
	EndBackfill   bool
}

// Outcome is a delivery's new state after an attempt.
type Outcome struct {
	Webhook string
	Seq     uint64
	Record  *Record // not changed by anybody until the commit returns
	// Done: a success; it enters the history kept by the retention, and the
	// oldest beyond it are deleted.
	Done bool
}

// Queued is a delivery a commit created, in queue order.
type Queued struct {
	Append  int // index in Batch.Appends
	Webhook string
	Seq     uint64
	Record  *Record
	Event   *cdc.Event // the Append's event, the same pointer for all its webhooks
}

// Pending is a stored delivery and its event.
type Pending struct {
	Seq    uint64
	Record *Record
	Event  *cdc.Event // read-only: webhooks loading the same event may share it; nil if unreadable
}

// Window is a read of pending deliveries in queue order.
type Window struct {
	Pending   []Pending
	Last      uint64 // the last sequence read (pending or not); from-1 when none
	Exhausted bool   // no delivery after Last
}

// Queue describes a webhook's stored queue.
type Queue struct {
	Counters Counters
	Pending  int
	Failed   int
}

// Redelivered is a delivery queued again as a new one.
type Redelivered struct {
	Pending
	WasFailed bool // it replaced a failed delivery
}

// Repeated reports whether PostgreSQL sent tx again (after a restart or a
// reconnect) when everything up to stored is in the store: a transaction
// that ends there or before, or a chunk of one that commits before it
// (commits before the durable end are all durable).
func Repeated(tx *cdc.Tx, stored uint64) bool {
	if tx.EndLSN != 0 {
		return tx.EndLSN <= stored
	}
	return tx.CommitLSN != 0 && tx.CommitLSN < stored
}

// redeliverEach redelivers each of seqs with redeliver, within one
// transaction of the caller's, passing over those no longer failed
// (delivered again or dropped meanwhile).
func redeliverEach(seqs []uint64, redeliver func(uint64) (Redelivered, error)) ([]Redelivered, error) {
	var out []Redelivered
	for _, seq := range seqs {
		r, err := redeliver(seq)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
