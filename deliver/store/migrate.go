package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// Moved counts what MoveToPostgres copied.
type Moved struct {
	Events, Deliveries, Webhooks, Counters, SwitchedOff int
	Durable                                             uint64
}

func (m Moved) String() string {
	return fmt.Sprintf("%d events, %d deliveries, %d API webhooks, %d webhooks' counters, %d switched off; durable WAL position %X/%X",
		m.Events, m.Deliveries, m.Webhooks, m.Counters, m.SwitchedOff, m.Durable>>32, uint32(m.Durable))
}

// ErrNotEmpty: the store to move into holds a queue already.
var ErrNotEmpty = errors.New("holds a queue already")

// MoveToPostgres copies everything in the bbolt store into an empty
// PostgreSQL store, in one transaction of the latter: events with their
// reference counts, every delivery under its sequence (so delivery ids
// stay valid) with its attempts, the history the retention keeps, API
// webhooks, counters, switch-offs, the durable position and a backfill's
// state. The bbolt store is only read.
func MoveToPostgres(ctx context.Context, from *Bolt, to *Postgres) (Moved, error) {
	var m Moved
	err := pgx.BeginFunc(ctx, to.pool, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, to.sql(`SELECT (SELECT count(*) FROM {s}.deliveries) + (SELECT count(*) FROM {s}.webhooks) + (SELECT count(*) FROM {s}.meta)`)).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("the store in schema %s %w", to.schema, ErrNotEmpty)
		}
		return from.db.View(func(btx *bolt.Tx) error {
			var err error
			m, err = copyBolt(ctx, btx, tx, to)
			return err
		})
	})
	if err != nil {
		return Moved{}, err
	}
	to.durable.Store(m.Durable)
	return m, nil
}

// copyBolt writes what btx holds into tx, with COPY.
func copyBolt(ctx context.Context, btx *bolt.Tx, tx pgx.Tx, to *Postgres) (Moved, error) {
	var m Moved
	table := func(name string) pgx.Identifier { return pgx.Identifier{strings.Trim(to.schema, `"`), name} }
	// Events and deliveries stream from the bbolt file into COPY, a row at
	// a time: a store of millions is never held in memory.
	n, err := copyFrom(ctx, tx, table("events"), []string{"id", "refs", "body"}, cursorRows(btx.Bucket(bucketEvents).Cursor(), func(k, v []byte) ([]any, error) {
		if len(v) < 4 {
			return nil, nil
		}
		return []any{string(k), int32(binary.BigEndian.Uint32(v)), v}, nil
	}))
	if err != nil {
		return m, err
	}
	m.Events = n
	var queues []string
	btx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if webhook, ok := strings.CutPrefix(string(name), "q/"); ok {
			queues = append(queues, webhook)
		}
		return nil
	})
	var maxSeq uint64
	for _, webhook := range queues {
		n, err := copyFrom(ctx, tx, table("deliveries"), []string{"webhook", "seq", "status", "event_id", "record", "entity_id", "event", "created_at", "part"},
			cursorRows(btx.Bucket(queueBucket(webhook)).Cursor(), func(k, v []byte) ([]any, error) {
				rec, err := decodeRecord(v)
				if err != nil {
					return nil, fmt.Errorf("delivery %s-%x: %w", webhook, k, err)
				}
				seq := binary.BigEndian.Uint64(k)
				maxSeq = max(maxSeq, seq)
				return []any{webhook, int64(seq), string(v[:1]), rec.EventID, v, rec.EntityID, rec.Event, rec.CreatedAt, int16(PartOf(rec.EntityID))}, nil
			}))
		if err != nil {
			return m, err
		}
		m.Deliveries += n
	}
	if maxSeq > 0 {
		if _, err := tx.Exec(ctx, to.sql(`SELECT setval('{s}.delivery_seq', $1)`), int64(maxSeq)); err != nil {
			return m, err
		}
	}
	var webhooks, counters, off [][]any
	btx.Bucket(bucketWebhooks).ForEach(func(k, v []byte) error {
		webhooks = append(webhooks, []any{string(k), v})
		return nil
	})
	btx.Bucket(bucketStats).ForEach(func(k, v []byte) error {
		counters = append(counters, []any{string(k), v})
		return nil
	})
	btx.Bucket(bucketActive).ForEach(func(k, v []byte) error {
		var o override
		if json.Unmarshal(v, &o) == nil && !o.Active {
			off = append(off, []any{string(k), o.URL})
		}
		return nil
	})
	if m.Webhooks, err = copyRows(ctx, tx, table("webhooks"), []string{"name", "def"}, webhooks); err != nil {
		return m, err
	}
	if m.Counters, err = copyRows(ctx, tx, table("counters"), []string{"webhook", "value"}, counters); err != nil {
		return m, err
	}
	if m.SwitchedOff, err = copyRows(ctx, tx, table("switched_off"), []string{"name", "url"}, off); err != nil {
		return m, err
	}
	var charts [][]any
	btx.ForEach(func(name []byte, b *bolt.Bucket) error {
		if webhook, ok := strings.CutPrefix(string(name), "c/"); ok {
			b.ForEach(func(k, v []byte) error {
				if len(k) == 2 && len(v) == BucketBytes {
					charts = append(charts, []any{webhook, int16(binary.BigEndian.Uint16(k)), v})
				}
				return nil
			})
		}
		return nil
	})
	if _, err = copyRows(ctx, tx, table("charts"), []string{"webhook", "slot", "bucket"}, charts); err != nil {
		return m, err
	}
	meta := btx.Bucket(bucketMeta)
	for _, key := range [][]byte{keyDurable, keyBackfill} {
		if v := meta.Get(key); v != nil {
			if _, err := tx.Exec(ctx, to.sql(`INSERT INTO {s}.meta (key, value) VALUES ($1, $2)`), string(key), v); err != nil {
				return m, err
			}
		}
	}
	if v := meta.Get(keyDurable); len(v) == 8 {
		m.Durable = binary.BigEndian.Uint64(v)
	}
	return m, nil
}

func copyRows(ctx context.Context, tx pgx.Tx, table pgx.Identifier, columns []string, rows [][]any) (int, error) {
	return copyFrom(ctx, tx, table, columns, pgx.CopyFromRows(rows))
}

func copyFrom(ctx context.Context, tx pgx.Tx, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int, error) {
	n, err := tx.CopyFrom(ctx, table, columns, src)
	if err != nil {
		return 0, fmt.Errorf("copy into %s: %w", table.Sanitize(), err)
	}
	return int(n), nil
}

// cursorRows is the rows row makes of a bbolt cursor's pairs, in key
// order; a pair it makes no row of (nil) is left out.
func cursorRows(c *bolt.Cursor, row func(k, v []byte) ([]any, error)) pgx.CopyFromSource {
	var k, v []byte
	started := false
	return pgx.CopyFromFunc(func() ([]any, error) {
		for {
			if started {
				k, v = c.Next()
			} else {
				k, v = c.First()
				started = true
			}
			if k == nil {
				return nil, nil
			}
			if r, err := row(k, v); err != nil || r != nil {
				return r, err
			}
		}
	})
}
