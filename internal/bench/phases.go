package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// The phases: each starts walhook on a slot of its own and measures it.

// endToEnd starts walhook on a slot holding want changes and measures it
// (e2eRun).
func (h *harness) endToEnd(ctx context.Context, phase, slot string, webhooks, want int) (e2eRun, error) {
	r, err := h.endToEndOn(ctx, phase, slot, "", webhooks, want)
	h.peakRSS, h.peakAnon = max(h.peakRSS, r.rssMB), max(h.peakAnon, r.anonMB)
	return r, err
}

// e2eRun is what one end-to-end phase measured.
type e2eRun struct {
	rate  float64       // deliveries/s from the first 2xx to the last
	first time.Duration // walhook's start → its first 2xx
	cpuUS float64       // walhook's CPU µs per delivery, its start included
	// steadyCPUUS is walhook's CPU µs per delivery from its first 2xx to
	// its last, over the deliveries after the first request's: what
	// each costs once walhook runs, as the rate counts them.
	steadyCPUUS float64
	storeCPUUS  float64 // the store's PostgreSQL backends' CPU µs per delivery (schema set)
	rssMB       float64 // walhook's peak RSS
	anonMB      float64 // of which anonymous
}

// endToEndOn is endToEnd with the queue in schema of the store database
// when schema is set; it then also measures the store's backends' CPU.
func (h *harness) endToEndOn(ctx context.Context, phase, slot, schema string, webhooks, want int) (e2eRun, error) {
	var hooks []webhook
	for i := range webhooks {
		hooks = append(hooks, webhook{name: fmt.Sprintf("h%d", i+1), path: fmt.Sprintf("/h%d", i+1), timeoutMS: 10000, retryMode: "production"})
	}
	return h.endToEndWith(ctx, phase, slot, schema, hooks, want)
}

// endToEndWith is endToEndOn with these webhooks; want is the changes,
// and the rate counts events, a batch as many.
func (h *harness) endToEndWith(ctx context.Context, phase, slot, schema string, hooks []webhook, want int) (e2eRun, error) {
	var backends *backendCPU
	if schema != "" {
		var err error
		if backends, err = h.watchStoreBackends(ctx); err != nil {
			return e2eRun{}, err
		}
	}
	start := time.Now()
	p, err := h.launchOn(ctx, phase, slot, schema, hooks, false)
	if err != nil {
		if backends != nil {
			backends.stop()
		}
		return e2eRun{}, err
	}
	total := want * len(hooks)
	err = h.waitReceived(ctx, p, total, time.Duration(total/200+60)*time.Second)
	firstAt, last, firstCount, cpuFirst := h.rc.firstAt(), h.rc.lastAt(), h.rc.firstCount(), h.rc.cpuAtFirst()
	cpu := p.cpuSeconds()
	var storeCPU float64
	if backends != nil {
		storeCPU = backends.stop()
	}
	rss, anon := p.rssMB(), p.anonMB()
	p.stop()
	h.dropSlot(ctx, slot)
	if err != nil {
		return e2eRun{}, err
	}
	if s := h.rc.sampleBody(); s != nil && h.sample == nil {
		h.sample = s
	}
	r := e2eRun{first: firstAt.Sub(start), cpuUS: cpu * 1e6 / float64(total), storeCPUUS: storeCPU * 1e6 / float64(total), rssMB: rss, anonMB: anon}
	r.rate = float64(total) / last.Sub(start).Seconds()
	if last.After(firstAt) {
		r.rate = float64(total-firstCount) / last.Sub(firstAt).Seconds()
	}
	if total > firstCount && cpuFirst > 0 {
		r.steadyCPUUS = (cpu - cpuFirst) * 1e6 / float64(total-firstCount)
	}
	return r, nil
}

// latencyPhase offers a fixed load to a running walhook and measures
// commit → receipt from each payload's occurred_at.
func (h *harness) latencyPhase(ctx context.Context, res *Result) error {
	r, err := h.latencyOn(ctx, "latency", "")
	if err != nil {
		return err
	}
	res.OfferedEPS, res.P50MS, res.P99MS, res.P999MS = r.offered, r.p50, r.p99, r.p999
	h.peakRSS, h.peakAnon = max(h.peakRSS, r.rssMB), max(h.peakAnon, r.anonMB)
	return nil
}

// latencyRun is what one latency phase measured, in changes/s and ms,
// and walhook's peak RSS and anonymous memory in MB.
type latencyRun struct{ offered, p50, p99, p999, rssMB, anonMB float64 }

