package store

import (
	"fmt"
	"strings"
)

// Find returns a page of a webhook's stored deliveries that match q,
// newest first, with their events (nil where unreadable). The columns of
// pgSchemaV2 carry the filters, so a search by entity id or event id
// reads the matching rows through their index, whatever the queue's
// length; the other filters are checked on the rows of the webhook read
// back from q.Before by the primary key.
func (s *Postgres) Find(name string, q Query) (Page, error) {
	ctx, cancel := callContext()
	defer cancel()
	where := []string{"d.webhook = $1"}
	args := []any{name}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", fmt.Sprint("$", len(args))))
	}
	if q.Status != "" {
		add(`d.status = $?::"char"`, string(rune(statusByte(q.Status))))
	}
	if q.EntityID != "" {
		add("d.entity_id = $?", q.EntityID)
	}
	if q.EventID != "" {
		add("d.event_id = $?", q.EventID)
	}
	if q.Action != "" {
		add("right(d.event, length($?) + 1) = '.' || $?", q.Action)
	}
	if !q.Since.IsZero() {
		add("d.created_at >= $?", q.Since)
	}
	if !q.Until.IsZero() {
		add("d.created_at < $?", q.Until)
	}
	if q.Before != 0 {
		add("d.seq < $?", int64(q.Before))
	}
	// Without an index for its filters a search reads at most findScan of
	// the webhook's deliveries, as Bolt's does, and says where it stopped.
	var floor uint64
	if q.EntityID == "" && q.EventID == "" && (q.Action != "" || !q.Since.IsZero() || !q.Until.IsZero()) {
		var err error
		if floor, err = s.scanFloor(name, q.Before); err != nil {
			return Page{}, err
		}
		if floor != 0 {
			add("d.seq >= $?", int64(floor))
		}
	}
	limit := q.limit()
	args = append(args, limit)
	rows, err := s.pool.Query(ctx, s.sql(`SELECT d.seq, d.record, d.event_id, e.refs, e.body FROM {s}.deliveries d LEFT JOIN {s}.events e ON e.id = d.event_id
		WHERE `+strings.Join(where, " AND ")+fmt.Sprint(" ORDER BY d.seq DESC LIMIT $", len(args))), args...)
	if err != nil {
		return Page{}, err
	}
	defer rows.Close()
	var p Page
	for rows.Next() {
		d, err := s.scanDelivery(rows, name, false)
		if err != nil {
			return Page{}, err
		}
		if d.Record == nil {
			return Page{}, fmt.Errorf("delivery %s-%d: unreadable record", name, d.Seq)
		}
		p.Deliveries = append(p.Deliveries, d)
	}
	if len(p.Deliveries) == limit {
		p.Next = p.Deliveries[limit-1].Seq
	} else if floor > 1 {
		p.Next = floor
	}
	return p, rows.Err()
}

// scanFloor is the lowest of the findScan newest deliveries of a webhook
// before before (0: no bound), when there are more than findScan of them;
// 0 when a search reads them all.
func (s *Postgres) scanFloor(name string, before uint64) (uint64, error) {
	ctx, cancel := callContext()
	defer cancel()
	if before == 0 {
		before = 1<<63 - 1
	}
	var low *int64
	var n int
	err := s.pool.QueryRow(ctx, s.sql(`SELECT min(seq), count(*) FROM (SELECT seq FROM {s}.deliveries WHERE webhook = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3) x`),
		name, int64(before), findScan+1).Scan(&low, &n)
	if err != nil || n <= findScan || low == nil {
		return 0, err
	}
	return uint64(*low) + 1, nil // the findScan newest: above the lowest of findScan + 1
}
