package deliver

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

func TestPrunedAtOnce(t *testing.T) {
	q := &Queue{opts: Options{Retention: 2}}
	a, b := &hook{name: "a"}, &hook{name: "b"}
	var batch []commitItem
	ups := map[string]*update{}
	for _, u := range []struct {
		name string
		h    *hook
		seq  uint64
		done bool
	}{{"a9", a, 9, true}, {"a3", a, 3, true}, {"a5", a, 5, true}, {"a1-retry", a, 1, false}, {"a7", a, 7, true}, {"b4", b, 4, true}, {"b2", b, 2, true}} {
		ups[u.name] = &update{h: u.h, seq: u.seq, done: u.done}
		batch = append(batch, commitItem{upd: ups[u.name]})
	}
	batch = append(batch, commitItem{upd: &update{h: a, stats: true}}) // a ping's counters
	skip := q.prunedAtOnce(batch)
	want := map[string]bool{"a3": true, "a5": true}
	for name, u := range ups {
		if skip[u] != want[name] {
			t.Errorf("%s: skipped %v, want %v", name, skip[u], want[name])
		}
	}
}

// TestRetentionInOneCommit: when one commit completes more deliveries than
// the retention keeps, the store ends with exactly the newest ones, and each
// event left counts exactly the deliveries that still refer to it.
func TestRetentionInOneCommit(t *testing.T) {
	for _, hooks := range []int{1, 3} {
		t.Run(fmt.Sprint(hooks, " webhooks"), func(t *testing.T) { testRetentionInOneCommit(t, hooks) })
	}
}

func testRetentionInOneCommit(t *testing.T, hooks int) {
	const total, keep = 300, 7
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	var names []string
	for i := range hooks {
		names = append(names, fmt.Sprint("h", i))
	}
	dir := t.TempDir()
	q := openWith(t, dir, srv.URL, names, func(o *Options) { o.Retention = keep })
	tx := &cdc.Tx{CommitLSN: 1, EndLSN: 2, CommitTime: time.Now()}
	for i := range total {
		tx.Events = append(tx.Events, cdc.Event{
			ID: cdc.EventID(1, uint32(i)), Schema: "public", Table: "t", Action: cdc.ActionCreate,
			Data: map[string]any{"id": int64(i)}, Entity: "t", EntityID: fmt.Sprint(i),
		})
	}
	if err := q.Write(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if !eventually(30*time.Second, func() bool { return q.Stats(name).SuccessfulCalls >= total }) {
			t.Fatalf("%s: %d of %d delivered", name, q.Stats(name).SuccessfulCalls, total)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	viewStore(t, dir, func(btx *bolt.Tx) {
		refs := map[string]uint32{}
		for _, name := range names {
			if d, r := btx.Bucket(doneBucket(name)).Stats().KeyN, btx.Bucket(queueBucket(name)).Stats().KeyN; d != keep || r != keep {
				t.Errorf("%s keeps %d index entries, %d deliveries; want %d of each", name, d, r, keep)
			}
			c := btx.Bucket(queueBucket(name)).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				rec, err := decodeRecord(v)
				if err != nil || rec.Status != StatusSuccess || len(rec.Attempts) != 1 {
					t.Errorf("%s: kept delivery %x: %+v, %v", name, k, rec, err)
					continue
				}
				refs[rec.EventID]++
			}
		}
		events := btx.Bucket(bucketEvents)
		if n := events.Stats().KeyN; n != len(refs) {
			t.Errorf("%d events stored, %d referred to", n, len(refs))
		}
		for id, want := range refs {
			v := events.Get([]byte(id))
			if v == nil {
				t.Errorf("event %s is gone, %d deliveries refer to it", id, want)
			} else if got := binary.BigEndian.Uint32(v); got != want {
				t.Errorf("event %s counts %d references, %d deliveries refer to it", id, got, want)
			}
		}
	})
}

// TestRepeatInOneBatch: PostgreSQL can send a transaction again (after a
// reconnect) while its first copy still waits in the same batch; and the
// chunks of a big transaction can come again after a crash. Each event is
// queued once.
func TestRepeatInOneBatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	q := openWith(t, dir, srv.URL, []string{"h"}, nil)
	item := func(commit, end uint64, first, n int) commitItem {
		tx := &cdc.Tx{CommitLSN: commit, EndLSN: end, CommitTime: time.Now()}
		it := commitItem{tx: tx}
		for i := first; i < first+n; i++ {
			tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(commit, uint32(i)), Schema: "public", Table: "t", Action: cdc.ActionCreate, Entity: "t", EntityID: fmt.Sprint(commit, i)})
			it.routes = append(it.routes, []string{"h"})
		}
		return it
	}
	// A big transaction at 10 in chunks; its first chunk is stored, then a
	// crash: it comes again whole, then a small one, then the small one again.
	if err := q.commit([]commitItem{item(10, 0, 0, 3)}); err != nil {
		t.Fatal(err)
	}
	if err := q.commit([]commitItem{item(10, 0, 0, 3), item(10, 20, 3, 2), item(30, 40, 0, 2), item(30, 40, 0, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	viewStore(t, dir, func(btx *bolt.Tx) {
		n := 0
		btx.Bucket(queueBucket("h")).ForEach(func(_, _ []byte) error { n++; return nil })
		if e := btx.Bucket(bucketEvents).Stats().KeyN; n != 7 || e > 7 {
			t.Errorf("%d deliveries, %d events stored; want 7 deliveries of 7 events", n, e)
		}
	})
}
