package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// walSenderTimeout is the test cluster's wal_sender_timeout: a fault that
// lasts longer shows whether walhook keeps its replication connection.
const walSenderTimeout = 5 * time.Second

// TestStoreFullUnderLoad: the store's file system (a 16 MiB tmpfs) fills
// up while about 1,000 changes/s come in and the receiver refuses them.
// Through a fault longer than wal_sender_timeout walhook confirms nothing
// it has not stored, says why on /readyz, the page's state and the gauge,
// answers its API, keeps its memory and keeps its walsender; when space
// returns it goes on by itself. A second fault ends with SIGTERM: walhook
// exits non-zero in its shutdown time saying what it did not store, and
// the next start reads that again. Every change arrives, none twice under
// another id, each row's in order. As root it runs or fails (needRoot).
func TestStoreFullUnderLoad(t *testing.T) {
	needRoot(t, "mounts a tmpfs")
	if testing.Short() {
		t.Skip("two faults longer than wal_sender_timeout under load")
	}
	dsn, pgLog := itemsOnShortTimeout(t, "storefull")

	var refuse atomic.Bool // the receiver is down (503) meanwhile
	refuse.Store(true)
	rc, url := newKeyReceiver(t, refuse.Load)
	admin := freeAddr(t)
	cfg := crashConfig(t, dsn, url, admin)
	p, store, logPath, walsender := startOnTmpfs(t, dsn, cfg, admin, "16m")
	base := "http://" + admin

	w := startWriter(t, dsn)
	waitFor(t, "3,000 changes written", time.Minute, func() bool { return w.written() >= 3000 })
	before := procMemory(t, p.Pid())
	t.Logf("before the fault: %s", before)

	// Fault 1: the disk fills, space returns, walhook goes on by itself.
	fill := fillDisk(t, store)
	waitFor(t, "/readyz 503 with the store full", time.Minute, func() bool { return httpStatus(base+"/readyz") == 503 })
	start := time.Now()
	firstUnstored := currentWALLSN(t, dsn) // commits after this cannot be stored while the disk is full
	if body := httpBody(base + "/readyz"); !strings.Contains(body, "store commit") || !strings.Contains(body, "no space left on device") {
		t.Errorf("/readyz body %q does not name the store and its cause", body)
	}
	var during []uint64
	for time.Since(start) < 3*walSenderTimeout {
		during = append(during, confirmedFlushLSN(t, dsn))
		if code := httpStatusWithin(base+"/api/webhooks", 5*time.Second); code != 200 {
			t.Errorf("GET /api/webhooks answered %d with the store full", code)
		}
		time.Sleep(500 * time.Millisecond) // spacing samples, not waiting for an outcome
	}
	atEnd := procMemory(t, p.Pid())
	t.Logf("end of the fault (%s, %d changes written): %s", time.Since(start).Round(time.Second), w.written(), atEnd)
	fmt.Printf("%s: RSS before %d kB (anon %d), end of a %s fault %d kB (anon %d), peak %d kB\n", t.Name(),
		before.rss, before.anon, time.Since(start).Round(time.Second), atEnd.rss, atEnd.anon, atEnd.peak)
	if grown := atEnd.anon - before.anon; grown > 50<<10 {
		t.Errorf("RssAnon grew %d kB during the fault (before %s, end %s): more than 50 MB", grown, before, atEnd)
	}
	if pid := walsenderPID(t, dsn); pid != walsender {
		t.Errorf("walhook's walsender is pid %d after the fault outlasted wal_sender_timeout, was %d", pid, walsender)
	}
	noSenderTimeout(t, pgLog)
	for _, c := range during {
		if c > firstUnstored {
			t.Errorf("confirmed_flush_lsn %s passed %s, after which nothing could be stored", lsnString(c), lsnString(firstUnstored))
			break
		}
	}
	metrics := httpBody(base + "/metrics")
	if !strings.Contains(metrics, "\nwalhook_store_healthy 0\n") {
		t.Errorf("/metrics does not say walhook_store_healthy 0 with the store full")
	}
	if ov := httpBody(base + "/api/overview"); !strings.Contains(ov, "the store cannot commit") {
		t.Errorf("/api/overview's state does not say the store fails: %s", ov)
	}
	raw, _ := os.ReadFile(logPath)
	if n := strings.Count(string(raw), "STORE COMMIT FAILED"); n != 1 {
		t.Errorf("the log says STORE COMMIT FAILED %d times, want once", n)
	}
	fill.free()
	refuse.Store(false)
	waitFor(t, "/readyz 200 after space was freed", time.Minute, func() bool { return httpStatus(base+"/readyz") == 200 })
	if metrics := httpBody(base + "/metrics"); !strings.Contains(metrics, "\nwalhook_store_healthy 1\n") {
		t.Errorf("/metrics does not say walhook_store_healthy 1 once the store writes again")
	}

	// Fault 2: the disk fills again and walhook is stopped meanwhile.
	fill = fillDisk(t, store)
	waitFor(t, "/readyz 503 with the store full again", time.Minute, func() bool { return httpStatus(base+"/readyz") == 503 })
	keys := w.stop()
	exited := make(chan error, 1)
	sent := time.Now()
	p.Signal(syscall.SIGTERM)
	go func() { exited <- p.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Errorf("walhook stopped with the store full exited with %v, want a non-zero status", err)
		}
		t.Logf("SIGTERM with the store full: exited after %s: %v", time.Since(sent).Round(100*time.Millisecond), err)
	case <-time.After(20 * time.Second): // its usual shutdown: in-flight requests (timeout_ms 5,000) and the reader's 3 s
		p.Signal(syscall.SIGKILL)
		<-exited
		t.Fatal("walhook did not stop within 20 s of SIGTERM with the store full")
	}
	raw, _ = os.ReadFile(logPath)
	if !strings.Contains(string(raw), "NOT STORED") || !strings.Contains(string(raw), "sends these changes again at the next start") {
		t.Errorf("no line says what was not stored at the stop:\n%s", tail(string(raw), 3000))
	}
	fill.free()
	p.start()
	waitFor(t, "every change", 2*time.Minute, func() bool { return rc.missing(keys) == 0 })
	rc.verify(t, keys)
}

