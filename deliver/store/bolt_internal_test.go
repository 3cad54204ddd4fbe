package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// openTest opens a Bolt store in dir with the given retention; it is closed
// when the test ends, if the test has not closed it.
func openTest(t testing.TB, dir string, retention int) *Bolt {
	t.Helper()
	s, err := OpenBolt(dir, BoltOptions{Retention: retention, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// txAppend is an Append of a transaction at commit (ending at end; 0: a
// chunk of a big one) with n events from index first, each of its own
// entity and queued for webhooks.
func txAppend(commit, end uint64, first, n int, data map[string]any, webhooks ...string) Append {
	tx := &cdc.Tx{CommitLSN: commit, EndLSN: end, CommitTime: time.Now()}
	a := Append{Tx: tx}
	for i := first; i < first+n; i++ {
		tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(commit, uint32(i)), Schema: "public", Table: "t",
			Action: cdc.ActionCreate, Entity: "t", EntityID: fmt.Sprint(commit, "-", i), Data: data})
		a.Targets = append(a.Targets, webhooks)
	}
	return a
}

// commit writes b and fails the test on an error.
func commit(t testing.TB, s *Bolt, b *Batch) []Queued {
	t.Helper()
	q, err := s.Commit(b)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// succeed records one successful attempt for each queued delivery, in one
// commit.
func succeed(t testing.TB, s *Bolt, queued []Queued) {
	t.Helper()
	b := &Batch{}
	for _, q := range queued {
		rec := *q.Record
		rec.Status = StatusSuccess
		rec.Attempts = []Attempt{{N: 1, At: time.Now(), Status: 200}}
		b.Outcomes = append(b.Outcomes, Outcome{Webhook: q.Webhook, Seq: q.Seq, Record: &rec, Done: true})
	}
	commit(t, s, b)
}

// refs reads each stored event's reference count.
func refs(s *Bolt) map[string]uint32 {
	out := map[string]uint32{}
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			out[string(k)] = binary.BigEndian.Uint32(v)
			return nil
		})
	})
	return out
}

// TestDropQueueInChunks: a removed webhook's queue is deleted a chunk of
// deliveries per transaction, each delivery with its reference on its
// event. Events another webhook still needs keep exactly its reference,
// also when the drop stopped half-way (a crash) and a second drop after the
// restart finishes it: no reference is dropped twice.
func TestDropQueueInChunks(t *testing.T) {
	defer func(n int) { dropChunk = n }(dropChunk)
	dropChunk = 7

	for _, interrupted := range []bool{false, true} {
		t.Run("interrupted="+strconv.FormatBool(interrupted), func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir, 1000)
			const n = 50
			// Both webhooks deliver everything; retention keeps the
			// successes, and with them their references.
			succeed(t, s, commit(t, s, &Batch{Appends: []Append{txAppend(1000, 1001, 0, n, nil, "a", "b")}}))
			before := refs(s)
			if len(before) != n {
				t.Fatalf("%d events stored, want %d", len(before), n)
			}
			for id, c := range before {
				if c != 2 {
					t.Fatalf("before the drop event %s has %d references, want 2", id, c)
				}
			}

			chunks := 0
			if interrupted {
				s.AfterDropChunk = func() error {
					if chunks++; chunks == 3 {
						return errors.New("crash")
					}
					return nil
				}
			}
			err := s.DropQueue("a")
			if interrupted {
				if err == nil {
					t.Fatal("the interrupted drop reported no error")
				}
				if chunks != 3 {
					t.Errorf("the drop stopped after %d chunks, want 3: fewer than 3 chunks of %d for %d deliveries", chunks, dropChunk, n)
				}
				s.Close()
				s = openTest(t, dir, 1000)
				if names, err := s.Queues(); err != nil || !strings.Contains(strings.Join(names, ","), "a") {
					t.Fatalf("after the crash the half-dropped queue is not listed: %v, %v", names, err)
				}
				err = s.DropQueue("a") // as the queue does at its start
			}
			if err != nil {
				t.Fatal(err)
			}

			got := refs(s)
			if len(got) != n {
				t.Fatalf("%d events left, want %d", len(got), n)
			}
			for id, c := range got {
				if c != 1 {
					t.Errorf("event %s has %d references after a's drop, want 1 (b's)", id, c)
				}
			}
			s.db.View(func(tx *bolt.Tx) error {
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
		})
	}
}

