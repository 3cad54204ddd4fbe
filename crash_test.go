package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// keyReceiver records, per change key ("create:<seq>", "modify:<seq>",
// "delete:<seq of the deleted row>"), the Webhook-Ids that carried it. It
// is not testkit's Receiver: it decodes each request as it comes and keeps
// only keys and ids, not the bodies of tens of thousands of requests, and
// other handlers (batches, faults) pass requests on to its serve.
type keyReceiver struct {
	mu       sync.Mutex
	ids      map[string]map[string]bool
	firstRow map[int64][]rowChange // row id -> its changes, in order of first receipt
	total    int
	bad      []string
	fail     func() bool
}

// rowChange is a change of one row as the receiver first got it.
type rowChange struct {
	key  string // as in keyReceiver.ids
	rank int64  // its place in the row's commit order; see changeRank
}

// changeRank places a change in its row's commit order. Every insert and
// update stamps a new seq, and a delete carries the seq of the version it
// removed, so the delete comes after the change that stamped that seq and
// before any later insert of the row: 2*seq for the change, 2*seq+1 for
// the delete. Ranks received in commit order strictly increase.
func changeRank(action string, seq int64) int64 {
	if action == "delete" {
		return 2*seq + 1
	}
	return 2 * seq
}

// newKeyRecorder is a keyReceiver without a server of its own, for a
// handler that passes requests on to serve; fail may be nil.
func newKeyRecorder(fail func() bool) *keyReceiver {
	return &keyReceiver{ids: map[string]map[string]bool{}, firstRow: map[int64][]rowChange{}, fail: fail}
}

func newKeyReceiver(t *testing.T, fail func() bool) (*keyReceiver, string) {
	rc := newKeyRecorder(fail)
	srv := httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(srv.Close)
	return rc, srv.URL
}

func (rc *keyReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if rc.fail != nil && rc.fail() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var ev struct {
		ID     string
		Action string
		Data   struct{ ID, Seq int64 }
		Old    struct{ ID, Seq int64 }
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get("Webhook-Id") {
		rc.bad = append(rc.bad, string(body))
		w.WriteHeader(http.StatusOK)
		return
	}
	row, seq := ev.Data.ID, ev.Data.Seq
	if ev.Action == "delete" {
		row, seq = ev.Old.ID, ev.Old.Seq
	}
	key := fmt.Sprintf("%s:%d", ev.Action, seq)
	rc.total++
	if rc.ids[key] == nil {
		rc.ids[key] = map[string]bool{}
		rc.firstRow[row] = append(rc.firstRow[row], rowChange{key, changeRank(ev.Action, seq)})
	}
	rc.ids[key][ev.ID] = true
	w.WriteHeader(http.StatusOK)
}

// awaitAll waits up to timeout for every key to arrive, then verifies
// what arrived (see verify).
func (rc *keyReceiver) awaitAll(t *testing.T, keys []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for rc.missing(keys) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	rc.verify(t, keys)
}

// missing returns how many of keys have not arrived.
func (rc *keyReceiver) missing(keys []string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, k := range keys {
		if rc.ids[k] == nil {
			n++
		}
	}
	return n
}

// verify checks that every key arrived, each under one Webhook-Id, nothing
// else arrived, and per row the first receipts are in commit order (a
// delete after the change it removed, see changeRank). It
// logs sent, received, lost and duplicates.
func (rc *keyReceiver) verify(t *testing.T, keys []string) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	want := map[string]bool{}
	lost := 0
	var lostAt []int
	for i, k := range keys {
		want[k] = true
		if rc.ids[k] == nil {
			lost++
			if len(lostAt) < 10 || i == len(keys)-1 {
				lostAt = append(lostAt, i)
			}
		}
	}
	if lost > 0 {
		t.Logf("positions (in write order) of the first lost changes: %v", lostAt)
	}
	dups := rc.total - len(rc.ids)
	t.Logf("sent=%d received=%d lost=%d duplicates=%d", len(keys), rc.total, lost, dups)
	fmt.Printf("%s: sent=%d received=%d lost=%d duplicates=%d\n", t.Name(), len(keys), rc.total, lost, dups)
	if lost != 0 {
		t.Errorf("lost %d events", lost)
	}
	for k, ids := range rc.ids {
		if !want[k] {
			t.Errorf("received %s, which the test never wrote", k)
		}
		if len(ids) != 1 {
			t.Errorf("%s arrived under %d different Webhook-Ids: %v", k, len(ids), ids)
		}
	}
	if len(rc.bad) > 0 {
		t.Errorf("%d malformed requests, first: %.200s", len(rc.bad), rc.bad[0])
	}
	for row, changes := range rc.firstRow {
		if i := outOfOrder(changes); i > 0 {
			keys := make([]string, len(changes))
			for j, c := range changes {
				keys[j] = c.key
			}
			t.Errorf("row %d: %s arrived after %s, out of commit order: %v", row, changes[i].key, changes[i-1].key, keys)
			break
		}
	}
}