// procStatus is a process's memory as /proc/<pid>/status has it, in kB.
type procStatus struct{ rss, anon, shmem, peak int } // kB, from /proc/<pid>/status

func (m procStatus) String() string {
	return fmt.Sprintf("VmRSS %d kB, RssAnon %d kB, VmHWM %d kB", m.rss, m.anon, m.peak)
}

func procMemory(t *testing.T, pid int) procStatus {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m procStatus
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			m.rss = n
		case "RssAnon:":
			m.anon = n
		case "RssShmem:":
			m.shmem = n
		case "VmHWM:":
			m.peak = n
		}
	}
	return m
}

// filler takes a file system's space but for 64 KiB.
type filler struct {
	t    *testing.T
	path string
}

func fillDisk(t *testing.T, dir string) filler {
	t.Helper()
	f := filler{t, filepath.Join(dir, "filler")}
	file, err := os.OpenFile(f.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	// walhook writes meanwhile: write until the file system says it is
	// full, then give 64 KiB back.
	chunk := make([]byte, 64<<10)
	size := int64(0)
	for {
		n, err := file.Write(chunk)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := file.Truncate(max(size-64<<10, 0)); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f filler) free() {
	if err := os.Remove(f.path); err != nil {
		f.t.Fatal(err)
	}
}

// writer commits changes to items (churn) at about 1,000 a second, ten a
// transaction, until stopped.
type writer struct {
	mu   sync.Mutex
	c    *churn
	stop func() []string
}

func startWriter(t *testing.T, dsn string) *writer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{c: newChurn(2000, 22)}
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-tick.C:
			}
			// Not under ctx: a transaction cut off at its COMMIT may be
			// committed all the same, and its changes then arrive without
			// being in the keys. Stopping waits for it instead.
			w.mu.Lock()
			err := w.c.tx(context.Background(), db, 10)
			w.mu.Unlock()
			if err != nil {
				done <- err
				return
			}
		}
	}()
	var once sync.Once
	var keys []string
	w.stop = func() []string {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("writer: %v", err)
			}
			db.Close(context.Background())
			keys = w.c.keys
		})
		return keys
	}
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *writer) written() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.c.keys)
}

// walsenderPID is the pid of the walsender streaming dsn's test slot, 0
// when none does.
func walsenderPID(t *testing.T, dsn string) int {
	t.Helper()
	return testkit.QueryValue[int](t, dsn, `SELECT coalesce((SELECT r.pid FROM pg_stat_replication r
		JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1), 0)`, slotFor(dsn))
}

// currentWALLSN is pg_current_wal_lsn().
func currentWALLSN(t *testing.T, dsn string) uint64 {
	t.Helper()
	return lsnNumber(t, testkit.QueryValue[string](t, dsn, `SELECT pg_current_wal_lsn()::text`))
}

func lsnString(lsn uint64) string { return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn)) }

// httpStatusWithin GETs url and returns the status, 0 when it does not
// answer within d.
func httpStatusWithin(url string, d time.Duration) int {
	c := http.Client{Timeout: d}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startOnTmpfs starts walhook on the config at cfg, its store (store.dir
// "data" beside cfg) on a tmpfs of size, unmounted at the test's end; it
// waits until walhook reads and returns it with the store's directory, its
// log's path and the pid of the walsender streaming its slot.
func startOnTmpfs(t *testing.T, dsn, cfg, admin, size string) (p *process, store, logPath string, walsender int) {
	t.Helper()
	store = filepath.Join(filepath.Dir(cfg), "data")
	if err := os.Mkdir(store, 0o750); err != nil {
		t.Fatal(err)
	}
	mount(t, "-t", "tmpfs", "-o", "size="+size, "tmpfs", store)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", store, err, out)
		}
	})
	logPath = filepath.Join(t.TempDir(), "walhook.log")
	p = startProcess(t, logPath, "run", "-config", cfg)
	waitFor(t, "/readyz 200", time.Minute, func() bool { return httpStatus("http://"+admin+"/readyz") == 200 })
	if walsender = walsenderPID(t, dsn); walsender == 0 {
		t.Fatal("no walsender streams walhook's slot")
	}
	return p, store, logPath, walsender
}

// itemsOnShortTimeout starts a cluster of the test's own whose
// wal_sender_timeout is walSenderTimeout, so that a fault outlasts it, and
// returns the DSN of database name in it, with the items table, and the
// cluster's log file.
func itemsOnShortTimeout(t *testing.T, name string) (dsn, pgLog string) {
	t.Helper()
	ctx := context.Background()
	pg, err := pgcluster.Start(ctx, fmt.Sprintf("wal_sender_timeout=%dms", walSenderTimeout.Milliseconds()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	dsn, err = pg.CreateDatabase(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	execSQL(t, dsn, itemsSchema)
	return dsn, pg.LogFile()
}

// noSenderTimeout fails the test if the cluster's log pgLog says it timed
// a walsender out: walhook kept answering its keepalives.
func noSenderTimeout(t *testing.T, pgLog string) {
	t.Helper()
	if log, _ := os.ReadFile(pgLog); strings.Contains(string(log), "due to replication timeout") {
		t.Errorf("PostgreSQL timed walhook's walsender out:\n%s", grepLines(string(log), "replication timeout"))
	}
}