// Webhooks that read the same stored event back share one decoded copy;
// an event with one reference left is not kept.
func TestLoadEventSharesDecodedEvents(t *testing.T) {
	s := openTest(t, t.TempDir(), 10)
	at := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	shared := &cdc.Event{ID: cdc.EventID(7, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, CommitTime: at, Data: map[string]any{"id": int64(7)}}
	single := &cdc.Event{ID: cdc.EventID(8, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, CommitTime: at, Data: map[string]any{"id": int64(8)}}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for ev, refs := range map[*cdc.Event]uint32{shared: 2, single: 1} {
			v, err := encodeEvent(ev, refs)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketEvents).Put([]byte(ev.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	loads := map[string][2]*cdc.Event{}
	err = s.db.View(func(tx *bolt.Tx) error {
		events := &orderedCursor{c: tx.Bucket(bucketEvents).Cursor()}
		for _, id := range []string{shared.ID, single.ID} {
			var pair [2]*cdc.Event
			for i := range pair {
				ev, err := s.loadEvent(events, id)
				if err != nil {
					return err
				}
				pair[i] = ev
			}
			loads[id] = pair
		}
		if _, err := s.loadEvent(events, "missing"); err == nil {
			t.Error("loading a missing event gave no error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := loads[shared.ID]; l[0] != l[1] {
		t.Error("the second load of a shared event decoded it again")
	}
	if l := loads[single.ID]; l[0] == l[1] {
		t.Error("an event with one reference was kept for sharing")
	}
	for _, ev := range []*cdc.Event{shared, single} {
		if got := loads[ev.ID][0]; got.ID != ev.ID || got.Data["id"] != ev.Data["id"] || !got.CommitTime.Equal(at) {
			t.Errorf("loaded %+v, stored %+v", got, ev)
		}
	}
}

// TestRestartScanReleasesMappedPages: after a restart each webhook's queue
// is counted (Queue), which reads every record through bbolt's map. A long
// backlog must not stay resident because of it: the scan drops the pages
// as it goes (the 1,000,000-delivery bench's peak RSS was this scan).
func TestRestartScanReleasesMappedPages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the store's pages are dropped with madvise on Linux only")
	}
	defer func(n int) { scanDropEvery = n }(scanDropEvery)
	scanDropEvery = 256

	dir := t.TempDir()
	s := openTest(t, dir, 10)
	const written = 40_000
	for i := 0; i < written; i += 1000 {
		lsn := uint64(i+1) * 10
		commit(t, s, &Batch{Appends: []Append{txAppend(lsn, lsn+1, 0, 1000, nil, "h")}})
	}
	s.Close()

	// Opened again: nothing but the scan reads the queue, and no commit
	// releases the pages meanwhile.
	s = openTest(t, dir, 10)
	var queueBytes int
	s.db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(queueBucket("h")).Stats()
		queueBytes = (st.LeafPageN + st.LeafOverflowN) * tx.DB().Info().PageSize
		return nil
	})
	if queueBytes < 1<<20 {
		t.Fatalf("the queue takes %d bytes: too small to tell resident pages apart", queueBytes)
	}
	s.releaseMapped()
	q, err := s.Queue("h")
	if err != nil {
		t.Fatal(err)
	}
	if q.Pending != written {
		t.Fatalf("counted %d pending deliveries after the restart, want %d", q.Pending, written)
	}
	db := filepath.Join(dir, FileName)
	if rss := mappedRSS(t, db); rss > queueBytes/2 {
		t.Errorf("after the restart's scan %d KB of the store are resident; the queue takes %d KB", rss>>10, queueBytes>>10)
	}
	// The measurement sees the pages: read the whole queue, then drop it.
	pending := 0
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(queueBucket("h")).ForEach(func(_, v []byte) error {
			if v[0] == recPending {
				pending++
			}
			return nil
		})
	})
	if rss := mappedRSS(t, db); pending != written || rss < queueBytes*3/4 {
		t.Fatalf("reading the %d records of a %d KB queue left %d KB resident: the measurement does not see the pages", pending, queueBytes>>10, rss>>10)
	}
	s.releaseMapped()
	if rss := mappedRSS(t, db); rss > queueBytes/4 {
		t.Errorf("releaseMapped left %d KB of the store resident; the queue takes %d KB", rss>>10, queueBytes>>10)
	}
}

// mappedRSS is how many bytes of the file's mappings in this process are
// resident, from /proc/self/smaps.
func mappedRSS(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, found, in := 0, false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[len(fields)-1] == path
			found = found || in
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			total += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("smaps: no mapping of %s", path)
	}
	return total
}