// outOfOrder returns the index of the first change received after one
// that committed later (or the same change twice), 0 when none was.
func outOfOrder(changes []rowChange) int {
	for i := 1; i < len(changes); i++ {
		if changes[i].rank <= changes[i-1].rank {
			return i
		}
	}
	return 0
}

// churn writes changes in transactions of mixed sizes over a few thousand
// rows; every insert or update stamps a new seq.
type churn struct {
	rows int
	seq  int64
	mu   sync.Mutex // keys' length, for a test that reads it while a goroutine writes
	keys []string
	cur  map[int64]int64 // live row id -> its seq
	rng  *rand.Rand
}

func newChurn(rows int, seed uint64) *churn {
	return &churn{rows: rows, cur: map[int64]int64{}, rng: rand.New(rand.NewPCG(seed, 1))}
}

// tx commits one transaction of up to size changes.
func (c *churn) tx(ctx context.Context, db *pgx.Conn, size int) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	next := map[int64]int64{} // staged row states; -1 deleted
	var keys []string
	for i := 0; i < size; i++ {
		id := int64(c.rng.IntN(c.rows)) + 1
		if _, touched := next[id]; touched {
			continue
		}
		cur, live := c.cur[id]
		switch {
		case !live:
			c.seq++
			_, err = tx.Exec(ctx, `INSERT INTO items (id, seq, note) VALUES ($1, $2, 'n')`, id, c.seq)
			next[id], keys = c.seq, append(keys, fmt.Sprintf("create:%d", c.seq))
		case c.rng.IntN(4) == 0:
			_, err = tx.Exec(ctx, `DELETE FROM items WHERE id = $1`, id)
			next[id], keys = -1, append(keys, fmt.Sprintf("delete:%d", cur))
		default:
			c.seq++
			_, err = tx.Exec(ctx, `UPDATE items SET seq = $2, note = note || 'u' WHERE id = $1`, id, c.seq)
			next[id], keys = c.seq, append(keys, fmt.Sprintf("modify:%d", c.seq))
		}
		if err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	for id, s := range next {
		if s < 0 {
			delete(c.cur, id)
		} else {
			c.cur[id] = s
		}
	}
	c.mu.Lock()
	c.keys = append(c.keys, keys...)
	c.mu.Unlock()
	return nil
}

// written returns the keys of the changes committed so far; safe while
// another goroutine writes (committed keys never change).
func (c *churn) written() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys[:len(c.keys):len(c.keys)]
}

// big commits one transaction of n changes over the rows, each row changed
// again and again within it, and returns the WAL insert position just
// before its commit: the transaction ends after it.
func (c *churn) big(ctx context.Context, db *pgx.Conn, n int) (before string, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return "", err
	}
	defer tx.Rollback(ctx)
	next := map[int64]int64{} // staged row states; -1 deleted
	seq := c.seq
	var keys []string
	for len(keys) < n {
		id := int64(c.rng.IntN(c.rows)) + 1
		cur, live := c.cur[id]
		if s, touched := next[id]; touched {
			cur, live = s, s >= 0
		}
		switch {
		case !live:
			seq++
			_, err = tx.Exec(ctx, `INSERT INTO items (id, seq, note) VALUES ($1, $2, 'b')`, id, seq)
			next[id], keys = seq, append(keys, fmt.Sprintf("create:%d", seq))
		case c.rng.IntN(4) == 0:
			_, err = tx.Exec(ctx, `DELETE FROM items WHERE id = $1`, id)
			next[id], keys = -1, append(keys, fmt.Sprintf("delete:%d", cur))
		default:
			seq++
			_, err = tx.Exec(ctx, `UPDATE items SET seq = $2, note = 'b' WHERE id = $1`, id, seq)
			next[id], keys = seq, append(keys, fmt.Sprintf("modify:%d", seq))
		}
		if err != nil {
			return "", err
		}
	}
	if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&before); err != nil {
		return "", err
	}
	if err := tx.Commit(ctx); err != nil {
		return "", err
	}
	c.seq = seq
	for id, s := range next {
		if s < 0 {
			delete(c.cur, id)
		} else {
			c.cur[id] = s
		}
	}
	c.mu.Lock()
	c.keys = append(c.keys, keys...)
	c.mu.Unlock()
	return before, nil
}

