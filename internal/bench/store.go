package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"walhook/deliver/store"
)

// -store postgres: walhook with its queue in PostgreSQL, in another
// database of the bench's own cluster, beside the bbolt store of the
// same run. Each phase has a schema of its own, so each starts empty.

// The stores -store accepts.
const (
	StoreBolt     = "bbolt"
	StorePostgres = "postgres"
)

// setUpStore creates the store database of -store postgres.
func (h *harness) setUpStore(ctx context.Context) error {
	h.storeDB = h.prefix + "_store"
	var err error
	h.storeDSN, err = h.cluster.CreateDatabase(ctx, h.storeDB)
	return err
}

// storeEndToEnd runs the 1-webhook end to end with the PostgreSQL store on
// slot pg, then with bbolt again on slot bolt, so that the PostgreSQL run
// is compared with bbolt runs just before (e2e_eps) and just after it.
func (h *harness) storeEndToEnd(ctx context.Context, res *Result, pg, bolt string) error {
	o := h.o
	h.logf("walhook end to end, 1 webhook, the queue in PostgreSQL")
	r, err := h.endToEndOn(ctx, "e2e1-pg", pg, "e2e", 1, o.Changes)
	if err != nil {
		return fmt.Errorf("end to end, PostgreSQL store: %w", err)
	}
	res.PGE2EEPS, res.PGE2ECPU, res.PGBackendCPU = r.rate, r.cpuUS, r.storeCPUUS
	res.PGE2EFirstMS = float64(r.first.Microseconds()) / 1000
	res.PGPeakRSSMB = max(res.PGPeakRSSMB, r.rssMB)
	h.logf("walhook end to end, 1 webhook, bbolt again")
	b, err := h.endToEndOn(ctx, "e2e1-bbolt", bolt, "", 1, o.Changes)
	if err != nil {
		return fmt.Errorf("end to end, bbolt after PostgreSQL: %w", err)
	}
	res.PGBoltRerunEPS, res.PGBoltRerunCPU = b.rate, b.cpuUS
	return nil
}

// storeLatency is the latency phase with the PostgreSQL store.
func (h *harness) storeLatency(ctx context.Context, res *Result) error {
	h.logf("latency at %d changes/s for %s, the queue in PostgreSQL", h.o.Rate, h.o.Duration)
	r, err := h.latencyOn(ctx, "latency-pg", "latency")
	if err != nil {
		return fmt.Errorf("latency, PostgreSQL store: %w", err)
	}
	res.PGOfferedEPS, res.PGP50MS, res.PGP99MS, res.PGP999MS = r.offered, r.p50, r.p99, r.p999
	res.PGPeakRSSMB = max(res.PGPeakRSSMB, r.rssMB)
	return nil
}

// storeBacklog queues -backlog deliveries in the PostgreSQL store while
// the receiver hangs and measures what its tables grew by, then lets
// them drain and counts the rows retention left.
func (h *harness) storeBacklog(ctx context.Context, res *Result) error {
	const schema = "backlog"
	n := h.o.Backlog
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return err
	}
	defer h.dropSlot(ctx, slot)
	hooks := []webhook{{name: "hb", path: "/hold", timeoutMS: 300000, retryMode: "test"}}
	h.rc.reset(false)
	release := h.rc.holdRequests()
	defer release()
	p, err := h.launchOn(ctx, "backlog-pg", slot, schema, hooks, false)
	if err != nil {
		return err
	}
	defer p.stop()
	before, err := h.storeBytes(ctx, schema)
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := h.insert(ctx, n, max(h.o.TxSize, 1000), 4, 0); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(n/500+120) * time.Second)
	for p.queued("hb") < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d deliveries queued: %s", p.queued("hb"), n, p.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.PGBacklogQueueEPS = float64(n) / time.Since(start).Seconds()
	after, err := h.storeBytes(ctx, schema)
	if err != nil {
		return err
	}
	res.PGBytesPerDelivery = float64(after-before) / float64(n)

	release()
	deadline = time.Now().Add(time.Duration(n/200+60) * time.Second)
	for p.queued("hb") != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d deliveries still queued: %s", p.queued("hb"), n, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The last outcomes, and the retention that goes with them, are
	// committed at the latest when walhook stops.
	p.stop()
	res.PGDeliveryRows, res.PGEventRows, err = h.storeRows(ctx, schema)
	return err
}

