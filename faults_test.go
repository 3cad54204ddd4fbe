package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"walhook/deliver"
	"walhook/internal/testkit"
)

// Endpoints that misbehave, each a real server: walhook keeps its promises
// to them and to the other webhooks.

const thingsSchema = `CREATE TABLE things (id int PRIMARY KEY, v text)`

// faultHook is a [[webhook]] on public.things with test retries.
func faultHook(name, url, extra string) string {
	return fmt.Sprintf("[[webhook]]\nname = %q\nurl = %q\nevents = [\"public.things\"]\nretry_mode = \"test\"\n%s\n", name, url, extra)
}

// insertThings inserts rows from..to, one transaction each.
func insertThings(h *harness, from, to int) {
	for i := from; i <= to; i++ {
		h.exec(`INSERT INTO things VALUES ($1, 'v')`, i)
	}
}

// deliveries returns a webhook's stored deliveries, newest first.
func deliveries(t *testing.T, q *deliver.Queue, name, status string) []deliver.Delivery {
	t.Helper()
	ds, err := q.Deliveries(name, 1000, status)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// settled waits until n of a webhook's deliveries are stored with status
// (the counters move before the record is on disk) and returns them.
func settled(t *testing.T, q *deliver.Queue, name, status string, n int) []deliver.Delivery {
	t.Helper()
	var ds []deliver.Delivery
	waitFor(t, fmt.Sprintf("%d %s deliveries of %s stored", n, status, name), time.Minute, func() bool {
		ds = deliveries(t, q, name, status)
		return len(ds) == n
	})
	return ds
}

// entityIDs counts the distinct X-Walhook-Entity-Id a receiver got.
func entityIDs(rc *receiver) map[string]int {
	out := map[string]int{}
	for _, r := range rc.requests() {
		out[r.Header.Get("X-Walhook-Entity-Id")]++
	}
	return out
}

// TestFaultRefusedThenUp: nothing listens at the URL for a while (connection
// refused), then a server comes up there: everything arrives.
func TestFaultRefusedThenUp(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	h := newHarness(t, thingsSchema)
	h.start(faultHook("late", "http://"+addr+"/hook", "max_attempts = 8"))
	insertThings(h, 1, 5)
	q := h.app.Queue()
	waitFor(t, "an attempt of each stored", time.Minute, func() bool {
		ds := deliveries(t, q, "late", "")
		for _, d := range ds {
			if len(d.Attempts) == 0 {
				return false
			}
		}
		return len(ds) == 5
	})
	for _, d := range deliveries(t, q, "late", "") {
		if a := d.Attempts[0]; a.Status != 0 || !strings.Contains(a.Error, "refused") {
			t.Fatalf("attempt of %s: status %d error %q, want connection refused", d.EventID, a.Status, a.Error)
		}
	}
	if st := q.Stats("late"); st.SuccessfulCalls != 0 || st.LatestStatus != 0 {
		t.Fatalf("stats while nothing listens: %+v", st)
	}

	rc := &receiver{testkit.ListenReceiver(t, addr, nil)}
	insertThings(h, 6, 6)
	waitFor(t, "all six rows", time.Minute, func() bool { return len(entityIDs(rc)) == 6 })
	waitFor(t, "six successes", 10*time.Second, func() bool { return q.Stats("late").SuccessfulCalls == 6 })
	if st := q.Stats("late"); st.Failed != 0 {
		t.Errorf("%d deliveries failed for good", st.Failed)
	}
}

// TestFaultNeverAnswers: an endpoint that accepts and never answers gets
// timeouts and retries, while another webhook on the same table gets every
// event meanwhile.
func TestFaultNeverAnswers(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var hung atomic.Int64
	// Hostile, not testkit's Receiver: it reads no body and holds the
	// request until walhook gives up or the test ends.
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hung.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) }) // runs before stuck.Close
	healthy := newReceiver(t, nil)
	h := newHarness(t, thingsSchema)
	h.start(faultHook("stuck", stuck.URL, "timeout_ms = 500\nmax_attempts = 8") + faultHook("healthy", healthy.URL, ""))
	const rows = 100
	insertThings(h, 1, rows)
	q := h.app.Queue()
	waitFor(t, "the healthy webhook to get every row", 2*time.Minute, func() bool { return len(entityIDs(healthy)) == rows })
	st := q.Stats("stuck")
	if st.SuccessfulCalls != 0 || st.Failed != 0 {
		t.Fatalf("stuck webhook: %+v, want nothing succeeded or failed for good yet", st)
	}
	if st.Queued != rows {
		t.Errorf("stuck webhook has %d queued, want %d", st.Queued, rows)
	}
	waitFor(t, "a retry after a timeout", time.Minute, func() bool {
		for _, d := range deliveries(t, q, "stuck", deliver.StatusPending) {
			if len(d.Attempts) >= 2 {
				return true
			}
		}
		return false
	})
	for _, d := range deliveries(t, q, "stuck", deliver.StatusPending) {
		for _, a := range d.Attempts {
			if a.Status != 0 || !strings.Contains(a.Error, "timeout") {
				t.Fatalf("attempt %d of %s: status %d error %q, want a timeout", a.N, d.EventID, a.Status, a.Error)
			}
		}
	}
	if hung.Load() == 0 {
		t.Error("the stuck server never got a request")
	}
}

