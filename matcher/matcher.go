// Package matcher decides which webhooks want an event: it names the
// event's entity (an [[entity]] or the table-name rule), computes its
// entity_id and entity_url, and applies each webhook's events and actions
// filters.
package matcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	lru "github.com/hashicorp/golang-lru/v2"

	"walhook/cdc"
)

// Entity names a table as an event type.
type Entity struct {
	Name   string
	Schema string
	Table  string
	ID     []string // columns forming entity_id; empty: the replica identity key
	URL    string   // entity_url template with {column} placeholders
}

// Rule is one webhook's subscription.
type Rule struct {
	Webhook string
	Events  []string // entity names, schema.table, or "*"
	Actions []string // create, modify, delete, truncate; empty: the first three
}

// DefaultActions are the actions a rule without actions gets.
var DefaultActions = []string{cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete}

// relation is the compiled match result for one table, cached.
type relation struct {
	entity  string
	id      []string
	url     string
	targets map[string][]string // action -> webhook names
	named   bool                // an [[entity]] or some webhook's events name the table
}

// Matcher routes events to webhook names. It is safe for concurrent use.
type Matcher struct {
	byTable  map[string]Entity // schema.table -> entity
	byName   map[string]Entity
	rules    []Rule
	all      bool
	tables   []string
	bare     []BareName
	relCache *lru.Cache[string, *relation]
}

var (
	identRE = regexp.MustCompile(`^[^.\s]+\.[^.\s]+$`)
	bareRE  = regexp.MustCompile(`^[^.\s]+$`)
)

// ErrUnknownEntity is in the error of an event that names neither an
// [[entity]] nor a table.
var ErrUnknownEntity = errors.New("unknown entity")

// A BareName is an event in a rule's events that names no [[entity]] and
// no schema: it stands for the table public.<Name>, whose event type it
// is. Only the database can tell whether that table exists, so the
// callers that hold a connection check each one (Check).
type BareName struct {
	Webhook string
	Name    string
}

// Table is the table the name stands for, schema.table.
func (b BareName) Table() string { return "public." + b.Name }

// Unknown is the error for a bare name whose table does not exist.
func (b BareName) Unknown() error {
	return fmt.Errorf("webhook %q: events: %w %q: neither an [[entity]] nor a table %s exists", b.Webhook, ErrUnknownEntity, b.Name, b.Table())
}

// New compiles entities and rules. An event that is not "*" names an
// entity, a table as schema.table, or, bare, the table public.<name>
// (BareNames); anything else is an error naming the webhook.
func New(entities []Entity, rules []Rule) (*Matcher, error) {
	m := &Matcher{byTable: map[string]Entity{}, byName: map[string]Entity{}}
	for _, e := range entities {
		if e.Schema == "" {
			e.Schema = "public"
		}
		m.byTable[e.Schema+"."+e.Table] = e
		m.byName[e.Name] = e
	}
	tables := map[string]bool{}
	for _, r := range rules {
		for _, ev := range r.Events {
			switch {
			case ev == "*":
				m.all = true
			case m.byName[ev].Name != "":
				e := m.byName[ev]
				tables[e.Schema+"."+e.Table] = true
			case identRE.MatchString(ev):
				tables[ev] = true
			case bareRE.MatchString(ev):
				b := BareName{Webhook: r.Webhook, Name: ev}
				tables[b.Table()] = true
				m.bare = append(m.bare, b)
			default:
				return nil, fmt.Errorf("webhook %q: events: %w %q: neither an [[entity]] name, a table name nor schema.table", r.Webhook, ErrUnknownEntity, ev)
			}
		}
		for _, a := range r.Actions {
			switch a {
			case cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate:
			default:
				return nil, fmt.Errorf("webhook %q: actions: unknown action %q (create, modify, delete, truncate)", r.Webhook, a)
			}
		}
	}
	for t := range tables {
		m.tables = append(m.tables, t)
	}
	sort.Strings(m.tables)
	m.rules = rules
	cache, err := lru.New[string, *relation](1024)
	if err != nil {
		return nil, err
	}
	m.relCache = cache
	return m, nil
}

// Tables returns the schema.table names the rules need, and whether some
// rule wants every table.
func (m *Matcher) Tables() (tables []string, all bool) { return m.tables, m.all }

// BareNames returns the rules' events that stand for a table in public,
// in the order of the rules.
func (m *Matcher) BareNames() []BareName { return m.bare }

// Check returns the Unknown error of every bare name whose table exists
// reports missing, joined; nil when all exist.
func (m *Matcher) Check(exists func(table string) bool) error {
	var errs []error
	for _, b := range m.bare {
		if !exists(b.Table()) {
			errs = append(errs, b.Unknown())
		}
	}
	return errors.Join(errs...)
}