// storeBytes is pg_total_relation_size (heap, indexes, TOAST) summed over
// the tables of schema in the store database.
func (h *harness) storeBytes(ctx context.Context, schema string) (int64, error) {
	conn, err := pgx.Connect(ctx, h.storeDSN)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
		FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
		WHERE s.nspname = $1 AND c.relkind IN ('r', 'p')`, schema).Scan(&n)
	return n, err
}

// storeRows counts the deliveries and events rows of schema.
func (h *harness) storeRows(ctx context.Context, schema string) (deliveries, events int, err error) {
	conn, err := pgx.Connect(ctx, h.storeDSN)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.Background())
	s := pgx.Identifier{schema}.Sanitize()
	err = conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+s+`.deliveries), (SELECT count(*) FROM `+s+`.events)`).Scan(&deliveries, &events)
	return deliveries, events, err
}

// backendCPU follows the CPU time of the store database's backends (the
// connections walhook's store opens, and autovacuum's workers there)
// from /proc, sampled every 50 ms: a backend that exits between two
// samples is counted as of the last.
type backendCPU struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	start  map[int]float64 // CPU seconds of backends there at the start
	last   map[int]float64 // CPU seconds at the latest sample
}

// watchStoreBackends starts following the store database's backends.
func (h *harness) watchStoreBackends(ctx context.Context) (*backendCPU, error) {
	conn, err := pgx.Connect(ctx, h.cluster.DSN("postgres"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	b := &backendCPU{cancel: cancel, done: make(chan struct{}), last: map[int]float64{}}
	b.sample(ctx, conn, h.storeDB)
	b.start = b.last
	b.last = map[int]float64{}
	for pid, s := range b.start {
		b.last[pid] = s
	}
	go func() {
		defer close(b.done)
		defer conn.Close(context.Background())
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				b.sample(ctx, conn, h.storeDB)
			}
		}
	}()
	return b, nil
}

// sample reads the CPU time of every backend of db.
func (b *backendCPU) sample(ctx context.Context, conn *pgx.Conn, db string) {
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1`, db)
	if err != nil {
		return
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pid := range pids {
		if s, ok := procCPUSeconds(int(pid)); ok && s >= b.last[int(pid)] {
			b.last[int(pid)] = s
		}
	}
}

// stop takes a last sample and returns the CPU seconds the backends used
// since the watch started.
func (b *backendCPU) stop() float64 {
	b.mu.Lock()
	for pid := range b.last {
		if s, ok := procCPUSeconds(pid); ok && s >= b.last[pid] {
			b.last[pid] = s
		}
	}
	b.mu.Unlock()
	b.cancel()
	<-b.done
	var total float64
	for pid, s := range b.last {
		total += s - b.start[pid]
	}
	return total
}

// procCPUSeconds is the user and system CPU time of process pid.
func procCPUSeconds(pid int) (float64, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which is in parentheses.
	_, rest, ok := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, false
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, true // USER_HZ is 100 on Linux
}

// instancesReceiverDelay is the receiver's delay in the -instances phase:
// a slow receiver, so that deliveries are bound by the workers' waiting,
// which more instances could share, not by the CPU.
const instancesReceiverDelay = 50 * time.Millisecond

// storeInstances runs 1 to -instances walhooks on one PostgreSQL store
// (one schema per count) with a receiver that takes 50 ms per request,
// and records the deliveries per second of each count. One leads (reads
// the slot); every one delivers its share of the partitions.
func (h *harness) storeInstances(ctx context.Context, res *Result) error {
	rc, err := newReceiver(instancesReceiverDelay)
	if err != nil {
		return err
	}
	defer rc.close()
	saved := h.rc
	h.rc = rc
	defer func() { h.rc = saved }()
	n := min(h.o.Changes, 2000)
	for k := 1; k <= h.o.Instances; k++ {
		h.logf("%d walhook(s) on one PostgreSQL store, the receiver taking %s", k, instancesReceiverDelay)
		rate, err := h.instancesRun(ctx, k, n)
		if err != nil {
			return fmt.Errorf("%d instances: %w", k, err)
		}
		res.PGInstancesDPS = append(res.PGInstancesDPS, rate)
	}
	res.PGInstancesChanges = n
	return nil
}

// instancesRun starts k walhooks with one config on one schema, then
// writes n rows and returns the deliveries per second from the first 2xx
// to the last.
func (h *harness) instancesRun(ctx context.Context, k, n int) (float64, error) {
	schema := fmt.Sprintf("instances%d", k)
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return 0, err
	}
	defer h.dropSlot(ctx, slot)
	h.rc.reset(false)
	var procs []*process
	defer func() {
		// Standbys first, so that none takes over from the leader.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	for i := range k {
		phase := fmt.Sprintf("instances%d-%d", k, i+1)
		dir, admin, token, err := h.writeConfigOn(phase, slot, schema, oneHook)
		if err != nil {
			return 0, err
		}
		// The first leads; the others find the lock taken.
		ready := "/readyz"
		if i > 0 {
			ready = "/healthz"
		}
		p, err := h.startWalhookUntil(ctx, dir, admin, token, phase, ready)
		if err != nil {
			return 0, err
		}
		procs = append(procs, p)
	}
	if err := waitShared(ctx, procs[0], k); err != nil {
		return 0, err
	}
	if _, err := h.insert(ctx, n, h.o.TxSize, 4, 0); err != nil {
		return 0, err
	}
	if err := h.waitReceived(ctx, procs[0], n, time.Duration(n/20+60)*time.Second); err != nil {
		return 0, err
	}
	first, last := h.rc.firstAt(), h.rc.lastAt()
	if !last.After(first) {
		return 0, fmt.Errorf("%d deliveries in no time", n)
	}
	return float64(n-1) / last.Sub(first).Seconds(), nil
}

// waitShared waits until k walhooks share the store, each holding its
// share of the partitions (at least an even split rounded down), as p's
// overview says: only then do they all deliver.
func waitShared(ctx context.Context, p *process, k int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var o struct {
			Instances []store.Instance `json:"instances"`
		}
		if resp, err := p.request("/api/overview"); err == nil {
			json.NewDecoder(resp.Body).Decode(&o)
			resp.Body.Close()
		}
		fair := 0
		for _, in := range o.Instances {
			if in.Parts >= store.Partitions/k {
				fair++
			}
		}
		if len(o.Instances) == k && fair == k {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d walhooks did not share the store's partitions within a minute: %+v", k, o.Instances)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
