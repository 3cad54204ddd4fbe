package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// batchReceiver unpacks batches and hands each event to a keyReceiver as
// if it had come alone under its own id; it notes which events each
// Webhook-Id carried.
type batchReceiver struct {
	*keyReceiver
	mu       sync.Mutex
	batches  map[string]string // Webhook-Id: its events' ids, in order
	requests int               // answered 200
	refused  int               // answered 503: every tenth, so that batches wait for a retry when walhook is killed
	repeats  int               // requests with a Webhook-Id seen before
	events   int
	largest  int
	bad      []string
}

func newBatchReceiver(t *testing.T) (*batchReceiver, string) {
	rc := &batchReceiver{keyReceiver: newKeyRecorder(nil), batches: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(srv.Close)
	return rc, srv.URL
}

func (rc *batchReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("Webhook-Id")
	var b struct {
		Webhook string
		Events  []json.RawMessage
	}
	err := json.Unmarshal(body, &b)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	count, _ := strconv.Atoi(r.Header.Get("X-Walhook-Event-Count"))
	if err != nil || len(b.Events) == 0 || count != len(b.Events) || !strings.HasPrefix(id, "batch_") {
		rc.bad = append(rc.bad, fmt.Sprintf("%s (count %d): %.200s", id, count, body))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ids := make([]string, len(b.Events))
	for i, raw := range b.Events {
		var ev struct{ ID string }
		json.Unmarshal(raw, &ev)
		ids[i] = ev.ID
	}
	joined := strings.Join(ids, ",")
	if was, ok := rc.batches[id]; ok {
		rc.repeats++
		if was != joined {
			rc.bad = append(rc.bad, fmt.Sprintf("%s carried %s, and before %s", id, joined, was))
		}
	}
	rc.batches[id] = joined
	if (rc.requests+rc.refused)%10 == 9 {
		rc.refused++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	for i, raw := range b.Events {
		one := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(raw))
		one.Header.Set("Webhook-Id", ids[i])
		rc.keyReceiver.serve(httptest.NewRecorder(), one)
	}
	rc.requests++
	rc.events += len(ids)
	rc.largest = max(rc.largest, len(ids))
	w.WriteHeader(http.StatusOK)
}

// TestCrashSIGKILLBatches is TestCrashSIGKILL with batch_size = 50 and
// batch_wait_ms = 20 and a receiver that refuses every tenth request,
// walhook killed three times while the stream is written: nothing is lost,
// each row's changes arrive in commit order, a batch that comes again (a
// retry, before or after a restart) carries the same events under the same
// id, nothing else arrives, and at least one kill landed with changes
// written but not yet received.
func TestCrashSIGKILLBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 20,000 changes")
	}
	dsn := itemsDatabase(t)
	rc, url := newBatchReceiver(t)
	admin := freeAddr(t)
	cfg := crashConfig(t, dsn, url, admin)
	appendFile(t, cfg, "batch_size = 50\nbatch_wait_ms = 20\n")
	p := startProcess(t, filepath.Join(t.TempDir(), "walhook.log"), "run", "-config", cfg)
	waitReady(t, admin)

	db, c, seed := seededChurn(t, dsn, 3000)
	rng := rand.New(rand.NewPCG(seed, 2))
	const total = 20000
	s := streamChurn(t, db, c, total, p, rc.keyReceiver)
	for i := 1; i <= 3; i++ {
		s.waitWritten(total*i/4 + rng.IntN(total/8))
		s.kill("mid-stream")
		waitReady(t, admin)
	}
	s.end()
	s.checkMidFlight()
	rc.awaitAll(t, c.keys, 90*time.Second)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	t.Logf("%d requests answered 200 carried %d events, the largest %d; %d refused; %d batch ids, %d requests repeated one",
		rc.requests, rc.events, rc.largest, rc.refused, len(rc.batches), rc.repeats)
	for i, b := range rc.bad {
		if i == 5 {
			break
		}
		t.Errorf("bad batch: %s", b)
	}
	if rc.largest < 2 || rc.requests*2 > rc.events {
		t.Errorf("%d requests for %d events, the largest %d: the changes were not batched", rc.requests, rc.events, rc.largest)
	}
	if t.Failed() {
		logMetrics(t, admin)
	}
}