// run commits transactions of mixed sizes until n changes were written.
func (c *churn) run(ctx context.Context, db *pgx.Conn, n int) error {
	sizes := []int{1, 1, 3, 10, 50, 200}
	for len(c.keys) < n {
		if err := c.tx(ctx, db, sizes[c.rng.IntN(len(sizes))]); err != nil {
			return err
		}
	}
	return nil
}

const itemsSchema = `CREATE TABLE items (id bigint PRIMARY KEY, seq bigint NOT NULL, note text NOT NULL);
ALTER TABLE items REPLICA IDENTITY FULL;`

// itemsDatabase is a fresh database with itemsSchema.
func itemsDatabase(t *testing.T) string {
	t.Helper()
	dsn := newDatabase(t)
	execSQL(t, dsn, itemsSchema)
	return dsn
}

// freeAddr returns a free loopback address.
func freeAddr(t *testing.T) string { return testkit.FreeAddr(t) }

// seededChurn connects to dsn for a test's writes and returns a churn of
// rows seeded from the clock; the seed is logged, to replay a failure.
func seededChurn(t *testing.T, dsn string, rows int) (*pgx.Conn, *churn, uint64) {
	t.Helper()
	db, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return db, newChurn(rows, seed), seed
}

// crashConfig writes a config for the subprocess: one webhook on items,
// retried in test mode.
func crashConfig(t *testing.T, dsn, url, adminAddr string) string {
	t.Helper()
	return itemsConfig(t, dsn, url, adminAddr, "retry_mode = \"test\"\nmax_attempts = 8\ntimeout_ms = 5000\n")
}

// itemsConfig writes config.toml in a directory of its own (the store's
// default home) with one webhook on items and these lines of its
// settings, and returns its path.
func itemsConfig(t *testing.T, dsn, url, adminAddr, settings string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	text := postgresSection(dsn) + fmt.Sprintf(`[admin]
listen = %q
[[webhook]]
name = "items"
url = %q
events = ["public.items"]
`, adminAddr, url) + settings
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCrashSIGKILL streams 20,000 changes while walhook is killed with
// SIGKILL and restarted: twice while changes are written and delivered,
// once while deliveries wait on a retry's backoff (the receiver refuses
// every seventh request), and once while walhook stores the chunks of a
// transaction bigger than cdc hands over at once. Nothing is lost, each
// row's changes arrive in commit order, every duplicate carries the same
// Webhook-Id, nothing else arrives, and at least one kill landed with
// changes written but not yet received.
func TestCrashSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 20,000 changes")
	}
	crashSIGKILL(t, "")
}

// bigTxChanges is the size of crashSIGKILL's big transaction: more than two
// of cdc's chunks (defaultChunkSize, 5,000 events), so that it is stored
// in three.
const bigTxChanges = 12000

// killFigures is what was written and received when walhook was killed.
type killFigures struct {
	written  int // changes committed before the kill
	received int // of those, received by the receiver after the kill
	writing  bool
}

// inFlight is how many changes were written but not received at the kill.
func (k killFigures) inFlight() int { return k.written - k.received }

// crashStream writes a churn in a goroutine while the test kills walhook
// (a process delivering to rc) and starts it again, and keeps what had
// been written and received at each kill.
type crashStream struct {
	t     *testing.T
	c     *churn
	p     *process
	rc    *keyReceiver
	kills []killFigures
	wrote chan struct{} // closed when the writer ends
	err   error         // the writer's, once wrote is closed
}

// streamChurn starts writing c to db until total changes were written.
func streamChurn(t *testing.T, db *pgx.Conn, c *churn, total int, p *process, rc *keyReceiver) *crashStream {
	s := &crashStream{t: t, c: c, p: p, rc: rc, wrote: make(chan struct{})}
	go func() {
		defer close(s.wrote)
		s.err = c.run(context.Background(), db, total)
	}()
	return s
}

