package deliver

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"walhook/deliver/store"
)

// Store is what the Queue needs of its persistence (package store says
// what each call means; store.Bolt is the one on the local disk). Commit is
// called by the Queue's committer alone; the rest by any goroutine.
type Store interface {
	// Durable is the WAL position stored with the latest commit.
	Durable() uint64
	// Commit writes a batch atomically and durably, and returns the
	// deliveries it queued.
	Commit(b *store.Batch) ([]store.Queued, error)

	Queue(webhook string) (store.Queue, error)
	// Window reads pending deliveries of the partitions parts only.
	Window(webhook string, from uint64, limit int, parts store.Parts) (store.Window, error)
	Deliveries(webhook string, limit int, status string) ([]store.Pending, error)
	// Find searches a webhook's stored deliveries, a page at a time.
	Find(webhook string, q store.Query) (store.Page, error)
	// Chart reads the buckets of a webhook's charts that commits stored
	// (Batch.Charts).
	Chart(webhook string) (store.Chart, error)
	FailedSince(webhook string, since time.Time) ([]uint64, error)
	Redeliver(webhook string, seq uint64) (store.Redelivered, error)
	RedeliverFailed(webhook string, seqs []uint64) ([]store.Redelivered, error)
	DropQueue(webhook string) error
	Queues() ([]string, error)

	WebhookDefs() (map[string][]byte, error)
	PutWebhook(name string, def []byte) error
	DeleteWebhook(name string) error
	SwitchedOff(name, url string) (bool, error)
	SetSwitchedOff(name, url string, off bool) error

	Backfill() ([]byte, error)
	SetBackfill(state []byte) error

	Close() error
}

var (
	_ Store = (*store.Bolt)(nil)
	_ Store = (*store.Postgres)(nil)
)

// Errors of the store, for callers that branch on them.
var (
	ErrStoreBusy    = store.ErrBusy
	ErrStoreDamaged = store.ErrDamaged
)

// ReadWebhooks returns the webhooks created through the admin API, read
// from the bbolt store under dir without changing it. A store that does
// not exist yet has none.
func ReadWebhooks(dir string, wait time.Duration) ([]Webhook, error) {
	defs, err := store.ReadWebhookDefs(dir, wait)
	if err != nil {
		return nil, err
	}
	return decodeWebhooks(defs)
}

// decodeWebhooks decodes the definitions of API webhooks, sorted by name.
func decodeWebhooks(defs map[string][]byte) ([]Webhook, error) {
	out := make([]Webhook, 0, len(defs))
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		var w Webhook
		if err := json.Unmarshal(defs[name], &w); err != nil {
			return nil, fmt.Errorf("webhook %s: %w", name, err)
		}
		out = append(out, w)
	}
	return out, nil
}

// CompactStore gives the free pages of the bbolt store under dir back to
// the file system (see store.Compact).
func CompactStore(dir string) (before, after int64, err error) { return store.Compact(dir) }
