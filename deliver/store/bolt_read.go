package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// Queue reads a webhook's counters and counts its pending and failed
// deliveries.
func (s *Bolt) Queue(name string) (Queue, error) {
	var q Queue
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketStats).Get([]byte(name)); v != nil {
			if err := json.Unmarshal(v, &q.Counters); err != nil {
				return err
			}
		}
		b := tx.Bucket(queueBucket(name))
		if b == nil {
			return nil
		}
		n := 0
		return b.ForEach(func(_, v []byte) error {
			switch v[0] {
			case recPending:
				q.Pending++
			case recFailed:
				q.Failed++
			}
			// The count reads every record: a long backlog would
			// otherwise be resident all at once after a restart.
			if n++; n%scanDropEvery == 0 {
				dropMapped(tx)
			}
			return nil
		})
	})
	if err != nil {
		return Queue{}, fmt.Errorf("load webhook %s: %w", name, err)
	}
	return q, nil
}

// Window reads up to limit pending deliveries of a webhook from sequence
// from on, with their events. Webhooks that want the same events load them
// at about the same time, so the first one decodes each event and the
// others share it: events are never changed once decoded. An event only
// one delivery still refers to is not kept for sharing. A delivery whose
// record or event cannot be read is logged and skipped.
func (s *Bolt) Window(name string, from uint64, limit int, parts Parts) (Window, error) {
	w := Window{Last: from - 1, Exhausted: true}
	err := s.db.View(func(tx *bolt.Tx) error {
		if s.DuringWindow != nil {
			s.DuringWindow()
		}
		b := tx.Bucket(queueBucket(name))
		if b == nil {
			return nil
		}
		events := &orderedCursor{c: tx.Bucket(bucketEvents).Cursor()}
		c := b.Cursor()
		for k, v := c.Seek(seqKey(from)); k != nil; k, v = c.Next() {
			if len(w.Pending) >= limit {
				w.Exhausted = false
				break
			}
			w.Last = binary.BigEndian.Uint64(k)
			if v[0] != recPending {
				continue
			}
			rec, err := decodeRecord(v)
			if err != nil {
				s.log.Error("skipping unreadable delivery", "webhook", name, "seq", w.Last, "err", err)
				continue
			}
			if parts != AllParts && !parts.Has(PartOf(rec.EntityID)) {
				continue
			}
			ev, err := s.loadEvent(events, rec.EventID)
			if err != nil {
				s.log.Error("skipping delivery of unreadable event", "webhook", name, "event", rec.EventID, "err", err)
				continue
			}
			w.Pending = append(w.Pending, Pending{Seq: w.Last, Record: rec, Event: ev})
		}
		return nil
	})
	if err != nil {
		return Window{}, err
	}
	return w, nil
}

// loadEvent reads a stored event with a cursor of the events bucket,
// shared while another delivery refers to it (see Window).
func (s *Bolt) loadEvent(events *orderedCursor, id string) (*cdc.Event, error) {
	if ev, ok := s.loaded.Get(id); ok {
		return ev, nil
	}
	v, found := events.find([]byte(id))
	if !found {
		return nil, fmt.Errorf("event %s: not stored", id)
	}
	ev, err := decodeEvent(v)
	if err != nil {
		return nil, err
	}
	if binary.BigEndian.Uint32(v) > 1 {
		s.loaded.Add(id, ev)
	}
	return ev, nil
}

