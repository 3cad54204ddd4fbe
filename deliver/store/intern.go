package store

import "sync"

// interned holds the short strings that repeat from event to event (column
// names, schema, table, action, entity) as stored events are read back, so
// that a backlog of the same table does not allocate them again and again.
var interned = interner{m: map[string]string{}}

// maxInterned bounds the table: unusual workloads (a column per customer)
// start it over instead of growing it.
const maxInterned = 4096

type interner struct {
	mu sync.Mutex
	m  map[string]string
}

// intern returns b as a string, shared with earlier equal ones.
func (in *interner) intern(b []byte) string {
	if len(b) > 64 {
		return string(b)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if len(in.m) >= maxInterned {
		clear(in.m)
	}
	s := string(b)
	in.m[s] = s
	return s
}
