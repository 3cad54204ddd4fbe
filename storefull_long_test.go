package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStoreFullLong is issue 22's measurement, repeatable: the store's file
// system (a tmpfs) is full for WALHOOK_LONG_FULLDISK_FAULT (10m) while
// about 1,000 changes/s come in and the receiver refuses them; then the
// file system grows (remounted at 8 GiB, room for the backlog the slot
// kept), the receiver comes back, and once every change written meanwhile
// has arrived walhook is watched for WALHOOK_LONG_FULLDISK_AFTER (3m)
// more under the same load. It samples /proc/<pid>/status and the Go heap
// from /metrics every 5 s and logs them; it fails when VmRSS peaks more
// than 50 MB over its level before the fault, when RssAnon after the
// recovery stays more than 50 MB over it (VmRSS then also holds the
// store's grown file, which a tmpfs counts as RssShmem), when the
// walsender was replaced or when a change is lost, repeated under another
// id or out of its row's order. It runs only with WALHOOK_LONG_FULLDISK=1,
// as root, and takes about 20 minutes.
func TestStoreFullLong(t *testing.T) {
	if os.Getenv("WALHOOK_LONG_FULLDISK") != "1" {
		fmt.Fprintf(os.Stderr, "SKIP %s: a 10-minute full disk; set WALHOOK_LONG_FULLDISK=1 to run it\n", t.Name())
		t.Skip("set WALHOOK_LONG_FULLDISK=1 to run the 10-minute full-disk measurement")
	}
	needRoot(t, "mounts a tmpfs")
	fault := envDuration(t, "WALHOOK_LONG_FULLDISK_FAULT", 10*time.Minute)
	after := envDuration(t, "WALHOOK_LONG_FULLDISK_AFTER", 3*time.Minute)
	const warmup = time.Minute
	dsn, pgLog := itemsOnShortTimeout(t, "storefulllong")

	var refuse atomic.Bool // the receiver is down (503) during the fault
	rc, url := newKeyReceiver(t, refuse.Load)
	admin := freeAddr(t)
	// The default retry backoff, not crashConfig's test mode: an attempt
	// refused during the fault is tried again 6 s after the recovery.
	cfg := itemsConfig(t, dsn, url, admin, "max_attempts = 8\ntimeout_ms = 5000\n")
	p, store, _, walsender := startOnTmpfs(t, dsn, cfg, admin, "64m")
	base := "http://" + admin

	w := startWriter(t, dsn)
	s := &memSampler{t: t, pid: p.Pid(), metrics: base + "/metrics", start: time.Now()}
	s.watch("warm-up", warmup)
	before := s.phase("warm-up").tail(30 * time.Second)

	fill := fillDisk(t, store)
	refuse.Store(true)
	waitFor(t, "/readyz 503 with the store full", time.Minute, func() bool { return httpStatus(base+"/readyz") == 503 })
	firstUnstored := currentWALLSN(t, dsn)
	faultStart := time.Now()
	s.watch("fault", fault, func() {
		if c := confirmedFlushLSN(t, dsn); c > firstUnstored {
			t.Errorf("confirmed_flush_lsn %s passed %s, after which nothing could be stored", lsnString(c), lsnString(firstUnstored))
		}
		if code := httpStatusWithin(base+"/api/webhooks", 5*time.Second); code != 200 {
			t.Errorf("GET /api/webhooks answered %d with the store full", code)
		}
	})
	if body := httpBody(base + "/readyz"); !strings.Contains(body, "no space left on device") {
		t.Errorf("/readyz at the end of the fault: %q, want it to name the full disk", body)
	}
	if pid := walsenderPID(t, dsn); pid != walsender {
		t.Errorf("walhook's walsender is pid %d after %s of a full disk, was %d", pid, fault, walsender)
	}
	noSenderTimeout(t, pgLog)
	faultWritten := w.written()
	t.Logf("fault of %s: %d changes written by its end", time.Since(faultStart).Round(time.Second), faultWritten)

	// The operator grows the file system; the receiver is back.
	mount(t, "-o", "remount,size=8g", store)
	fill.free()
	refuse.Store(false)
	recovered := time.Now()
	waitFor(t, "/readyz 200 once the file system grew", time.Minute, func() bool { return httpStatus(base+"/readyz") == 200 })
	s.until("recovery", 30*time.Minute, func() bool { return rc.missing(w.snapshot(faultWritten)) == 0 })
	drained := time.Since(recovered)
	t.Logf("backlog of %d changes delivered %s after the file system grew", faultWritten, drained.Round(time.Second))
	s.watch("after", after)
	end := s.phase("after").tail(after / 2)

	keys := w.stop()
	rc.awaitAll(t, keys, 5*time.Minute)

	peak := s.phase("fault").max()
	duringRecovery := s.phase("recovery").max()
	summary := fmt.Sprintf("%s (fault %s, backlog drained in %s, %d changes): VmRSS/RssAnon/RssShmem/HeapInuse MB: before %s; fault peak %s (VmHWM %.1f); recovery peak %s; after %s",
		t.Name(), fault, drained.Round(time.Second), len(keys), before, peak, kB(peak.hwm), duringRecovery, end)
	t.Log(summary)
	fmt.Println(summary)
	if grown := peak.rss - before.rss; grown > 50<<10 {
		t.Errorf("VmRSS peaked %.1f MB over its level before the fault (%s, peak %s): more than 50 MB", kB(grown), before, peak)
	}
	if grown := end.anon - before.anon; grown > 50<<10 {
		t.Errorf("RssAnon stayed %.1f MB over its level before the fault after the recovery (%s, after %s): more than 50 MB", kB(grown), before, end)
	}
}