// latencyOn is the latency phase with the queue in schema of the store
// database when schema is set.
func (h *harness) latencyOn(ctx context.Context, phase, schema string) (latencyRun, error) {
	return h.latencyWith(ctx, phase, schema, oneHook)
}

// latencyWith is latencyOn with these webhooks (one, or a batching one):
// each event's latency, also in a batch.
func (h *harness) latencyWith(ctx context.Context, phase, schema string, hooks []webhook) (latencyRun, error) {
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return latencyRun{}, err
	}
	p, err := h.launchOn(ctx, phase, slot, schema, hooks, true)
	if err != nil {
		return latencyRun{}, err
	}
	defer h.dropSlot(ctx, slot)
	defer p.stop()

	n, pace := h.offeredLoad()
	took, err := h.insert(ctx, n, h.o.TxSize, 4, pace)
	if err != nil {
		return latencyRun{}, err
	}
	if err := h.waitReceived(ctx, p, n, time.Minute); err != nil {
		return latencyRun{}, err
	}
	lat := h.rc.latencies()
	if len(lat) == 0 {
		return latencyRun{}, errors.New("no latencies recorded")
	}
	slices.Sort(lat)
	return latencyRun{
		offered: float64(n) / took.Seconds(),
		p50:     percentile(lat, 0.50),
		p99:     percentile(lat, 0.99),
		p999:    percentile(lat, 0.999),
		rssMB:   p.rssMB(),
		anonMB:  p.anonMB(),
	}, nil
}

// percentile is the p-th of sorted latencies, in milliseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

// backlogPhase queues deliveries while the receiver hangs, restarts
// walhook with the receiver up and measures the first delivery and the
// drain.
func (h *harness) backlogPhase(ctx context.Context, res *Result) error {
	n := h.o.Backlog
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return err
	}
	defer h.dropSlot(ctx, slot)
	dir, admin, token, err := h.queueBacklog(ctx, slot, res)
	if err != nil {
		return err
	}

	h.rc.reset(false)
	start := time.Now()
	p, err := h.startWalhook(ctx, dir, admin, token, "restart")
	if err != nil {
		return err
	}
	defer p.stop()
	if err := h.waitReceived(ctx, p, 1, time.Minute); err != nil {
		return err
	}
	firstAt := h.rc.firstAt()
	res.BacklogFirstDeliveryMS = float64(firstAt.Sub(start).Microseconds()) / 1000
	// Requests in flight at the stop were answered then and are not
	// repeated: the queue running empty is the end.
	deadline := time.Now().Add(time.Duration(n/200+60) * time.Second)
	for p.queued("hb") != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d deliveries still queued after the restart: %s\nthe oldest pending: %s",
				p.queued("hb"), n, p.logTail(), p.pendingSample("hb"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.BacklogDrainEPS = float64(h.rc.count()) / h.rc.lastAt().Sub(firstAt).Seconds()
	res.BacklogRestartRSSMB, res.BacklogRestartAnonMB = p.rssMB(), p.anonMB()
	return nil
}