// TestFault500: a 500 is retried; after max_attempts the delivery is failed
// with every attempt's status kept.
func TestFault500(t *testing.T) {
	t.Parallel()
	rc := newReceiver(t, func(int, request) int { return http.StatusInternalServerError })
	h := newHarness(t, thingsSchema)
	h.start(faultHook("broken", rc.URL, "max_attempts = 3"))
	insertThings(h, 1, 1)
	q := h.app.Queue()
	ds := settled(t, q, "broken", "failed", 1)
	if len(ds) != 1 || len(ds[0].Attempts) != 3 {
		t.Fatalf("failed deliveries: %+v", ds)
	}
	for _, a := range ds[0].Attempts {
		if a.Status != 500 {
			t.Errorf("attempt %d: status %d, want 500", a.N, a.Status)
		}
	}
	if n := len(rc.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

// TestFault429RetryAfter: the attempt after a 429 with Retry-After comes no
// sooner than it asked.
func TestFault429RetryAfter(t *testing.T) {
	t.Parallel()
	rc := testkit.NewReceiver(t, func(n int, _ request) testkit.Response {
		if n == 1 {
			// Retry-After more than test mode's 3s.
			return testkit.Response{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"5"}}}
		}
		return testkit.Response{}
	})
	h := newHarness(t, thingsSchema)
	h.start(faultHook("limited", rc.URL, ""))
	insertThings(h, 1, 1)
	q := h.app.Queue()
	waitFor(t, "the retry to succeed", time.Minute, func() bool { return q.Stats("limited").SuccessfulCalls == 1 })
	ds := settled(t, q, "limited", "success", 1)
	if len(ds) != 1 || len(ds[0].Attempts) != 2 {
		t.Fatalf("deliveries: %+v", ds)
	}
	first, second := ds[0].Attempts[0], ds[0].Attempts[1]
	if first.Status != 429 || second.Status != 200 {
		t.Errorf("statuses %d, %d, want 429, 200", first.Status, second.Status)
	}
	if earliest := first.At.Add(first.Duration).Add(5 * time.Second); second.At.Before(earliest) {
		t.Errorf("second attempt at %s, before %s (Retry-After: 5 after the 429)", second.At, earliest)
	}
}