// EntityName returns the event type of a table: its [[entity]] name, else
// the table name for tables in public, else schema.table. A table in
// public named like an [[entity]] of another table is schema.table: the
// entity has the name, so events = ["orders"] never means both.
func (m *Matcher) EntityName(schema, table string) string {
	if e, ok := m.byTable[schema+"."+table]; ok {
		return e.Name
	}
	if _, taken := m.byName[table]; schema == "public" && !taken {
		return table
	}
	return schema + "." + table
}

func (m *Matcher) compile(schema, table string) *relation {
	key := schema + "." + table
	if r, ok := m.relCache.Get(key); ok {
		return r
	}
	r := &relation{entity: m.EntityName(schema, table), targets: map[string][]string{}}
	if e, ok := m.byTable[key]; ok {
		r.id, r.url, r.named = e.ID, e.URL, true
	}
	for _, rule := range m.rules {
		if !wants(rule.Events, r.entity, key) {
			continue
		}
		r.named = true
		actions := rule.Actions
		if len(actions) == 0 {
			actions = DefaultActions
		}
		for _, a := range actions {
			r.targets[a] = append(r.targets[a], rule.Webhook)
		}
	}
	m.relCache.Add(key, r)
	return r
}

func wants(events []string, entity, table string) bool {
	for _, ev := range events {
		if ev == "*" || ev == entity || ev == table {
			return true
		}
	}
	return false
}

// Route fills ev's Entity, EntityID and EntityURL and returns the names of
// the webhooks that want it.
func (m *Matcher) Route(ev *cdc.Event) []string {
	targets, _ := m.Match(ev)
	return targets
}

// Match is Route, and also reports whether the config names ev's table: an
// [[entity]] or some webhook's events. The changes of other tables come
// from a publication that carries more than walhook asked for: one managed
// by hand, or a table renamed since it was published (publications follow
// the table, the config its name).
func (m *Matcher) Match(ev *cdc.Event) (targets []string, named bool) {
	r := m.compile(ev.Schema, ev.Table)
	ev.Entity = r.entity
	targets = r.targets[ev.Action]
	if len(targets) == 0 {
		return nil, r.named
	}
	if ev.Action != cdc.ActionTruncate {
		cols := r.id
		if len(cols) == 0 {
			cols = ev.Key
		}
		ev.EntityID = entityID(ev, cols)
		if prev, ok := oldEntityID(ev, cols); ok {
			ev.PrevEntityID = prev
		}
		if r.url != "" {
			ev.EntityURL = expandURL(r.url, ev)
		}
	}
	return targets, r.named
}

func value(ev *cdc.Event, col string) (any, bool) {
	if v, ok := ev.Data[col]; ok {
		return v, true
	}
	v, ok := ev.Old[col]
	return v, ok
}

func entityID(ev *cdc.Event, cols []string) string {
	parts := make([]string, 0, len(cols))
	for _, c := range cols {
		v, _ := value(ev, c)
		parts = append(parts, Text(v))
	}
	return strings.Join(parts, ",")
}

// oldEntityID is the entity id of a modify's old row when it differs from
// the new row's: the old row carries every id column, with another value
// in one. Under REPLICA IDENTITY DEFAULT the old row is there exactly when
// the key changed; under FULL it always is, and the ids are compared
// without being built, as most updates keep the key.
func oldEntityID(ev *cdc.Event, cols []string) (string, bool) {
	if ev.Action != cdc.ActionModify || ev.Old == nil {
		return "", false
	}
	changed := false
	for _, c := range cols {
		old, ok := ev.Old[c]
		if !ok {
			return "", false
		}
		if cur, _ := value(ev, c); !sameValue(old, cur) {
			changed = true
		}
	}
	if !changed {
		return "", false
	}
	parts := make([]string, 0, len(cols))
	for _, c := range cols {
		parts = append(parts, Text(ev.Old[c]))
	}
	return strings.Join(parts, ","), true
}

// sameValue reports whether two column values give the same text in an
// entity id, comparing the usual key types without formatting them.
func sameValue(a, b any) bool {
	switch x := a.(type) {
	case int64:
		y, ok := b.(int64)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	}
	return Text(a) == Text(b)
}

var placeholder = regexp.MustCompile(`\{([^{}]+)\}`)

func expandURL(tmpl string, ev *cdc.Event) string {
	return placeholder.ReplaceAllStringFunc(tmpl, func(p string) string {
		v, _ := value(ev, p[1:len(p)-1])
		return url.PathEscape(Text(v))
	})
}

// Text renders a decoded column value as text, as in entity_id.
func Text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case json.RawMessage:
		return string(x)
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
}