// queueBacklog runs walhook while the receiver hangs until -backlog
// deliveries are queued, records the queue's rate, memory and store size,
// and stops it; the restart runs on the config it leaves in dir.
func (h *harness) queueBacklog(ctx context.Context, slot string, res *Result) (dir, admin, token string, err error) {
	n := h.o.Backlog
	// A long timeout: the workers wait on the hung receiver, the rest stays
	// queued and unattempted.
	// Test retries (3 s apart): a request that fails in the shutdown must
	// not hold the drain for the five minutes of a production backoff.
	hooks := []webhook{{name: "hb", path: "/hold", timeoutMS: 300000, retryMode: "test"}}
	dir, admin, token, err = h.writeConfig("backlog", slot, hooks)
	if err != nil {
		return "", "", "", err
	}
	h.rc.reset(false)
	release := h.rc.holdRequests()
	p, err := h.startWalhook(ctx, dir, admin, token, "backlog")
	if err != nil {
		release()
		return "", "", "", err
	}
	start := time.Now()
	if _, err := h.insert(ctx, n, max(h.o.TxSize, 1000), 4, 0); err != nil {
		release()
		p.kill()
		return "", "", "", err
	}
	deadline := time.Now().Add(time.Duration(n/500+120) * time.Second)
	for p.queued("hb") < n {
		if time.Now().After(deadline) {
			release()
			p.kill()
			return "", "", "", fmt.Errorf("only %d of %d deliveries queued: %s", p.queued("hb"), n, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.BacklogN = n
	res.BacklogQueueEPS = float64(n) / time.Since(start).Seconds()
	res.BacklogRSSMB, res.BacklogAnonMB = p.rssMB(), p.anonMB()
	if fi, err := os.Stat(filepath.Join(dir, "data", "walhook.db")); err == nil {
		res.StoreBytesPerDelivery = float64(fi.Size()) / float64(n)
	}
	p.cmd.Process.Signal(syscall.SIGTERM) // walhook waits for its in-flight requests...
	release()                             // ...which end now
	p.stop()
	return dir, admin, token, nil
}

// backfillPhase adds -backfill rows to the table and starts a backfill of
// it for one of two webhooks while the latency phase's load runs: how
// fast the rows are read and delivered, and what the live changes'
// latency is at each webhook meanwhile.
func (h *harness) backfillPhase(ctx context.Context, res *Result) error {
	if _, err := h.insert(ctx, h.o.Backfill, 1000, 4, 0); err != nil {
		return err
	}
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return err
	}
	hooks := []webhook{
		{name: "filled", path: "/filled", timeoutMS: 10000, retryMode: "production"},
		{name: "other", path: "/other", timeoutMS: 10000, retryMode: "production"},
	}
	p, err := h.launch(ctx, "backfill", slot, hooks, true)
	if err != nil {
		return err
	}
	defer h.dropSlot(ctx, slot)
	defer p.stop()

	start := time.Now()
	resp, err := p.call("POST", "/api/webhooks/filled/backfill")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST backfill answered %s", resp.Status)
	}
	live, pace := h.offeredLoad()
	loadDone := make(chan error, 1)
	go func() {
		_, err := h.insert(ctx, live, h.o.TxSize, 4, pace)
		loadDone <- err
	}()
	rows, readTook, err := waitBackfill(ctx, p, "filled", start)
	if err != nil {
		return err
	}
	if err := <-loadDone; err != nil {
		return err
	}
	if err := h.waitReceived(ctx, p, rows+2*live, 5*time.Minute); err != nil {
		return err
	}
	h.peakRSS, h.peakAnon = max(h.peakRSS, p.rssMB()), max(h.peakAnon, p.anonMB())
	res.BackfillRows = rows
	res.BackfillReadEPS = float64(rows) / readTook.Seconds()
	res.BackfillDrainEPS = float64(h.rc.countOf("filled")) / h.rc.lastAt().Sub(start).Seconds()
	for _, w := range []struct {
		name     string
		p99, max *float64
	}{{"filled", &res.BackfillOwnP99MS, &res.BackfillOwnMaxMS}, {"other", &res.BackfillOtherP99, &res.BackfillOtherMaxM}} {
		lat := h.rc.latenciesOf(w.name)
		if len(lat) == 0 {
			return fmt.Errorf("no latencies recorded at %s", w.name)
		}
		slices.Sort(lat)
		*w.p99, *w.max = percentile(lat, 0.99), percentile(lat, 1)
	}
	return nil
}

// waitBackfill polls a webhook's backfill until its read is done and
// returns the rows it queued and the time from start to the last poll.
func waitBackfill(ctx context.Context, p *process, hook string, start time.Time) (rows int, readTook time.Duration, err error) {
	var st struct {
		State  string
		Error  string
		Queued int `json:"rows_queued"`
	}
	for st.State != "done" {
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		resp, err := p.request("/api/webhooks/" + hook + "/backfill")
		if err != nil {
			return 0, 0, err
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || st.State == "failed" {
			return 0, 0, fmt.Errorf("backfill: %v %s", err, st.Error)
		}
		readTook = time.Since(start)
	}
	return st.Queued, readTook, nil
}

// bigTxPhase commits one transaction of -big-tx rows to a running walhook.
func (h *harness) bigTxPhase(ctx context.Context, res *Result) error {
	n := h.o.BigTx
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return err
	}
	defer h.dropSlot(ctx, slot)
	p, err := h.launch(ctx, "bigtx", slot, oneHook, false)
	if err != nil {
		return err
	}
	defer p.stop()
	if _, err := h.insert(ctx, n, n, 1, 0); err != nil {
		return err
	}
	committed := time.Now()
	if err := h.waitReceived(ctx, p, n, time.Duration(n/100+120)*time.Second); err != nil {
		return err
	}
	res.BigTxRows = n
	res.BigTxEPS = float64(n) / h.rc.lastAt().Sub(committed).Seconds()
	res.BigTxRSSMB, res.BigTxAnonMB = p.rssMB(), p.anonMB()
	return nil
}