// TestFaultRedirect: a 3xx is not followed and counts as a failure.
func TestFaultRedirect(t *testing.T) {
	t.Parallel()
	target := newReceiver(t, nil)
	rc := testkit.NewReceiver(t, func(int, request) testkit.Response {
		return testkit.Response{Status: http.StatusFound, Header: http.Header{"Location": {target.URL + "/moved"}}}
	})
	h := newHarness(t, thingsSchema)
	h.start(faultHook("moved", rc.URL, "max_attempts = 2"))
	insertThings(h, 1, 1)
	q := h.app.Queue()
	ds := settled(t, q, "moved", "failed", 1)
	if len(ds) != 1 || len(ds[0].Attempts) != 2 {
		t.Fatalf("failed deliveries: %+v", ds)
	}
	for _, a := range ds[0].Attempts {
		if a.Status != http.StatusFound || !strings.Contains(a.Error, "not followed") {
			t.Errorf("attempt %d: status %d error %q, want 302 not followed", a.N, a.Status, a.Error)
		}
	}
	if st := q.Stats("moved"); st.SuccessfulCalls != 0 || st.TotalCalls != 2 {
		t.Errorf("stats %+v, want 2 calls and no success", st)
	}
	if n := len(target.requests()); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

// TestFaultGone: a 410 switches the webhook off; later changes are not
// sent to it (another webhook on the table proves they were routed).
func TestFaultGone(t *testing.T) {
	t.Parallel()
	gone := newReceiver(t, func(int, request) int { return http.StatusGone })
	witness := newReceiver(t, nil)
	h := newHarness(t, thingsSchema)
	h.start(faultHook("gone", gone.URL, "") + faultHook("witness", witness.URL, ""))
	insertThings(h, 1, 1)
	q := h.app.Queue()
	waitFor(t, "the webhook switched off", time.Minute, func() bool {
		w, ok := q.Webhook("gone")
		return ok && !w.Active
	})
	insertThings(h, 2, 10)
	waitFor(t, "the witness to get every row", time.Minute, func() bool { return len(entityIDs(witness)) == 10 })
	if n := len(gone.requests()); n != 1 {
		t.Errorf("the gone endpoint got %d requests, want 1", n)
	}
	if st := q.Stats("gone"); st.Queued != 0 || st.LatestStatus != 410 {
		t.Errorf("gone stats %+v, want nothing queued, latest 410", st)
	}
}

// TestFaultHugeBody: a 50 MB response body is not read: the attempt
// succeeds and keeps at most 4 KiB.
func TestFaultHugeBody(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	// Hostile, not testkit's Receiver: it streams its answer.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 800 { // 50 MiB
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, thingsSchema)
	h.start(faultHook("huge", srv.URL, "timeout_ms = 10000"))
	insertThings(h, 1, 3)
	q := h.app.Queue()
	waitFor(t, "three successes", time.Minute, func() bool { return q.Stats("huge").SuccessfulCalls == 3 })
	for _, d := range settled(t, q, "huge", "success", 3) {
		a := d.Attempts[len(d.Attempts)-1]
		if len(a.ResponseBody) > 4<<10 || a.Error != "" {
			t.Errorf("attempt kept %d bytes of the body, error %q", len(a.ResponseBody), a.Error)
		}
	}
	if w := written.Load(); w >= 3*50<<20 {
		t.Errorf("walhook read the whole bodies (%d bytes written)", w)
	}
}

