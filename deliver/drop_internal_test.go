package deliver

import (
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// TestDropQueueInChunks: a removed webhook's queue is deleted a chunk of
// deliveries per transaction, each delivery with its reference on its
// event. Events another webhook still needs keep exactly its reference,
// also when the drop stopped half-way (a crash) and the restart finishes
// it: no reference is dropped twice.
func TestDropQueueInChunks(t *testing.T) {
	defer func(n int) { dropChunk = n }(dropChunk)
	dropChunk = 7

	for _, interrupted := range []bool{false, true} {
		t.Run("interrupted="+strconv.FormatBool(interrupted), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			defer srv.Close()
			dir := t.TempDir()
			q := openWith(t, dir, srv.URL, []string{"a", "b"}, nil)

			const n = 50
			lsn := uint64(1000)
			tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now()}
			for i := range n {
				tx.Events = append(tx.Events, cdc.Event{
					ID: cdc.EventID(lsn, uint32(i)), Schema: "public", Table: "t", Action: cdc.ActionCreate,
					Entity: "t", EntityID: strconv.Itoa(i),
				})
			}
			if err := q.Write(t.Context(), tx); err != nil {
				t.Fatal(err)
			}
			// Both webhooks deliver everything; retention keeps the
			// successes, and with them their references.
			if !eventually(30*time.Second, func() bool {
				return q.Stats("a").SuccessfulCalls == n && q.Stats("b").SuccessfulCalls == n
			}) {
				t.Fatalf("not delivered: a %+v, b %+v", q.Stats("a"), q.Stats("b"))
			}
			refs := func(q *Queue) map[string]uint32 {
				out := map[string]uint32{}
				q.db.View(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
						out[string(k)] = binary.BigEndian.Uint32(v)
						return nil
					})
				})
				return out
			}
			waitCommitted := func(q *Queue) map[string]uint32 {
				var r map[string]uint32
				if !eventually(10*time.Second, func() bool {
					r = refs(q)
					for _, c := range r {
						if c != 2 {
							return false
						}
					}
					return len(r) == n
				}) {
					t.Fatalf("before the drop want %d events with 2 references each, got %v", n, r)
				}
				return r
			}
			waitCommitted(q)

			chunks := 0
			if interrupted {
				q.afterDropChunk = func() error {
					if chunks++; chunks == 3 {
						return errors.New("crash")
					}
					return nil
				}
			}
			b := hookDef(srv.URL, "b")
			err := q.SetConfigWebhooks([]Webhook{b})
			if interrupted {
				if err == nil {
					t.Fatal("the interrupted drop reported no error")
				}
				q.Close()
				q = openWith(t, dir, srv.URL, []string{"b"}, nil) // finishes the drop (dropOrphans)
			} else if err != nil {
				t.Fatal(err)
			}

			got := refs(q)
			if len(got) != n {
				t.Fatalf("%d events left, want %d", len(got), n)
			}
			for id, c := range got {
				if c != 1 {
					t.Errorf("event %s has %d references after a's drop, want 1 (b's)", id, c)
				}
			}
			q.db.View(func(tx *bolt.Tx) error {
				for _, bk := range [][]byte{queueBucket("a"), doneBucket("a")} {
					if tx.Bucket(bk) != nil {
						t.Errorf("bucket %s is still there", bk)
					}
				}
				if got := tx.Bucket(queueBucket("b")).Stats().KeyN; got != n {
					t.Errorf("b's queue has %d deliveries, want %d", got, n)
				}
				return nil
			})
			if interrupted && chunks != 3 {
				t.Errorf("the drop stopped after %d chunks, want 3: fewer than 3 chunks of %d for %d deliveries", chunks, dropChunk, n)
			}
		})
	}
}

// hookDef is a config webhook for all events, as openWith defines them.
func hookDef(url, name string) Webhook {
	var w Webhook
	ApplyDefaults(&w)
	w.Name, w.URL, w.Events = name, url, []string{"*"}
	return w
}

// BenchmarkDropQueue removes a webhook with a long queue while a second
// writer commits a transaction every 10 ms, and reports how long that
// writer waited at worst for its transaction to be durable, and the peak
// heap. WALHOOK_DROP_DELIVERIES sets the queue's length (default 100,000):
//
//	WALHOOK_DROP_DELIVERIES=1000000 go test -run XXX -bench DropQueue -benchtime 1x ./deliver/
func BenchmarkDropQueue(b *testing.B) {
	n := envInt(b, "WALHOOK_DROP_DELIVERIES", 100_000)
	for b.Loop() {
		b.StopTimer()
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
		q := openWith(b, b.TempDir(), srv.URL, []string{"h"}, nil)
		lsn := writeBacklog(b, q, n, map[string]any{"name": strings.Repeat("x", 200), "email": "someone@example.com"})
		close(release)
		runtime.GC()

		stop, done := make(chan struct{}), make(chan struct{})
		var worst time.Duration
		var peak uint64
		go func() { // the second writer, and the heap's peak
			defer close(done)
			for i := uint64(1); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				at := lsn + i*10
				tx := &cdc.Tx{CommitLSN: at, EndLSN: at + 1, CommitTime: time.Now(), Events: []cdc.Event{{
					ID: cdc.EventID(at, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, Entity: "t", EntityID: "w"}}}
				start := time.Now()
				if err := q.Write(b.Context(), tx); err != nil {
					b.Error(err)
					return
				}
				for q.Durable() < tx.EndLSN {
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					peak = max(peak, m.HeapInuse)
					time.Sleep(time.Millisecond)
				}
				worst = max(worst, time.Since(start))
				time.Sleep(10 * time.Millisecond)
			}
		}()
		b.StartTimer()
		if err := q.SetConfigWebhooks(nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		close(stop)
		<-done
		q.Close()
		srv.Close()
		b.ReportMetric(float64(worst.Milliseconds()), "worst-durable-ms")
		b.ReportMetric(float64(peak>>20), "peak-heap-MB")
		b.StartTimer()
	}
}

// envInt is the integer in environment variable name, def when it is unset.
func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}
