package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// findScan bounds the records one Find reads.
var findScan = 200_000

// Find returns a page of a webhook's stored deliveries that match q,
// newest first, with their events (nil where unreadable).
//
// The bbolt store keeps no index but the sequence: Find walks the queue
// back from q.Before and reads each record's head (ids, event name,
// creation time; not its attempts), decoding in full only those that
// match. What a search costs is the records it walks, not the ones it
// finds: a search for an entity id that matches nothing reads the whole
// queue (retained successes, failures and pending): about 0.75 µs a
// record, 150 ms for 200,000 (measured on 2 shared cores, records without
// attempts). So one call reads at most findScan
// records and then returns what it found with Next at the last one read,
// and the caller asks again from there: a long queue is searched in pages
// of bounded work, never in one long read transaction. An index by entity
// id would cost every commit a second write per delivery, for a page an
// operator opens now and then.
func (s *Bolt) Find(name string, q Query) (Page, error) {
	var p Page
	limit := q.limit()
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(queueBucket(name))
		if b == nil {
			return nil
		}
		events := tx.Bucket(bucketEvents)
		c := b.Cursor()
		var k, v []byte
		if q.Before == 0 {
			k, v = c.Last()
		} else {
			k, v = c.Seek(seqKey(q.Before))
			if k == nil {
				k, v = c.Last()
			}
			for k != nil && binary.BigEndian.Uint64(k) >= q.Before {
				k, v = c.Prev()
			}
		}
		for n := 0; k != nil; k, v = c.Prev() {
			seq := binary.BigEndian.Uint64(k)
			if n++; n > findScan {
				p.Next = seq + 1 // not read yet: the next page starts with it
				return nil
			}
			if q.Status != "" && v[0] != statusByte(q.Status) {
				continue
			}
			head, err := decodeRecordHead(v)
			if err != nil {
				return fmt.Errorf("delivery %s-%x: %w", name, seq, err)
			}
			if !q.matches(head) {
				continue
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("delivery %s-%x: %w", name, seq, err)
			}
			d := Pending{Seq: seq, Record: rec}
			if ev, err := decodeEvent(events.Get([]byte(rec.EventID))); err == nil {
				d.Event = ev
			}
			p.Deliveries = append(p.Deliveries, d)
			if len(p.Deliveries) == limit {
				p.Next = seq
				return nil
			}
		}
		return nil
	})
	return p, err
}

// decodeRecordHead reads a stored delivery up to its creation time,
// leaving out its due time and attempts, which a search does not look at.
func decodeRecordHead(v []byte) (*Record, error) {
	if len(v) < 2 || (v[1] != binaryRecord && v[1] != binaryRecordPrev) {
		return decodeRecord(v) // JSON, of an older walhook
	}
	r := eventReader{b: v[2:]}
	rec := &Record{Status: statusName(v[0]), EventID: r.string(), Event: r.name(), Entity: r.name(), EntityID: r.string()}
	if v[1] == binaryRecordPrev {
		rec.PrevEntityID = r.string()
	}
	rec.CreatedAt = r.time()
	if r.err != nil {
		return nil, fmt.Errorf("decode delivery: %w", r.err)
	}
	return rec, nil
}