// writing reports whether the writer is still writing.
func (s *crashStream) writing() bool {
	select {
	case <-s.wrote:
		return false
	default:
		return true
	}
}

// waitWritten waits until n changes were written or the writer ended.
func (s *crashStream) waitWritten(n int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("%d changes written", n), time.Minute, func() bool { return len(s.c.written()) >= n || !s.writing() })
}

// kill kills walhook, starts it again and returns what had been written
// and received: written is read before the kill and received after it, so
// inFlight never counts a change that was delivered at the kill.
func (s *crashStream) kill(what string) killFigures {
	s.t.Helper()
	k := killFigures{writing: s.writing()}
	keys := s.c.written()
	s.p.kill()
	k.written, k.received = len(keys), len(keys)-s.rc.missing(keys)
	s.kills = append(s.kills, k)
	s.t.Logf("kill %d (%s): %d changes written, %d of them received, %d in flight; writer still writing: %v",
		len(s.kills), what, k.written, k.received, k.inFlight(), k.writing)
	s.p.start()
	return k
}

// end waits for the writer to end and fails the test if it failed.
func (s *crashStream) end() {
	s.t.Helper()
	<-s.wrote
	if s.err != nil {
		s.t.Fatal(s.err)
	}
}

// checkMidFlight fails the test unless a kill landed with changes written
// but not yet received: a kill with nothing in flight proves nothing.
func (s *crashStream) checkMidFlight() {
	s.t.Helper()
	for _, k := range s.kills {
		if k.inFlight() > 0 {
			return
		}
	}
	s.t.Errorf("none of the %d kills landed with changes written but not yet received: %+v", len(s.kills), s.kills)
}

// crashSIGKILL is TestCrashSIGKILL with store, a [store] section, added to
// the config.
func crashSIGKILL(t *testing.T, store string) {
	dsn := itemsDatabase(t)
	var refusing atomic.Bool
	var asked atomic.Int64
	// arrived is closed by the first request after arm: the big
	// transaction's first change, when everything before it was received.
	var arrived chan struct{}
	var armed atomic.Bool
	arm := func() { arrived = make(chan struct{}); armed.Store(true) }
	rc, url := newKeyReceiver(t, func() bool {
		if armed.CompareAndSwap(true, false) {
			close(arrived)
		}
		return refusing.Load() && asked.Add(1)%7 == 0
	})
	admin := freeAddr(t)
	cfg := crashConfig(t, dsn, url, admin)
	appendFile(t, cfg, store)
	p := startProcess(t, filepath.Join(t.TempDir(), "walhook.log"), "run", "-config", cfg)
	// Changes made before the slot exists are not walhook's to deliver.
	waitReady(t, admin)

	ctx := context.Background()
	db, c, seed := seededChurn(t, dsn, 3000)
	rng := rand.New(rand.NewPCG(seed, 2))
	const total = 20000
	s := streamChurn(t, db, c, total, p, rc)

	// Two kills while the stream is written and delivered.
	for i := 1; i <= 2; i++ {
		s.waitWritten(total*i/5 + rng.IntN(total/10))
		s.kill("mid-stream")
		waitReady(t, admin)
	}

	// One while deliveries wait on a retry: the receiver refuses every
	// seventh request from now on, and the admin shows refused deliveries
	// waiting for their next attempt.
	refusing.Store(true)
	retries := 0
	waitFor(t, "deliveries waiting to be retried", time.Minute, func() bool {
		retries = retriesPending(t, admin, "items")
		return retries > 0
	})
	s.kill(fmt.Sprintf("%d deliveries waiting to be retried", retries))
	waitReady(t, admin)
	refusing.Store(false)
	s.end()

	// One while walhook stores the chunks of a big transaction: killed as
	// soon as the first of its changes arrives (its first chunk is
	// stored). It counts when walhook had stored fewer of its events than
	// it holds (walhook_events_total, read just before the kill, less what
	// it was before the transaction) and the slot had not confirmed it:
	// PostgreSQL sends it again whole, walhook must take the chunks it
	// stored as repeats and store the rest. A kill that came too late is
	// tried again with another big transaction.
	inside := false
	for try := 1; try <= 3 && !inside; try++ {
		waitFor(t, "every change before the big transaction received", 3*time.Minute, func() bool { return rc.missing(c.written()) == 0 })
		stored0 := eventsStored(t, admin)
		from := len(c.written())
		arm()
		before, err := c.big(ctx, db, bigTxChanges)
		if err != nil {
			t.Fatal(err)
		}
		big := c.written()[from:]
		select {
		case <-arrived:
		case <-time.After(time.Minute):
			t.Fatal("timed out after 1m0s waiting for the big transaction's first change")
		}
		stored := eventsStored(t, admin) - stored0
		k := s.kill(fmt.Sprintf("big transaction %d", try))
		var unconfirmed bool
		if err := db.QueryRow(ctx, `SELECT confirmed_flush_lsn < $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2`,
			before, slotFor(dsn)).Scan(&unconfirmed); err != nil {
			t.Fatal(err)
		}
		got := len(big) - rc.missing(big)
		t.Logf("big transaction %d: %d changes, %d stored just before the kill, %d received at the kill, %d in flight; unconfirmed by the slot: %v",
			try, len(big), stored, got, k.inFlight(), unconfirmed)
		inside = unconfirmed && stored < len(big)
		waitReady(t, admin)
	}
	if !inside {
		t.Errorf("no kill landed while a big transaction's chunks were being stored (three tries)")
	}

	if err := c.run(ctx, db, len(c.written())+2000); err != nil {
		t.Fatal(err)
	}
	s.checkMidFlight()
	rc.awaitAll(t, c.keys, 3*time.Minute)
	if t.Failed() {
		logMetrics(t, admin)
	}
}

