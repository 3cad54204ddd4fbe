package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

// TestEntitiesAPI: GET /api/entities of a running walhook, read through
// PostgreSQL: the configured entities first, with their table's REPLICA
// IDENTITY and primary key ("" for a table that does not exist), then every
// other table of the database once, named schema.table, partitioned ones by
// their root, each with its REPLICA IDENTITY and primary key; views,
// partitions and the system schemas are not event types. A table walhook
// cannot publish says why.
func TestEntitiesAPI(t *testing.T) {
	rc := newReceiver(t, nil)
	h := newHarness(t, `
		CREATE TABLE employees (id int PRIMARY KEY, name text); ALTER TABLE employees REPLICA IDENTITY FULL;
		CREATE TABLE notes (body text);
		CREATE TABLE tags (id int NOT NULL, label text); CREATE UNIQUE INDEX tags_id ON tags (id); ALTER TABLE tags REPLICA IDENTITY USING INDEX tags_id;
		CREATE TABLE audit (id int PRIMARY KEY); ALTER TABLE audit REPLICA IDENTITY NOTHING;
		CREATE SCHEMA hr; CREATE TABLE hr.people (id int PRIMARY KEY);
		CREATE TABLE visits (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE visits_eu PARTITION OF visits FOR VALUES IN ('eu');
		CREATE VIEW employee_names AS SELECT name FROM employees`)
	h.start(fmt.Sprintf(`
[[entity]]
name = "employee"
table = "public.employees"
[[entity]]
name = "ghost"
table = "public.gone_table"
[[webhook]]
name = "a"
url = %q
events = ["employee"]
`, rc.URL))
	resp, err := http.Get("http://" + h.app.AdminAddr() + "/api/entities")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/entities: %d", resp.StatusCode)
	}
	type entity struct {
		Name, Table, Source string
		ReplicaIdentity     string `json:"replica_identity"`
		PrimaryKey          bool   `json:"primary_key"`
		Unpublished         string
	}
	var got []entity
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	// Why a table is not published is cdc's wording; here only whether.
	unpublished := map[string]bool{}
	for i, e := range got {
		unpublished[e.Table] = e.Unpublished != ""
		got[i].Unpublished = ""
	}
	want := []entity{
		{"employee", "public.employees", "config", "full", true, ""},
		{"ghost", "public.gone_table", "config", "", false, ""},
		{"hr.people", "hr.people", "database", "default", true, ""},
		{"public.audit", "public.audit", "database", "nothing", true, ""},
		{"public.notes", "public.notes", "database", "default", false, ""},
		{"public.tags", "public.tags", "database", "index", false, ""},
		{"public.visits", "public.visits", "database", "default", true, ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /api/entities\n got: %+v\nwant: %+v", got, want)
	}
	for table, want := range map[string]bool{"public.employees": false, "hr.people": false, "public.audit": true, "public.tags": false, "public.visits": false} {
		if unpublished[table] != want {
			t.Errorf("%s: marked unpublished = %v, want %v", table, unpublished[table], want)
		}
	}
}