// TestFaultSlowBody: a body that sends 6 KiB at once and then drips a
// byte at a time for ever does not hold the webhook: each attempt ends at
// the timeout and the next event goes, and the attempt keeps the body's
// first 4 KiB, no more.
func TestFaultSlowBody(t *testing.T) {
	t.Parallel()
	head := make([]byte, 6<<10) // more than is kept, in a pattern whose start is recognisable
	for i := range head {
		head[i] = "0123456789abcdef"[i%16]
	}
	// Hostile, not testkit's Receiver: it drips its answer.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write(head)
		for {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(srv.Close)
	h := newHarness(t, thingsSchema)
	h.start(faultHook("drip", srv.URL, "timeout_ms = 1000"))
	insertThings(h, 1, 3)
	q := h.app.Queue()
	waitFor(t, "three attempts over", time.Minute, func() bool { return q.Stats("drip").TotalCalls >= 3 })
	for _, d := range settled(t, q, "drip", "success", 3) {
		for _, a := range d.Attempts {
			if a.ResponseBody != string(head[:4<<10]) {
				t.Errorf("attempt %d of %s kept %d bytes of the body, want its first 4 KiB", a.N, d.EventID, len(a.ResponseBody))
			}
			if a.Status != http.StatusOK {
				t.Errorf("attempt %d of %s: status %d error %q", a.N, d.EventID, a.Status, a.Error)
			}
		}
	}
}

// TestStoreFull: the store's file system fills up (a small tmpfs). walhook
// says so loudly in its log and on /readyz, confirms no WAL it has not
// stored, and once space is freed it recovers and nothing is lost. As
// root it runs or fails; it never skips there (see needRoot).
func TestStoreFull(t *testing.T) {
	needRoot(t, "mounts a tmpfs")
	dsn := itemsDatabase(t)
	rc, url := newKeyReceiver(t, nil)
	admin := freeAddr(t)
	cfg := crashConfig(t, dsn, url, admin)
	store := filepath.Join(filepath.Dir(cfg), "data") // [store] dir's default
	if err := os.Mkdir(store, 0o750); err != nil {
		t.Fatal(err)
	}
	mount(t, "-t", "tmpfs", "-o", "size=2m", "tmpfs", store)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", store, err, out)
		}
	})
	logPath := filepath.Join(t.TempDir(), "walhook.log")
	startProcess(t, logPath, "run", "-config", cfg)
	readyz := func() int { return httpStatus("http://" + admin + "/readyz") }
	waitFor(t, "/readyz 200", time.Minute, func() bool { return readyz() == 200 })

	// Leave about 64 KiB free.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(store, &fs); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(store, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(fs.Bavail)*fs.Bsize-64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	before := confirmedFlushLSN(t, dsn)
	var keys []string
	tx := `INSERT INTO items SELECT g, g, repeat('x', 2000) FROM generate_series(1, 300) g`
	execSQL(t, dsn, tx)
	for i := 1; i <= 300; i++ {
		keys = append(keys, fmt.Sprintf("create:%d", i))
	}
	waitFor(t, "/readyz 503 with the store full", time.Minute, func() bool { return readyz() == 503 })
	if body := httpBody("http://" + admin + "/readyz"); !strings.Contains(body, "store") {
		t.Errorf("/readyz body %q does not name the store", body)
	}
	waitFor(t, "a loud log line", 10*time.Second, func() bool {
		raw, _ := os.ReadFile(logPath)
		return strings.Contains(string(raw), "STORE COMMIT FAILED")
	})
	// Several standby-status intervals with the store full: nothing may
	// be confirmed past what was stored before. (Sampled, then compared
	// with the transaction's commit LSN once its ids are known.)
	var during []uint64
	for range 30 {
		during = append(during, confirmedFlushLSN(t, dsn))
		time.Sleep(100 * time.Millisecond) // spacing samples, not waiting for an outcome
	}
	if n := rc.count(); n != 0 {
		t.Errorf("%d events arrived though they could not be stored", n)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/readyz 200 after space was freed", time.Minute, func() bool { return readyz() == 200 })
	waitFor(t, "every row", time.Minute, func() bool { return rc.missing(keys) == 0 })
	rc.verify(t, keys)
	var commit uint64
	rc.mu.Lock()
	for id := range rc.ids["create:1"] {
		commit, _ = strconv.ParseUint(id[:16], 16, 64)
	}
	rc.mu.Unlock()
	for _, c := range during {
		if c >= commit {
			t.Fatalf("confirmed_flush_lsn %X reached the unstored commit %X while the store was full (before: %X)", c, commit, before)
		}
	}
	waitFor(t, "confirmed_flush_lsn past the transaction", time.Minute, func() bool { return confirmedFlushLSN(t, dsn) > commit })
}

// httpBody GETs url and returns the body, "" when unreachable.
func httpBody(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return string(raw)
}

// confirmedFlushLSN reads the test slot's confirmed_flush_lsn.
func confirmedFlushLSN(t *testing.T, dsn string) uint64 {
	t.Helper()
	return lsnNumber(t, testkit.QueryValue[string](t, dsn,
		`SELECT coalesce(confirmed_flush_lsn::text, '0/0') FROM pg_replication_slots WHERE slot_name = $1`, slotFor(dsn)))
}

// lsnNumber reads an LSN in PostgreSQL's text form (16/B374D848).
func lsnNumber(t *testing.T, s string) uint64 {
	t.Helper()
	var hi, lo uint64
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		t.Fatalf("lsn %q: %v", s, err)
	}
	return hi<<32 | lo
}
