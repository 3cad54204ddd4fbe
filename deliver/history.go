package deliver

import (
	"errors"
	"fmt"
	"strconv"

	"walhook/cdc"
	"walhook/deliver/store"
)

// DeliveryQuery selects a webhook's stored deliveries (see store.Query);
// Before is a sequence, as ParseCursor reads it.
type DeliveryQuery = store.Query

// DeliveryPage is one page of a search of the history.
type DeliveryPage struct {
	Deliveries []Delivery
	// Next is the cursor of the next page (a delivery id, for ?before=);
	// "" when nothing older is left.
	Next string
}

// ParseCursor reads a page's cursor: a delivery id of the webhook name,
// or the sequence alone in hexadecimal, as delivery ids end.
func ParseCursor(name, cursor string) (uint64, error) {
	if n, seq, err := parseDeliveryID(cursor); err == nil && n == name {
		return seq, nil
	}
	seq, err := strconv.ParseUint(cursor, 16, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("before: must be a delivery id of webhook %s or its hexadecimal sequence (got %q)", name, cursor)
	}
	return seq, nil
}

// FindDeliveries searches a webhook's stored deliveries, newest first, a
// page at a time; with payloads, each carries its body as it is sent now.
func (q *Queue) FindDeliveries(name string, dq DeliveryQuery, payloads bool) (DeliveryPage, error) {
	h := q.dispatcherOf(name)
	if h == nil {
		return DeliveryPage{}, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	switch dq.Status {
	case "", StatusPending, StatusSuccess, StatusFailed:
	default:
		return DeliveryPage{}, fmt.Errorf("status: must be pending, success or failed (got %q)", dq.Status)
	}
	switch dq.Action {
	case "", cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate:
	default:
		return DeliveryPage{}, fmt.Errorf("action: must be create, modify, delete or truncate (got %q)", dq.Action)
	}
	var enc *encoder
	if payloads {
		h.mu.Lock()
		enc = h.enc
		h.mu.Unlock()
	}
	p, err := q.st.Find(name, dq)
	if err != nil {
		return DeliveryPage{}, err
	}
	out := DeliveryPage{Deliveries: make([]Delivery, 0, len(p.Deliveries))}
	if p.Next != 0 {
		out.Next = deliveryID(name, p.Next)
	}
	for _, sp := range p.Deliveries {
		d := storedDelivery(name, sp)
		if sp.Event != nil && enc != nil {
			body, err := enc.encode(&event{Event: sp.Event})
			if err == nil {
				d.Payload = body.data
			} else if errors.Is(err, ErrTemplateLimit) {
				enc = nil // each may take the template's time limit: the rest go without
			}
		}
		out.Deliveries = append(out.Deliveries, d)
	}
	return out, nil
}

// Delivery returns one stored delivery by its id, with its payload.
func (q *Queue) Delivery(id string) (Delivery, error) {
	name, seq, err := parseDeliveryID(id)
	if err != nil {
		return Delivery{}, err
	}
	p, err := q.FindDeliveries(name, DeliveryQuery{Before: seq + 1, Limit: 1}, true)
	if err != nil {
		return Delivery{}, err
	}
	if len(p.Deliveries) == 0 || p.Deliveries[0].ID != deliveryID(name, seq) {
		return Delivery{}, fmt.Errorf("delivery %q: %w", id, ErrNotFound)
	}
	return p.Deliveries[0], nil
}

func storedDelivery(name string, p store.Pending) Delivery {
	rec := p.Record
	return Delivery{
		ID: deliveryID(name, p.Seq), Webhook: name, EventID: rec.EventID,
		Event: rec.Event, EntityID: rec.EntityID, Status: rec.Status, CreatedAt: rec.CreatedAt,
		NextAttemptAt: rec.Due, Attempts: rec.Attempts, Batch: rec.Batch,
	}
}
