package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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

// putCharts stores a commit's chart buckets. Several walhooks sharing the
// store each count their own attempts in the same buckets: what is stored
// is the sum of their counts, each walhook adding what it counted since it
// last stored (or loaded) the bucket; the depth is the latest seen. stored
// are the buckets readCharts read.
func (c *pgCommit) putCharts(charts []ChartBucket, stored map[chartKey]Bucket) {
	if len(charts) == 0 {
		return
	}
	names := make([]string, len(charts))
	slots := make([]int16, len(charts))
	buckets := make([][]byte, len(charts))
	c.charted = make(map[chartKey]Bucket, len(charts))
	for i := range charts {
		key := chartKey{charts[i].Webhook, charts[i].Slot}
		merged := mergeBucket(stored[key], charts[i].Bucket, c.s.charted.get(key))
		names[i], slots[i], buckets[i] = key.webhook, int16(key.slot), encodeBucket(&merged)
		c.charted[key] = charts[i].Bucket
	}
	c.later(`INSERT INTO {s}.charts (webhook, slot, bucket) SELECT * FROM unnest($1::text[], $2::smallint[], $3::bytea[])
		ON CONFLICT (webhook, slot) DO UPDATE SET bucket = excluded.bucket`, names, slots, buckets)
}

// readCharts queues in b the read of the stored buckets of charts, locked
// until the commit; the map is filled when b is sent.
func (c *pgCommit) readCharts(b *pgx.Batch, charts []ChartBucket) map[chartKey]Bucket {
	stored := map[chartKey]Bucket{}
	if len(charts) == 0 {
		return stored
	}
	names := make([]string, len(charts))
	slots := make([]int16, len(charts))
	for i := range charts {
		names[i], slots[i] = charts[i].Webhook, int16(charts[i].Slot)
	}
	b.Queue(c.s.sql(`SELECT c.webhook, c.slot, c.bucket FROM {s}.charts c JOIN unnest($1::text[], $2::smallint[]) AS u(webhook, slot)
		ON c.webhook = u.webhook AND c.slot = u.slot ORDER BY 1, 2 FOR UPDATE OF c`), names, slots).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			var slot int16
			var v []byte
			if err := rows.Scan(&name, &slot, &v); err != nil {
				return err
			}
			if bk, err := decodeBucket(v); err == nil {
				stored[chartKey{name, int(slot)}] = bk
			}
		}
		return rows.Err()
	})
	return stored
}

// chartKey is a bucket of a webhook's chart.
type chartKey struct {
	webhook string
	slot    int
}

// mergeBucket is the bucket to store: stored, with what this walhook
// counted since it last stored or loaded the bucket (now less mine, when
// mine is of the same interval). A stored bucket of a later interval
// stays; one of an earlier interval is replaced.
func mergeBucket(stored, now, mine Bucket) Bucket {
	if stored.Start > now.Start {
		return stored
	}
	if mine.Start != now.Start {
		mine = Bucket{}
	}
	out := Bucket{Start: now.Start}
	if stored.Start == now.Start {
		out = stored
	}
	out.Depth = now.Depth
	out.OK += now.OK - mine.OK
	out.Failed += now.Failed - mine.Failed
	for i := range out.Durations {
		out.Durations[i] += now.Durations[i] - mine.Durations[i]
	}
	return out
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
	if err := rows.Err(); err != nil {
		return Chart{}, err
	}
	for slot := range c {
		if c[slot].Start != 0 {
			s.charted.first(chartKey{name, slot}, c[slot])
		}
	}
	return c, nil
}
