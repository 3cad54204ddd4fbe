package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A webhook's charts are fixed-size rings of buckets: ChartMinutes of one
// minute (the last hour), then ChartQuarters of fifteen minutes (the last
// 24 hours). A bucket is reused when its slot comes round again, so a
// webhook's charts take ChartSlots × BucketBytes = 156 × 84 = 13,104 bytes
// whatever its traffic (plus, in bbolt, a 2-byte key each and the page
// overhead; in PostgreSQL a row each).
const (
	ChartMinutes  = 60
	ChartQuarters = 96
	ChartSlots    = ChartMinutes + ChartQuarters
	// DurationBins: bin 0 counts attempts under 1 ms, bin i those in
	// [2^(i-1), 2^i) ms, the last one 16.4 s and over.
	DurationBins = 16
	// BucketBytes is a bucket's stored size.
	BucketBytes = 8 + 3*4 + 4*DurationBins
)

// Bucket is a webhook's attempts within one interval.
type Bucket struct {
	Start     int64                // Unix seconds of the interval's start; 0: never used
	OK        uint32               // attempts answered 2xx
	Failed    uint32               // other attempts: another status, a timeout, no connection
	Depth     uint32               // the queue's depth last seen in the interval
	Durations [DurationBins]uint32 // attempts by duration (see DurationBins)
}

// Chart is a webhook's buckets by slot.
type Chart [ChartSlots]Bucket

// ChartBucket is a bucket a commit stores (see Batch.Charts).
type ChartBucket struct {
	Webhook string
	Slot    int
	Bucket  Bucket
}

// MinuteSlot and QuarterSlot are the slots and interval starts of the
// buckets that hold time at.
func MinuteSlot(at time.Time) (slot int, start int64) {
	m := at.Unix() / 60
	return int(m % ChartMinutes), m * 60
}

// QuarterSlot: see MinuteSlot.
func QuarterSlot(at time.Time) (slot int, start int64) {
	q := at.Unix() / 900
	return ChartMinutes + int(q%ChartQuarters), q * 900
}

// DurationBin is the bin of an attempt that took d.
func DurationBin(d time.Duration) int {
	ms := d.Milliseconds()
	bin := 0
	for ms > 0 && bin < DurationBins-1 {
		ms >>= 1
		bin++
	}
	return bin
}

func encodeBucket(b *Bucket) []byte {
	out := make([]byte, 0, BucketBytes)
	out = binary.BigEndian.AppendUint64(out, uint64(b.Start))
	out = binary.BigEndian.AppendUint32(out, b.OK)
	out = binary.BigEndian.AppendUint32(out, b.Failed)
	out = binary.BigEndian.AppendUint32(out, b.Depth)
	for _, n := range b.Durations {
		out = binary.BigEndian.AppendUint32(out, n)
	}
	return out
}

func decodeBucket(v []byte) (Bucket, error) {
	var b Bucket
	if len(v) != BucketBytes {
		return b, fmt.Errorf("chart bucket: %d bytes, want %d", len(v), BucketBytes)
	}
	b.Start = int64(binary.BigEndian.Uint64(v))
	b.OK = binary.BigEndian.Uint32(v[8:])
	b.Failed = binary.BigEndian.Uint32(v[12:])
	b.Depth = binary.BigEndian.Uint32(v[16:])
	for i := range b.Durations {
		b.Durations[i] = binary.BigEndian.Uint32(v[20+4*i:])
	}
	return b, nil
}

// putCharts stores a commit's chart buckets.
func putCharts(btx *bolt.Tx, charts []ChartBucket) error {
	for i := range charts {
		cb := &charts[i]
		b, err := btx.CreateBucketIfNotExists(chartBucket(cb.Webhook))
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint16(nil, uint16(cb.Slot)), encodeBucket(&cb.Bucket)); err != nil {
			return err
		}
	}
	return nil
}

// Chart reads a webhook's chart; a webhook without one has empty buckets.
func (s *Bolt) Chart(name string) (Chart, error) {
	var c Chart
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(chartBucket(name))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 2 || int(binary.BigEndian.Uint16(k)) >= ChartSlots {
				return nil
			}
			slot := int(binary.BigEndian.Uint16(k))
			bk, err := decodeBucket(v)
			if err != nil {
				return err
			}
			c[slot] = bk
			return nil
		})
	})
	if err != nil {
		return Chart{}, fmt.Errorf("chart of %s: %w", name, err)
	}
	return c, nil
}

// putCharts stores a commit's chart buckets in one statement.
func (c *pgCommit) putCharts(charts []ChartBucket) error {
	if len(charts) == 0 {
		return nil
	}
	names := make([]string, len(charts))
	slots := make([]int16, len(charts))
	buckets := make([][]byte, len(charts))
	for i := range charts {
		names[i], slots[i], buckets[i] = charts[i].Webhook, int16(charts[i].Slot), encodeBucket(&charts[i].Bucket)
	}
	_, err := c.tx.Exec(c.ctx, c.s.sql(`INSERT INTO {s}.charts (webhook, slot, bucket) SELECT * FROM unnest($1::text[], $2::smallint[], $3::bytea[])
		ON CONFLICT (webhook, slot) DO UPDATE SET bucket = excluded.bucket`), names, slots, buckets)
	return err
}

// Chart reads a webhook's chart; a webhook without one has empty buckets.
func (s *Postgres) Chart(name string) (Chart, error) {
	ctx, cancel := callContext()
	defer cancel()
	var c Chart
	rows, err := s.pool.Query(ctx, s.sql(`SELECT slot, bucket FROM {s}.charts WHERE webhook = $1`), name)
	if err != nil {
		return c, fmt.Errorf("chart of %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var slot int16
		var v []byte
		if err := rows.Scan(&slot, &v); err != nil {
			return Chart{}, err
		}
		if slot < 0 || int(slot) >= ChartSlots {
			continue
		}
		if c[slot], err = decodeBucket(v); err != nil {
			return Chart{}, fmt.Errorf("chart of %s: %w", name, err)
		}
	}
	return c, rows.Err()
}
