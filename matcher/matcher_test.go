package matcher_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"walhook/cdc"
	"walhook/matcher"
)

func TestRoute(t *testing.T) {
	m, err := matcher.New(
		[]matcher.Entity{{Name: "employee", Schema: "public", Table: "employees", URL: "https://hr.example.com/api/employees/{id}"}},
		[]matcher.Rule{
			{Webhook: "hr", Events: []string{"employee"}, Actions: []string{"create", "modify"}},
			{Webhook: "all", Events: []string{"*"}},
			{Webhook: "orders", Events: []string{"shop.orders"}, Actions: []string{"delete", "truncate"}},
		})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		schema, table, action string
		data                  map[string]any
		key                   []string
		want                  []string
		entity, id, url       string
	}{
		{"public", "employees", "create", map[string]any{"id": int64(130333)}, []string{"id"}, []string{"hr", "all"}, "employee", "130333", "https://hr.example.com/api/employees/130333"},
		{"public", "employees", "delete", map[string]any{"id": int64(7)}, []string{"id"}, []string{"all"}, "employee", "7", "https://hr.example.com/api/employees/7"},
		{"shop", "orders", "delete", map[string]any{"a": "x/y", "b": int64(2)}, []string{"a", "b"}, []string{"all", "orders"}, "shop.orders", "x/y,2", ""},
		{"shop", "orders", "truncate", nil, nil, []string{"orders"}, "shop.orders", "", ""},
		{"public", "misc", "modify", map[string]any{"k": true}, []string{"k"}, []string{"all"}, "misc", "true", ""},
	}
	for _, tc := range tests {
		ev := &cdc.Event{Schema: tc.schema, Table: tc.table, Action: tc.action, Data: tc.data, Key: tc.key}
		got := m.Route(ev)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s.%s %s: webhooks %v, want %v", tc.schema, tc.table, tc.action, got, tc.want)
		}
		if ev.Entity != tc.entity || ev.EntityID != tc.id || ev.EntityURL != tc.url {
			t.Errorf("%s.%s: entity %q id %q url %q, want %q %q %q", tc.schema, tc.table, ev.Entity, ev.EntityID, ev.EntityURL, tc.entity, tc.id, tc.url)
		}
	}
	tables, all := m.Tables()
	if !all || !reflect.DeepEqual(tables, []string{"public.employees", "shop.orders"}) {
		t.Errorf("Tables() = %v, %v", tables, all)
	}
}