func TestPrunedAtOnce(t *testing.T) {
	s := &Bolt{retention: 2}
	var outcomes []Outcome
	names := []string{}
	for _, o := range []struct {
		name, webhook string
		seq           uint64
		done          bool
	}{{"a9", "a", 9, true}, {"a3", "a", 3, true}, {"a5", "a", 5, true}, {"a1-retry", "a", 1, false}, {"a7", "a", 7, true}, {"b4", "b", 4, true}, {"b2", "b", 2, true}} {
		outcomes = append(outcomes, Outcome{Webhook: o.webhook, Seq: o.seq, Done: o.done})
		names = append(names, o.name)
	}
	skip := s.prunedAtOnce(outcomes)
	want := map[string]bool{"a3": true, "a5": true}
	for i, name := range names {
		if skip[&outcomes[i]] != want[name] {
			t.Errorf("%s: skipped %v, want %v", name, skip[&outcomes[i]], want[name])
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
	var names []string
	for i := range hooks {
		names = append(names, fmt.Sprint("h", i))
	}
	s := openTest(t, t.TempDir(), keep)
	succeed(t, s, commit(t, s, &Batch{Appends: []Append{txAppend(1, 2, 0, total, map[string]any{"id": int64(1)}, names...)}}))

	s.db.View(func(btx *bolt.Tx) error {
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
				if seq := binary.BigEndian.Uint64(k); seq <= total-keep {
					t.Errorf("%s: kept delivery %d, want only the newest %d of %d", name, seq, keep, total)
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
		return nil
	})
}

// TestRepeatInOneBatch: PostgreSQL can send a transaction again (after a
// reconnect) while its first copy still waits in the same batch; and the
// chunks of a big transaction can come again after a crash. Each event is
// queued once.
func TestRepeatInOneBatch(t *testing.T) {
	s := openTest(t, t.TempDir(), 10)
	// A big transaction at 10 in chunks; its first chunk is stored, then a
	// crash: it comes again whole, then a small one, then the small one again.
	commit(t, s, &Batch{Appends: []Append{txAppend(10, 0, 0, 3, nil, "h")}})
	queued := commit(t, s, &Batch{Appends: []Append{
		txAppend(10, 0, 0, 3, nil, "h"), txAppend(10, 20, 3, 2, nil, "h"),
		txAppend(30, 40, 0, 2, nil, "h"), txAppend(30, 40, 0, 2, nil, "h"),
	}})
	if len(queued) != 4 {
		t.Errorf("the second commit queued %d deliveries, want 4 (2 of the big transaction, 2 of the small)", len(queued))
	}
	if d := s.Durable(); d != 40 {
		t.Errorf("durable position %d, want 40", d)
	}
	s.db.View(func(btx *bolt.Tx) error {
		n := btx.Bucket(queueBucket("h")).Stats().KeyN
		if e := btx.Bucket(bucketEvents).Stats().KeyN; n != 7 || e != 7 {
			t.Errorf("%d deliveries, %d events stored; want 7 deliveries of 7 events", n, e)
		}
		return nil
	})
}

// TestOrderedCursor: keys asked for in order, out of order, twice, and
// missing ones are all found as a search from the root finds them.
func TestOrderedCursor(t *testing.T) {
	s, err := OpenBolt(t.TempDir(), BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys := []string{"a", "b", "d", "e", "f", "h"}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		for _, k := range keys {
			if err := b.Put([]byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	asks := []string{"a", "b", "c", "d", "e", "h", "f", "f", "0", "g", "h", "z", "a"}
	s.db.View(func(tx *bolt.Tx) error {
		o := &orderedCursor{c: tx.Bucket(bucketMeta).Cursor()}
		for _, k := range asks {
			v, ok := o.find([]byte(k))
			want := slices.Contains(keys, k)
			if ok != want || (ok && string(v) != "v"+k) {
				t.Errorf("find(%q) = %q, %v; want found %v", k, v, ok, want)
			}
		}
		return nil
	})
}

// TestScratch: what scratch hands out stays as written until reset, across
// chunks and for values larger than a chunk, and its chunks are reused.
func TestScratch(t *testing.T) {
	var s scratch
	fill := func(n int, c byte) func([]byte) ([]byte, error) {
		return func(b []byte) ([]byte, error) { return append(b, bytes.Repeat([]byte{c}, n)...), nil }
	}
	sizes := []int{10, scratchChunk - 20, 30, 3 * scratchChunk, 1, scratchChunk, 7}
	var got [][]byte
	for i, n := range sizes {
		v, err := s.add(fill(n, byte('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	for i, n := range sizes {
		if want := bytes.Repeat([]byte{byte('a' + i)}, n); !bytes.Equal(got[i], want) {
			t.Errorf("value %d (%d bytes) changed: %d bytes, starting %q", i, n, len(got[i]), got[i][:min(len(got[i]), 8)])
		}
	}
	if _, err := s.add(func([]byte) ([]byte, error) { return nil, errors.New("no") }); err == nil {
		t.Error("fill's error was not returned")
	}
	s.reset()
	y := bytes.Repeat([]byte{'y'}, 500)
	fillY := func(b []byte) ([]byte, error) { return append(b, y...), nil }
	allocs := testing.AllocsPerRun(1, func() {
		for range 10 * scratchChunk / len(y) {
			s.add(fillY)
		}
	})
	if allocs > 30 { // a chunk each, and the value that found one full (1,300 when they went on allocating)
		t.Errorf("%.0f allocations for ten chunks of values", allocs)
	}
	chunks := len(s.chunks)
	s.reset()
	if v, _ := s.add(fill(5, 'z')); &v[0] != &s.chunks[0][0] {
		t.Error("the first chunk was not reused after reset")
	}
	if len(s.chunks) != chunks {
		t.Errorf("%d chunks after reset, %d before", len(s.chunks), chunks)
	}
}

// TestCountersMerge: walhooks sharing a store add their counts; the state
// of the failures is the one a walhook changed, and stays as stored where
// it did not change it: a switch-on (both cleared) is not undone by a
// walhook that saw nothing of it, nor kept by the one that made it.
func TestCountersMerge(t *testing.T) {
	t1, t2 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	stored := Counters{TotalCalls: 10, SuccessfulCalls: 4, FailingSince: t1, SwitchedOff: "switched off after 1h of failures", LastAttemptAt: t2}
	base := Counters{TotalCalls: 3, SuccessfulCalls: 3}

	// Two more calls, no change in its view of the failures: the stored one stays.
	got := stored.merge(Counters{TotalCalls: 5, SuccessfulCalls: 3}, base)
	if got.TotalCalls != 12 || got.SuccessfulCalls != 4 || !got.FailingSince.Equal(t1) || got.SwitchedOff != stored.SwitchedOff {
		t.Errorf("unchanged failures: %+v", got)
	}
	// It switched the webhook on: the run and the reason end.
	on := stored.merge(Counters{TotalCalls: 3, SuccessfulCalls: 3}, Counters{TotalCalls: 3, SuccessfulCalls: 3, FailingSince: t1, SwitchedOff: stored.SwitchedOff})
	if !on.FailingSince.IsZero() || on.SwitchedOff != "" || on.TotalCalls != 10 {
		t.Errorf("switched on: %+v, want no run of failures, no reason, the counts as stored", on)
	}
	// Its attempt began a run of failures.
	run := Counters{TotalCalls: 10}.merge(Counters{TotalCalls: 4, SuccessfulCalls: 3, FailingSince: t2}, base)
	if !run.FailingSince.Equal(t2) || run.TotalCalls != 11 {
		t.Errorf("a run begun: %+v", run)
	}
}
