// Package cdc reads PostgreSQL logical replication (pgoutput) and turns row
// changes into Events. It owns the replication connection, the slot and the
// publication, and confirms to PostgreSQL only what its Sink reports durable.
package cdc

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Actions of an Event.
const (
	ActionCreate   = "create"
	ActionModify   = "modify"
	ActionDelete   = "delete"
	ActionTruncate = "truncate"
)

// Column types an Event's Types names.
const (
	TypeNumeric     = "numeric"
	TypeTimestamptz = "timestamptz"
)

// Event is one row change (or a truncate of one table) inside a committed
// transaction.
type Event struct {
	// ID is the deterministic id: commit LSN and index within the
	// transaction, formatted %016X-%08X.
	ID         string    `json:"id"`
	CommitLSN  uint64    `json:"commit_lsn"`
	Index      uint32    `json:"index"`
	CommitTime time.Time `json:"commit_time"`
	Schema     string    `json:"schema"`
	Table      string    `json:"table"`
	Action     string    `json:"action"`
	// Data is the row after the change (for delete: what PostgreSQL sent of
	// the old row). Values are JSON-ready: int64, float64, string for
	// NaN/Infinity and numeric, bool, json.RawMessage for json/jsonb,
	// []any for arrays, nil for NULL.
	Data map[string]any `json:"data,omitempty"`
	// Old is the old row as far as REPLICA IDENTITY gives it.
	Old map[string]any `json:"old,omitempty"`
	// Changed lists, for modify, the columns whose value changed when the
	// old row is whole.
	Changed []string `json:"changed,omitempty"`
	// Key lists the relation's replica identity key columns, in order
	// (under REPLICA IDENTITY FULL: the primary key, when it has one).
	Key []string `json:"key,omitempty"`
	// Types names the type of the columns whose JSON-ready value is text
	// but which a filter compares as what they are: TypeNumeric,
	// TypeTimestamptz. The relation's events share it; nil when it has
	// none. The store does not keep it.
	Types map[string]string `json:"-"`

	// Entity, EntityID and EntityURL are filled in by the matcher.
	Entity    string `json:"entity,omitempty"`
	EntityID  string `json:"entity_id,omitempty"`
	EntityURL string `json:"entity_url,omitempty"`
	// PrevEntityID is the entity id the row had before an UPDATE that
	// changed it, as the old row tells ("" otherwise): the delivery waits
	// for that id's earlier ones too. Filled in by the matcher.
	PrevEntityID string `json:"-"`
}

// QualifiedTable returns schema.table.
func (e *Event) QualifiedTable() string { return e.Schema + "." + e.Table }

// FromSnapshot reports whether id, as EventID makes it, is a snapshot
// row's: its index is SnapshotIndex or above.
func FromSnapshot(id string) bool {
	_, index, ok := strings.Cut(id, "-")
	n, err := strconv.ParseUint(index, 16, 32)
	return ok && err == nil && n >= SnapshotIndex
}

// EventID formats the deterministic id of the index-th change of the
// transaction that committed at commitLSN.
func EventID(commitLSN uint64, index uint32) string {
	const hex = "0123456789ABCDEF"
	var b [16 + 1 + 8]byte
	for i := 15; i >= 0; i-- {
		b[i] = hex[commitLSN&0xF]
		commitLSN >>= 4
	}
	b[16] = '-'
	for i := 24; i > 16; i-- {
		b[i] = hex[index&0xF]
		index >>= 4
	}
	return string(b[:])
}

// Tx is one committed transaction's published changes, or a chunk of them.
//
// A big transaction is not held in memory whole: protocol v1 sends only
// committed transactions and its Begin carries the commit LSN and time, so
// the Reader hands the Sink chunks of up to a few thousand events as they
// are decoded. Every chunk has the transaction's CommitLSN and CommitTime;
// event indexes (and so ids) run on across its chunks. Chunks before the
// last have EndLSN 0: nothing may be confirmed for them. The last chunk
// carries the EndLSN, and only its durability makes the transaction
// durable. After a crash PostgreSQL sends the whole transaction again, so a
// Sink must take chunks it already stored as repeats (same event ids).
type Tx struct {
	CommitLSN  uint64
	EndLSN     uint64 // the LSN to confirm once the transaction is durable; 0 in a chunk before the last
	CommitTime time.Time
	Events     []Event
}

// Sink receives committed transactions in commit order.
type Sink interface {
	// Write hands over one transaction, or one chunk of it (see Tx). It
	// may return before the transaction is durable; Durable reports that.
	Write(ctx context.Context, tx *Tx) error
	// Durable returns the EndLSN of the latest transaction whose effects
	// are fsynced; every earlier transaction is durable too.
	Durable() uint64
}

// SizeHint guesses the bytes an encoding of ev takes, to allocate its
// buffer once: its strings, and each column's name and string value plus
// ten.
func (ev *Event) SizeHint() int {
	n := len(ev.ID) + len(ev.Schema) + len(ev.Table) + len(ev.Entity) + len(ev.EntityID) + len(ev.EntityURL)
	for _, m := range []map[string]any{ev.Data, ev.Old} {
		for k, v := range m {
			n += len(k) + 10
			if s, ok := v.(string); ok {
				n += len(s)
			}
		}
	}
	return n
}