// envDuration reads a duration from the environment, def when unset.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("$%s: %v", name, err)
	}
	return d
}

// snapshot is a copy of the first n keys written.
func (w *writer) snapshot(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.c.keys[:min(n, len(w.c.keys))])
}

// memSample is walhook's memory at one moment, in kB.
type memSample struct {
	at                    time.Duration // since the sampler started
	rss, anon, shmem, hwm int
	heap                  int // go_memstats_heap_inuse_bytes / 1024
}

func (m memSample) String() string {
	return fmt.Sprintf("%.1f/%.1f/%.1f/%.1f", kB(m.rss), kB(m.anon), kB(m.shmem), kB(m.heap))
}

func kB(n int) float64 { return float64(n) / 1024 }

// samples are a phase's samples in order.
type samples []memSample

// max is the largest of each figure, each on its own.
func (ss samples) max() memSample {
	var m memSample
	for _, s := range ss {
		m.rss, m.anon, m.shmem, m.hwm, m.heap = max(m.rss, s.rss), max(m.anon, s.anon), max(m.shmem, s.shmem), max(m.hwm, s.hwm), max(m.heap, s.heap)
	}
	return m
}

// tail is the mean of the samples of the phase's last d.
func (ss samples) tail(d time.Duration) memSample {
	var m memSample
	n := 0
	for _, s := range ss {
		if s.at < ss[len(ss)-1].at-d {
			continue
		}
		m.rss, m.anon, m.shmem, m.hwm, m.heap = m.rss+s.rss, m.anon+s.anon, m.shmem+s.shmem, m.hwm+s.hwm, m.heap+s.heap
		n++
	}
	return memSample{rss: m.rss / n, anon: m.anon / n, shmem: m.shmem / n, hwm: m.hwm / n, heap: m.heap / n}
}

// memSampler reads a process's memory every 5 s, by phase.
type memSampler struct {
	t       *testing.T
	pid     int
	metrics string
	start   time.Time
	by      map[string]samples
}

func (s *memSampler) phase(name string) samples { return s.by[name] }

// watch samples for d as phase name, calling each of checks at each sample.
func (s *memSampler) watch(name string, d time.Duration, checks ...func()) {
	end := time.Now().Add(d)
	s.until(name, d+time.Minute, func() bool {
		for _, c := range checks {
			c()
		}
		return !time.Now().Before(end)
	})
}

// until samples as phase name until done holds (asked at each sample),
// failing the test after timeout.
func (s *memSampler) until(name string, timeout time.Duration, done func() bool) {
	s.t.Helper()
	if s.by == nil {
		s.by = map[string]samples{}
	}
	deadline := time.Now().Add(timeout)
	for {
		m := s.sample()
		s.by[name] = append(s.by[name], m)
		s.t.Logf("%-8s %6.0fs VmRSS %6.1f MB  RssAnon %6.1f  RssShmem %6.1f  VmHWM %6.1f  HeapInuse %6.1f",
			name, m.at.Seconds(), kB(m.rss), kB(m.anon), kB(m.shmem), kB(m.hwm), kB(m.heap))
		if done() {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not done within %s", name, timeout)
		}
		time.Sleep(5 * time.Second) // the sampling interval, not a wait for an outcome
	}
}

func (s *memSampler) sample() memSample {
	p := procMemory(s.t, s.pid)
	m := memSample{at: time.Since(s.start), rss: p.rss, anon: p.anon, shmem: p.shmem, hwm: p.peak}
	for _, line := range strings.Split(httpBody(s.metrics), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			m.heap = int(f / 1024)
		}
	}
	return m
}