// TestUnknownEntity: a bare name that names no entity stands for a table
// in public, which only the database can confirm: Check gives the error
// naming the webhook and the value for each one that is missing. Events
// that can be no table name are errors at once.
func TestUnknownEntity(t *testing.T) {
	m, err := matcher.New(nil, []matcher.Rule{{Webhook: "x", Events: []string{"employe", "public.t"}}, {Webhook: "y", Events: []string{"t"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.BareNames(), []matcher.BareName{{Webhook: "x", Name: "employe"}, {Webhook: "y", Name: "t"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("BareNames() = %v, want %v", got, want)
	}
	if tables, _ := m.Tables(); !reflect.DeepEqual(tables, []string{"public.employe", "public.t"}) {
		t.Errorf("Tables() = %v", tables)
	}
	err = m.Check(func(table string) bool { return table == "public.t" })
	if !errors.Is(err, matcher.ErrUnknownEntity) || err.Error() != `webhook "x": events: unknown entity "employe": neither an [[entity]] nor a table public.employe exists` {
		t.Errorf("Check: %v", err)
	}
	if err := m.Check(func(string) bool { return true }); err != nil {
		t.Errorf("Check with every table there: %v", err)
	}
	for _, ev := range []string{"a.b.c", "two words", ".t", ""} {
		_, err := matcher.New(nil, []matcher.Rule{{Webhook: "x", Events: []string{ev}}})
		if !errors.Is(err, matcher.ErrUnknownEntity) || !strings.Contains(err.Error(), fmt.Sprintf(`webhook "x": events: unknown entity %q`, ev)) {
			t.Errorf("events = [%q]: err = %v", ev, err)
		}
	}
	_, err = matcher.New(nil, []matcher.Rule{{Webhook: "x", Events: []string{"*"}, Actions: []string{"update"}}})
	if err == nil || !strings.Contains(err.Error(), `actions: unknown action "update"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestBareName: events = ["orders"] is the table public.orders, matched
// as public.orders written out, with entity orders; an [[entity]] named
// orders on another table wins, and public.orders is then known by
// schema.table so that no webhook of the entity gets its rows.
func TestBareName(t *testing.T) {
	ev := func(schema, table string) *cdc.Event {
		return &cdc.Event{Schema: schema, Table: table, Action: cdc.ActionCreate, Data: map[string]any{"id": int64(7)}, Key: []string{"id"}}
	}
	m, err := matcher.New(nil, []matcher.Rule{{Webhook: "bare", Events: []string{"orders"}}, {Webhook: "written", Events: []string{"public.orders"}}})
	if err != nil {
		t.Fatal(err)
	}
	e := ev("public", "orders")
	if got := m.Route(e); !reflect.DeepEqual(got, []string{"bare", "written"}) || e.Entity != "orders" || e.EntityID != "7" {
		t.Errorf("public.orders: webhooks %v, entity %q, id %q; want [bare written], orders, 7", got, e.Entity, e.EntityID)
	}
	if tables, _ := m.Tables(); !reflect.DeepEqual(tables, []string{"public.orders"}) {
		t.Errorf("Tables() = %v", tables)
	}

	m, err = matcher.New([]matcher.Entity{{Name: "orders", Schema: "shop", Table: "orders_v2"}},
		[]matcher.Rule{{Webhook: "entity", Events: []string{"orders"}}, {Webhook: "table", Events: []string{"public.orders"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.BareNames()) != 0 {
		t.Errorf("BareNames() = %v: orders is an entity", m.BareNames())
	}
	for _, tc := range []struct {
		schema, table, entity string
		want                  []string
	}{
		{"shop", "orders_v2", "orders", []string{"entity"}},
		{"public", "orders", "public.orders", []string{"table"}},
	} {
		e := ev(tc.schema, tc.table)
		if got := m.Route(e); !reflect.DeepEqual(got, tc.want) || e.Entity != tc.entity {
			t.Errorf("%s.%s: webhooks %v, entity %q; want %v, %q", tc.schema, tc.table, got, e.Entity, tc.want, tc.entity)
		}
	}
	if tables, _ := m.Tables(); !reflect.DeepEqual(tables, []string{"public.orders", "shop.orders_v2"}) {
		t.Errorf("Tables() = %v", tables)
	}
}

func BenchmarkRoute(b *testing.B) {
	m, _ := matcher.New(nil, []matcher.Rule{{Webhook: "a", Events: []string{"public.t"}}})
	ev := &cdc.Event{Schema: "public", Table: "t", Action: "create", Data: map[string]any{"id": int64(1)}, Key: []string{"id"}}
	for i := 0; i < b.N; i++ {
		m.Route(ev)
	}
}

// BenchmarkRouteModifyFull: an update under REPLICA IDENTITY FULL that
// keeps the key, the usual case, where the old row is the whole row.
func BenchmarkRouteModifyFull(b *testing.B) {
	m, _ := matcher.New(nil, []matcher.Rule{{Webhook: "a", Events: []string{"public.t"}}})
	ev := &cdc.Event{Schema: "public", Table: "t", Action: "modify", Key: []string{"id"},
		Data: map[string]any{"id": int64(130333), "v": "b"}, Old: map[string]any{"id": int64(130333), "v": "a"}}
	for b.Loop() {
		m.Route(ev)
	}
}

func TestMatchNamesTables(t *testing.T) {
	m, err := matcher.New(
		[]matcher.Entity{
			{Name: "employee", Schema: "public", Table: "employees"},
			{Name: "audit", Schema: "public", Table: "audit"}, // no webhook wants it
		},
		[]matcher.Rule{
			{Webhook: "hr", Events: []string{"employee"}},
			{Webhook: "orders", Events: []string{"shop.orders"}, Actions: []string{"delete"}},
		})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		schema, table string
		want          bool
	}{
		{"public", "employees", true},
		{"public", "audit", true},
		{"shop", "orders", true},
		{"public", "staff", false}, // employees, renamed
		{"public", "orders", false},
	} {
		if _, got := m.Match(&cdc.Event{Schema: tc.schema, Table: tc.table, Action: cdc.ActionCreate}); got != tc.want {
			t.Errorf("Match(%s.%s): named = %v, want %v", tc.schema, tc.table, got, tc.want)
		}
	}
	all, err := matcher.New(nil, []matcher.Rule{{Webhook: "all", Events: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, named := all.Match(&cdc.Event{Schema: "public", Table: "anything", Action: cdc.ActionCreate}); !named {
		t.Error(`a webhook for "*" names every table`)
	}
}

// TestPrevEntityID: a modify whose old row carries the id columns with
// other values changed the row's key; the previous entity id is kept so
// that the delivery waits for that id's earlier ones.
func TestPrevEntityID(t *testing.T) {
	m, err := matcher.New(
		[]matcher.Entity{{Name: "item", Schema: "public", Table: "items", ID: []string{"sku", "shop"}}},
		[]matcher.Rule{{Webhook: "all", Events: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, table, action string
		data, old           map[string]any
		id, prev            string
	}{
		{"key changed (DEFAULT: old is the key)", "orders", "modify", map[string]any{"id": int64(2)}, map[string]any{"id": int64(1)}, "2", "1"},
		{"key unchanged (FULL: old is the row)", "orders", "modify", map[string]any{"id": int64(2), "v": "b"}, map[string]any{"id": int64(2), "v": "a"}, "2", ""},
		{"no old row", "orders", "modify", map[string]any{"id": int64(2)}, nil, "2", ""},
		{"a delete's old row is its own", "orders", "delete", nil, map[string]any{"id": int64(2)}, "2", ""},
		{"entity id of two columns, one changed", "items", "modify", map[string]any{"sku": "A", "shop": "x"}, map[string]any{"sku": "A", "shop": "y"}, "A,x", "A,y"},
		{"old row without every id column", "items", "modify", map[string]any{"sku": "A", "shop": "x"}, map[string]any{"sku": "B"}, "A,x", ""},
	}
	for _, tc := range tests {
		ev := &cdc.Event{Schema: "public", Table: tc.table, Action: tc.action, Data: tc.data, Old: tc.old, Key: []string{"id"}}
		m.Route(ev)
		if ev.EntityID != tc.id || ev.PrevEntityID != tc.prev {
			t.Errorf("%s: entity id %q, previous %q; want %q, %q", tc.name, ev.EntityID, ev.PrevEntityID, tc.id, tc.prev)
		}
	}
}