// Deliveries returns up to limit of a webhook's stored deliveries, newest
// first, with their events (nil where unreadable), only those of status
// when status is not "".
func (s *Bolt) Deliveries(name string, limit int, status string) ([]Pending, error) {
	var out []Pending
	err := s.db.View(func(tx *bolt.Tx) error {
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
			p := Pending{Seq: binary.BigEndian.Uint64(k), Record: rec}
			if ev, err := decodeEvent(events.Get([]byte(rec.EventID))); err == nil {
				p.Event = ev
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// FailedSince returns the sequences of a webhook's failed deliveries whose
// last attempt (or creation) is at or after since, in queue order.
func (s *Bolt) FailedSince(name string, since time.Time) ([]uint64, error) {
	var seqs []uint64
	err := s.db.View(func(tx *bolt.Tx) error {
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
	return seqs, err
}

// Redeliver queues a past delivery of a webhook again as a new one: a
// failed delivery is replaced by it, a successful one stays in the
// history. A delivery that is not stored is ErrNotFound, a pending one
// ErrPending.
func (s *Bolt) Redeliver(name string, seq uint64) (Redelivered, error) {
	var r Redelivered
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		r, err = redeliverIn(tx, name, seq, false)
		return err
	})
	return r, err
}

// RedeliverFailed queues those of a webhook's deliveries seqs that are
// still failed again, in one transaction, each replaced by its new one.
func (s *Bolt) RedeliverFailed(name string, seqs []uint64) ([]Redelivered, error) {
	var out []Redelivered
	err := s.db.Update(func(tx *bolt.Tx) (err error) {
		out, err = redeliverEach(seqs, func(seq uint64) (Redelivered, error) { return redeliverIn(tx, name, seq, true) })
		return err
	})
	return out, err
}

// redeliverIn queues delivery seq of webhook name again within tx; with
// failedOnly, one that is not failed is ErrNotFound.
func redeliverIn(tx *bolt.Tx, name string, seq uint64, failedOnly bool) (Redelivered, error) {
	b := tx.Bucket(queueBucket(name))
	var v []byte
	if b != nil {
		v = b.Get(seqKey(seq))
	}
	if v == nil || (failedOnly && v[0] != recFailed) {
		return Redelivered{}, ErrNotFound
	}
	if v[0] == recPending {
		return Redelivered{}, ErrPending
	}
	old, err := decodeRecord(v)
	if err != nil {
		return Redelivered{}, err
	}
	events := tx.Bucket(bucketEvents)
	ev, err := decodeEvent(events.Get([]byte(old.EventID)))
	if err != nil {
		return Redelivered{}, err
	}
	if err := refEvent(events, old.EventID); err != nil {
		return Redelivered{}, err
	}
	nseq, err := b.NextSequence()
	if err != nil {
		return Redelivered{}, err
	}
	rec := &Record{Status: StatusPending, EventID: old.EventID, Event: old.Event, Entity: old.Entity, EntityID: old.EntityID, PrevEntityID: old.PrevEntityID, CreatedAt: time.Now().UTC()}
	if err := b.Put(seqKey(nseq), encodeRecord(rec)); err != nil {
		return Redelivered{}, err
	}
	r := Redelivered{Pending: Pending{Seq: nseq, Record: rec, Event: ev}}
	if v[0] == recFailed {
		r.WasFailed = true
		if err := b.Delete(seqKey(seq)); err != nil {
			return Redelivered{}, err
		}
		if err := derefEventN(events, events.Cursor(), old.EventID, 1); err != nil {
			return Redelivered{}, err
		}
	}
	return r, nil
}

// Queues returns the names of the webhooks with a stored queue.
func (s *Bolt) Queues() ([]string, error) {
	var names []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if n, ok := strings.CutPrefix(string(name), "q/"); ok {
				names = append(names, n)
			}
			return nil
		})
	})
	return names, err
}

// DropQueue deletes a webhook's deliveries, counters and override. The
// deliveries go dropChunk to a transaction, each with its reference on its
// event: a single transaction for a long queue held the store's only
// writer, and so every commit, for seconds, and took memory in proportion
// (1,000,000 deliveries: 3.4 s and 150 MB of heap). A crash in between
// leaves the queue of a webhook that exists no more, which the caller
// finishes at the next start (see Queues); no reference is dropped twice,
// as each goes with its delivery.
func (s *Bolt) DropQueue(name string) error {
	for more := true; more; {
		err := s.db.Update(func(tx *bolt.Tx) error {
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
			for _, bk := range [][]byte{queueBucket(name), doneBucket(name), chartBucket(name)} {
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
		if err == nil && s.AfterDropChunk != nil {
			err = s.AfterDropChunk()
		}
		if err != nil {
			return err
		}
		s.releaseMapped()
	}
	// Not inside a transaction: Commit holds s.mu while it waits for one.
	s.mu.Lock()
	delete(s.done, name)
	s.mu.Unlock()
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

// WebhookDefs returns the definitions PutWebhook stored, by name.
func (s *Bolt) WebhookDefs() (map[string][]byte, error) {
	var out map[string][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		out = webhookDefs(tx)
		return nil
	})
	return out, err
}

// PutWebhook stores the definition of a webhook made through the admin API.
func (s *Bolt) PutWebhook(name string, def []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketWebhooks).Put([]byte(name), def) })
}

// DeleteWebhook forgets a definition PutWebhook stored.
func (s *Bolt) DeleteWebhook(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketWebhooks).Delete([]byte(name)) })
}

// override records that a config webhook was switched off by a 410 or
// through the admin API; it holds until the webhook's URL changes in the
// config, or the admin API switches it on.
type override struct {
	Active bool   `json:"active"`
	URL    string `json:"url"`
}

// SwitchedOff reports whether the store keeps config webhook name, at url,
// switched off.
func (s *Bolt) SwitchedOff(name, url string) (bool, error) {
	var off bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var o override
		v := tx.Bucket(bucketActive).Get([]byte(name))
		off = v != nil && json.Unmarshal(v, &o) == nil && o.URL == url && !o.Active
		return nil
	})
	return off, err
}

// SetSwitchedOff keeps config webhook name switched off while its URL
// stays url (off), or forgets that (not off).
func (s *Bolt) SetSwitchedOff(name, url string, off bool) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketActive)
		if !off {
			return b.Delete([]byte(name))
		}
		v, _ := json.Marshal(override{Active: false, URL: url})
		return b.Put([]byte(name), v)
	})
}

// Backfill returns the state of the backfill under way, nil if none.
func (s *Bolt) Backfill() ([]byte, error) {
	var state []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		state = bytes.Clone(tx.Bucket(bucketMeta).Get(keyBackfill))
		return nil
	})
	return state, err
}

// SetBackfill stores the state of a backfill under way; nil drops it.
func (s *Bolt) SetBackfill(state []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if state == nil {
			return tx.Bucket(bucketMeta).Delete(keyBackfill)
		}
		return tx.Bucket(bucketMeta).Put(keyBackfill, state)
	})
}

func marshalCounters(c Counters) []byte {
	b, _ := json.Marshal(c)
	return b
}
