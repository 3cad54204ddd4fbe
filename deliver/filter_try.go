package deliver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"walhook/cdc"
)

// WhenResult is what a when decides on one event.
type WhenResult struct {
	EventID string `json:"event_id,omitempty"`
	Event   string `json:"event"`           // <entity>.<action>
	Sent    bool   `json:"sent"`            // the webhook would get it
	Error   string `json:"error,omitempty"` // the when failed on it: not sent
}

// Errors of TryWhen the caller did: a when that does not compile, an
// event that does not read.
var (
	ErrWhen  = errors.New("when")
	ErrEvent = errors.New("event")
)

// TryWhen evaluates expr, or the webhook's own when when expr is "", on
// event (one event as a receiver's JSON body shows it) or, when event is
// empty, on the webhook's latest stored deliveries, and says which would
// have been sent. An event's numeric and timestamptz columns are known by
// their table's latest live event a filter saw (the store does not keep
// column types).
func (q *Queue) TryWhen(name, expr string, event []byte, limit int) (string, []WhenResult, error) {
	h := q.dispatcherOf(name)
	if h == nil {
		return "", nil, fmt.Errorf("webhook %q: %w", name, ErrNotFound)
	}
	w := h.webhook()
	if expr == "" {
		expr = w.When
	}
	if expr == "" {
		return "", nil, fmt.Errorf("%w: the webhook has none; give one to try", ErrWhen)
	}
	f, err := CompileWhen(expr)
	if err != nil {
		return expr, nil, fmt.Errorf("webhook %q: %w: %w", name, ErrWhen, err)
	}
	var events []*cdc.Event
	if len(bytes.TrimSpace(event)) > 0 {
		ev, err := pastedEvent(event)
		if err != nil {
			return expr, nil, err
		}
		events = append(events, ev)
	} else {
		if limit <= 0 {
			limit = 20
		}
		stored, err := q.st.Deliveries(name, limit, "")
		if err != nil {
			return expr, nil, err
		}
		for _, p := range stored {
			if p.Event != nil {
				events = append(events, p.Event)
			}
		}
	}
	out := make([]WhenResult, 0, len(events))
	for _, ev := range events {
		if ev.Types == nil {
			c := *ev
			c.Types = q.types.of(ev)
			ev = &c
		}
		if !slices.Contains(w.Actions, ev.Action) {
			out = append(out, WhenResult{EventID: ev.ID, Event: eventName(ev), Error: "actions: the webhook does not want " + ev.Action})
			continue
		}
		sent, err := f.Match(ev)
		r := WhenResult{EventID: ev.ID, Event: eventName(ev), Sent: sent}
		if err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return expr, out, nil
}

// pastedEvent reads an event as the JSON body shows it: action, table
// (schema.table), entity, data, old, changed. Numbers that are integers
// are int64, as cdc gives them.
func pastedEvent(b []byte) (*cdc.Event, error) {
	var in struct {
		ID      string         `json:"id"`
		Action  string         `json:"action"`
		Table   string         `json:"table"`
		Entity  string         `json:"entity"`
		Data    map[string]any `json:"data"`
		Old     map[string]any `json:"old"`
		Changed []string       `json:"changed"`
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&in); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEvent, err)
	}
	switch in.Action {
	case cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate:
	default:
		return nil, fmt.Errorf("%w: action: must be create, modify, delete or truncate (got %q)", ErrEvent, in.Action)
	}
	schema, table, ok := strings.Cut(in.Table, ".")
	if !ok {
		schema, table = "public", in.Table
	}
	return &cdc.Event{ID: in.ID, Action: in.Action, Schema: schema, Table: table, Entity: in.Entity,
		Data: pastedRow(in.Data), Old: pastedRow(in.Old), Changed: in.Changed}, nil
}

func pastedRow(m map[string]any) map[string]any {
	for k, v := range m {
		m[k] = pastedValue(v)
	}
	return m
}

func pastedValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case map[string]any:
		return pastedRow(x)
	case []any:
		for i := range x {
			x[i] = pastedValue(x[i])
		}
	}
	return v
}

// tableTypes remembers each table's latest cdc.Event.Types a filter saw,
// for events that come without them (see TryWhen).
type tableTypes struct {
	mu sync.Mutex
	m  map[tableKey]map[string]string
}

type tableKey struct{ schema, table string }

func (t *tableTypes) note(ev *cdc.Event) {
	if ev.Types == nil {
		return
	}
	t.mu.Lock()
	if t.m == nil {
		t.m = map[tableKey]map[string]string{}
	}
	t.m[tableKey{ev.Schema, ev.Table}] = ev.Types
	t.mu.Unlock()
}

func (t *tableTypes) of(ev *cdc.Event) map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[tableKey{ev.Schema, ev.Table}]
}
