package store

import (
	"strings"
	"time"
)

// Query selects a webhook's stored deliveries for the history, newest
// first: every filter that is set must hold.
type Query struct {
	Status   string // pending, success or failed
	Action   string // the event's action: the part of Record.Event after its last dot
	EntityID string
	EventID  string
	// Since and Until bound when the delivery was queued (Record.CreatedAt):
	// at or after Since, before Until.
	Since, Until time.Time
	// Before reads only sequences below it: the Next of the page before;
	// 0 starts at the newest.
	Before uint64
	Limit  int // deliveries per page; 100 when 0
}

// Page is one page of a Query's answer.
type Page struct {
	Deliveries []Pending
	// Next is the Before of the next page; 0 when nothing older is left to
	// read. A full page sets it to its last sequence (the next page may
	// then be empty), and so does a scan that stopped at its bound (see
	// Bolt.Find) with fewer deliveries than asked.
	Next uint64
}

// limit is q.Limit, defaulted.
func (q *Query) limit() int {
	if q.Limit <= 0 {
		return 100
	}
	return q.Limit
}

// matches reports whether a delivery's record, read up to its creation
// time, passes q's filters.
func (q *Query) matches(r *Record) bool {
	switch {
	case q.Status != "" && r.Status != q.Status,
		q.EntityID != "" && r.EntityID != q.EntityID,
		q.EventID != "" && r.EventID != q.EventID,
		q.Action != "" && !strings.HasSuffix(r.Event, "."+q.Action),
		!q.Since.IsZero() && r.CreatedAt.Before(q.Since),
		!q.Until.IsZero() && !r.CreatedAt.Before(q.Until):
		return false
	}
	return true
}
