package deliver

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// TestRestartScanReleasesMappedPages: after a restart each webhook's queue
// is counted, which reads every record through bbolt's map. A long backlog
// must not stay resident because of it: the scan drops the pages as it
// goes (the 1,000,000-delivery bench's peak RSS was this scan).
func TestRestartScanReleasesMappedPages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the store's pages are dropped with madvise on Linux only")
	}
	defer func(n int) { scanDropEvery = n }(scanDropEvery)
	scanDropEvery = 256

	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	q := openWith(t, dir, srv.URL, []string{"h"}, nil)
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before the Queue closes: it waits for its requests

	// A backlog: the receiver holds the first requests, the rest wait.
	const written = 40_000
	writeBacklog(t, q, written, nil)
	releaseOnce()
	q.Close()

	var queueBytes, stored int
	viewStore(t, dir, func(tx *bolt.Tx) {
		b := tx.Bucket(queueBucket("h"))
		s := b.Stats()
		queueBytes = (s.LeafPageN + s.LeafOverflowN) * tx.DB().Info().PageSize
		b.ForEach(func(_, v []byte) error {
			if v[0] == recPending {
				stored++
			}
			return nil
		})
	})
	if queueBytes < 1<<20 {
		t.Fatalf("the queue takes %d bytes: too small to tell resident pages apart", queueBytes)
	}

	// Restarted with the webhook off, so that nothing is delivered and no
	// commit releases the pages meanwhile: only the scan may.
	q, err := Open(Options{Dir: dir, Route: func(*cdc.Event) []string { return []string{"h"} }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var w Webhook
	ApplyDefaults(&w)
	w.Name, w.URL, w.Events, w.Active = "h", srv.URL, []string{"*"}, false
	if err := q.SetConfigWebhooks([]Webhook{w}); err != nil {
		t.Fatal(err)
	}
	// The receiver's first requests were answered as it closed.
	if got := q.Stats("h").Queued; got != stored || got < written-100 {
		t.Fatalf("counted %d queued deliveries after the restart, want %d stored of %d written", got, stored, written)
	}
	db := filepath.Join(dir, "walhook.db")
	if rss := mappedRSS(t, db); rss > queueBytes/2 {
		t.Errorf("after the restart's scan %d KB of the store are resident; the queue takes %d KB", rss>>10, queueBytes>>10)
	}

	// The measurement sees the pages: read the whole queue, then drop it.
	pending := 0
	q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(queueBucket("h")).ForEach(func(_, v []byte) error {
			if v[0] == recPending {
				pending++
			}
			return nil
		})
	})
	if rss := mappedRSS(t, db); pending != stored || rss < queueBytes*3/4 {
		t.Fatalf("reading the %d records of a %d KB queue left %d KB resident: the measurement does not see the pages", pending, queueBytes>>10, rss>>10)
	}
	q.releaseMapped()
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