// eventsStored is the sum of walhook_events_total, the events walhook
// stored since it started (a transaction sent again not counted).
func eventsStored(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	n := 0.0
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "walhook_events_total{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
				t.Fatalf("metrics: %q: %v", line, err)
			}
			n += v
		}
	}
	return int(n)
}

// retriesPending counts the webhook's pending deliveries that failed and
// wait for their next attempt, reading the admin API's history (up to ten
// pages of 1,000, newest first).
func retriesPending(t *testing.T, admin, webhook string) int {
	t.Helper()
	n := 0
	url := "http://" + admin + "/api/webhooks/" + webhook + "/deliveries?status=pending&limit=1000"
	for page := 0; page < 10 && url != ""; page++ {
		resp, err := http.Get(url)
		if err != nil {
			return n
		}
		var ds []struct {
			NextAttemptAt *time.Time `json:"next_attempt_at"`
		}
		err = json.NewDecoder(resp.Body).Decode(&ds)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return n
		}
		for _, d := range ds {
			if d.NextAttemptAt != nil {
				n++
			}
		}
		url = ""
		if next := resp.Header.Get("X-Walhook-Next-Before"); next != "" {
			url = "http://" + admin + "/api/webhooks/" + webhook + "/deliveries?status=pending&limit=1000&before=" + next
		}
	}
	return n
}

// logMetrics logs walhook's queue and delivery metrics, to explain a failure.
func logMetrics(t *testing.T, admin string) {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Logf("metrics: %v", err)
		return
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "walhook_") && !strings.Contains(line, "_bucket") {
			t.Log(line)
		}
	}
}

func (rc *keyReceiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.ids)
}

// TestPostgresRestart stops PostgreSQL (immediate) mid-stream and starts
// it again: walhook reports 503 on /readyz meanwhile, reconnects, and
// nothing is lost.
func TestPostgresRestart(t *testing.T) {
	ctx := context.Background()
	pg, err := pgcluster.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	dsn := pg.DSN("postgres")
	execSQL(t, dsn, itemsSchema)
	rc, url := newKeyReceiver(t, nil)
	admin := freeAddr(t)
	startProcess(t, filepath.Join(t.TempDir(), "walhook.log"), "run", "-config", crashConfig(t, dsn, url, admin))
	readyz := func() int { return httpStatus("http://" + admin + "/readyz") }
	waitFor(t, "/readyz 200", time.Minute, func() bool { return readyz() == 200 })

	c := newChurn(1000, 7)
	write := func(n int) {
		db, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close(ctx)
		if err := c.run(ctx, db, n); err != nil {
			t.Fatal(err)
		}
	}
	write(3000)
	if err := pg.StopServer(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 503 while PostgreSQL is down", time.Minute, func() bool { return readyz() == 503 })
	if err := pg.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	write(6000)
	waitFor(t, "/readyz 200 after the restart", time.Minute, func() bool { return readyz() == 200 })
	rc.awaitAll(t, c.keys, 3*time.Minute)
}
