// Package bench is walhook bench: walhook end to end against the
// machine's own ceilings, with its latency, memory and restart figures.
// It runs walhook as subprocesses through the hidden bench-helper
// subcommand (Helper) and writes the workload to a PostgreSQL of its own.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"walhook/deliver"
	"walhook/internal/pgcluster"
)

// Options are walhook bench's flags, plus what tests inject.
type Options struct {
	Changes     int
	TxSize      int
	Webhooks    int
	RowWidth    int
	Latency     time.Duration // the receiver's delay per request
	Concurrency int
	Rate        int           // changes/s offered in the latency phase
	Duration    time.Duration // of the latency phase
	Backlog     int
	BigTx       int
	Backfill    int
	CPUProfile  string // prefix of the walhook processes' CPU profiles
	MemProfile  string // prefix of their heap profiles, taken at the peak
	Store       string // "postgres": the PostgreSQL store's phases beside bbolt's; "" or "bbolt": none
	Instances   int    // with Store "postgres": 1 to Instances walhooks on one store, a 50 ms receiver (0: skip)
	When        bool   // the phases of a webhook's when filter
	Batch       []int  // batch_size of each -batch phase (none: skip); the latency phase takes the largest

	Ceiling time.Duration      // of each HTTP ceiling measurement; default 3s
	Exe     string             // the walhook binary to run; default this executable
	SelfExe string             // the binary with this bench's Helper; default this executable
	Cluster *pgcluster.Cluster // reused when set (tests); default a new one
}

// Validate reports sizes the bench cannot run with.
func (o Options) Validate() error {
	if o.Changes < 1 || o.TxSize < 1 || o.Webhooks < 1 || o.RowWidth < 0 || o.Concurrency < 1 || o.Rate < 1 || o.Backlog < 0 || o.BigTx < 0 || o.Backfill < 0 {
		return errors.New("sizes must be positive")
	}
	switch o.Store {
	case "", StoreBolt, StorePostgres:
	default:
		return fmt.Errorf("-store: must be %s or %s (got %q)", StoreBolt, StorePostgres, o.Store)
	}
	if o.Instances < 0 || o.Instances > 0 && o.Store != StorePostgres {
		return errors.New("-instances: wants -store postgres and a count ≥ 1")
	}
	for _, n := range o.Batch {
		if n < 2 || n > deliver.MaxBatchSize {
			return fmt.Errorf("-batch: each size must be 2..%d (got %d)", deliver.MaxBatchSize, n)
		}
	}
	return nil
}

// harness is one run's shared state.
type harness struct {
	o        Options
	progress io.Writer
	cluster  *pgcluster.Cluster
	dsn      string
	tmp      string
	rc       *receiver
	payload  string
	nextID   int64 // next row id to insert
	slotSeq  int
	prefix   string // of slot names: slots are cluster-wide
	peakRSS  float64
	peakAnon float64
	sample   []byte // a request body walhook sent
	storeDB  string // -store postgres: the store's database
	storeDSN string
}

// Run runs every phase o asks for and writes its progress to progress.
func Run(ctx context.Context, o Options, progress io.Writer) (*Result, error) {
	if o.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Exe = exe
	}
	if o.SelfExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.SelfExe = exe
	}
	if o.Ceiling <= 0 {
		o.Ceiling = 3 * time.Second
	}
	h := &harness{o: o, progress: progress, nextID: 1}
	tmp, err := os.MkdirTemp("", "walhook-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	h.tmp = tmp
	res := &Result{Load: loadavg()}
	h.logf("machine: %s", machine())

	h.cluster = o.Cluster
	if h.cluster == nil {
		h.logf("starting PostgreSQL")
		c, err := pgcluster.Start(ctx)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		h.cluster = c
	}
	if err := h.setUp(ctx); err != nil {
		return nil, err
	}
	defer h.rc.close()
	if err := h.phases(ctx, res); err != nil {
		return nil, err
	}
	res.Load += " → " + loadavg()
	return res, nil
}

// setUp creates the bench's database, its table and publication, and
// starts the receiver.
func (h *harness) setUp(ctx context.Context) error {
	db := fmt.Sprintf("bench%d_%d", os.Getpid(), time.Now().UnixNano()%1e12)
	h.prefix = db
	var err error
	if h.dsn, err = h.cluster.CreateDatabase(ctx, db); err != nil {
		return err
	}
	if err := h.exec(ctx, `CREATE TABLE bench (id bigint PRIMARY KEY, payload text NOT NULL);
		CREATE PUBLICATION bench FOR TABLE bench`); err != nil {
		return err
	}
	h.payload = randomText(h.o.RowWidth)
	if h.o.Store == StorePostgres {
		if err := h.setUpStore(ctx); err != nil {
			return err
		}
	}
	h.rc, err = newReceiver(h.o.Latency)
	return err
}

// phases runs the throughput and latency phases, then those o asks for.
func (h *harness) phases(ctx context.Context, res *Result) error {
	o := h.o
	if err := h.throughput(ctx, res); err != nil {
		return err
	}
	h.logf("latency at %d changes/s for %s", o.Rate, o.Duration)
	if err := h.latencyPhase(ctx, res); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if len(o.Batch) > 0 {
		if err := h.batchLatency(ctx, res); err != nil {
			return err
		}
	}
	res.PeakRSSMB, res.PeakAnonMB = h.peakRSS, h.peakAnon
	res.Ratio = res.E2EEPS / min(res.DecodeCeilingEPS, res.HTTPCeilingRPS)
	res.RatioPipeline = res.PipelineEPS / min(res.DecodeCeilingEPS, res.HTTPCeilingRPS)
	res.RatioPipeline4 = res.Pipeline4RPS / res.HTTPCeiling4RPS
	res.Ratio4 = res.E2E4RPS / res.HTTPCeiling4RPS

	if o.Store == StorePostgres {
		if err := h.storeLatency(ctx, res); err != nil {
			return err
		}
		res.PGRatioEPS = res.PGE2EEPS / ((res.E2EEPS + res.PGBoltRerunEPS) / 2)
		res.PGRatioCPU = res.PGE2ECPU / ((res.E2ECPU + res.PGBoltRerunCPU) / 2)
		res.PGRatioP99 = res.PGP99MS / res.P99MS
	}

	if o.Backlog > 0 {
		h.logf("backlog of %d deliveries", o.Backlog)
		if err := h.backlogPhase(ctx, res); err != nil {
			return fmt.Errorf("backlog: %w", err)
		}
		if o.Store == StorePostgres {
			h.logf("backlog of %d deliveries, the queue in PostgreSQL", o.Backlog)
			if err := h.storeBacklog(ctx, res); err != nil {
				return fmt.Errorf("backlog, PostgreSQL store: %w", err)
			}
			res.PGRatioBytes = res.PGBytesPerDelivery / res.StoreBytesPerDelivery
		}
	}
	if o.Instances > 0 {
		if err := h.storeInstances(ctx, res); err != nil {
			return err
		}
	}
	if o.When {
		h.logf("when: %d changes each with no filter, one that passes and one that rejects", o.Changes)
		if err := h.whenPhase(ctx, res); err != nil {
			return err
		}
	}
	if o.Backfill > 0 {
		h.logf("a backfill of the table, %d rows added, under the latency load", o.Backfill)
		if err := h.backfillPhase(ctx, res); err != nil {
			return fmt.Errorf("backfill: %w", err)
		}
	}
	if o.BigTx > 0 {
		h.logf("one transaction of %d rows", o.BigTx)
		if err := h.bigTxPhase(ctx, res); err != nil {
			return fmt.Errorf("big transaction: %w", err)
		}
	}
	return nil
}

// throughputSlots are the slots of the throughput phases: the workload is
// written once and each reader has its own slot.
type throughputSlots struct {
	decode, e2e1, e2e4, pipe1, pipe4 string
	pg, bolt                         string // -store postgres: its end to end, then bbolt's again
	batch                            batchSlots
}

// throughput writes the workload and measures the decode ceiling, then
// walhook and the no-store floor with one webhook and with -webhooks,
// each between HTTP ceilings.
func (h *harness) throughput(ctx context.Context, res *Result) error {
	o := h.o
	s := throughputSlots{decode: h.slotName(), e2e1: h.slotName(), e2e4: h.slotName(), pipe1: h.slotName(), pipe4: h.slotName()}
	names := []string{s.decode, s.e2e1, s.e2e4, s.pipe1, s.pipe4}
	if o.Store == StorePostgres {
		s.pg, s.bolt = h.slotName(), h.slotName()
		names = append(names, s.pg, s.bolt)
	}
	s.batch = h.newBatchSlots()
	names = append(names, s.batch.names()...)
	for _, name := range names {
		if err := h.createSlot(ctx, name); err != nil {
			return err
		}
	}
	h.logf("writing %d rows in transactions of %d", o.Changes, o.TxSize)
	took, err := h.insert(ctx, o.Changes, o.TxSize, 8, 0)
	if err != nil {
		return err
	}
	res.WriteEPS = float64(o.Changes) / took.Seconds()

	h.logf("decode ceiling: a bare pglogrepl reader")
	if res.DecodeCeilingEPS, err = h.decodeCeiling(ctx, s.decode, o.Changes); err != nil {
		return fmt.Errorf("decode ceiling: %w", err)
	}
	h.dropSlot(ctx, s.decode)

	// The machine's speed drifts (2-3× between runs here): each
	// end-to-end phase is compared with the mean of HTTP ceilings measured
	// just before and just after it.
	c1, c2, err := h.oneWebhook(ctx, res, s)
	if err != nil {
		return err
	}
	if o.Store == StorePostgres {
		if err := h.storeEndToEnd(ctx, res, s.pg, s.bolt); err != nil {
			return err
		}
	}
	c3, c4, err := h.manyWebhooks(ctx, res, s)
	if err != nil {
		return err
	}
	if len(o.Batch) > 0 {
		if err := h.batchThroughput(ctx, res, s.batch); err != nil {
			return err
		}
	}
	res.HTTPCeilingRuns = []float64{c1, c2, c3, c4}
	res.HTTPCeilingRPS, res.HTTPCeiling4RPS = (c1+c2)/2, (c3+c4)/2
	res.BodyBytes = len(h.sample)
	return nil
}

// oneWebhook measures walhook with one webhook between two HTTP ceilings,
// which it returns, then the ceiling with the client in its own process
// and the no-store floor.
func (h *harness) oneWebhook(ctx context.Context, res *Result, s throughputSlots) (before, after float64, err error) {
	o := h.o
	h.logf("HTTP ceiling: %d workers", o.Concurrency)
	before = h.httpCeiling(ctx, o.Concurrency, o.Ceiling)
	h.logf("walhook end to end, 1 webhook")
	r, err := h.endToEnd(ctx, "e2e1", s.e2e1, 1, o.Changes)
	if err != nil {
		return 0, 0, fmt.Errorf("end to end: %w", err)
	}
	res.E2EEPS, res.E2ECPU, res.E2ESteadyCPU = r.rate, r.cpuUS, r.steadyCPUUS
	res.E2EFirstMS = float64(r.first.Microseconds()) / 1000
	h.logf("HTTP ceiling: %d and %d workers", o.Concurrency, o.Concurrency*o.Webhooks)
	after = h.httpCeiling(ctx, o.Concurrency, o.Ceiling)
	h.logf("HTTP ceiling: %d workers, the client in its own process", o.Concurrency)
	if res.HTTPCeilingOwnRPS, err = h.httpCeilingProc(ctx, o.Concurrency, o.Ceiling); err != nil {
		return 0, 0, err
	}
	res.RatioOwn = res.E2EEPS / min(res.DecodeCeilingEPS, res.HTTPCeilingOwnRPS)
	h.logf("pipeline floor: a bare reader and the ceiling's client in a process of their own")
	if res.PipelineEPS, err = h.pipelineFloor(ctx, s.pipe1, o.Changes, 1); err != nil {
		return 0, 0, err
	}
	h.dropSlot(ctx, s.pipe1)
	return before, after, nil
}

// manyWebhooks measures walhook and the no-store floor with -webhooks
// webhooks between two HTTP ceilings of as many workers, which it returns.
func (h *harness) manyWebhooks(ctx context.Context, res *Result, s throughputSlots) (before, after float64, err error) {
	o := h.o
	before = h.httpCeiling(ctx, o.Concurrency*o.Webhooks, o.Ceiling)
	h.logf("walhook end to end, %d webhooks", o.Webhooks)
	r, err := h.endToEnd(ctx, "e2e4", s.e2e4, o.Webhooks, o.Changes)
	if err != nil {
		return 0, 0, fmt.Errorf("end to end, %d webhooks: %w", o.Webhooks, err)
	}
	res.E2E4RPS, res.E2E4CPU = r.rate, r.cpuUS
	h.logf("pipeline floor, %d webhooks", o.Webhooks)
	if res.Pipeline4RPS, err = h.pipelineFloor(ctx, s.pipe4, o.Changes, o.Webhooks); err != nil {
		return 0, 0, err
	}
	h.dropSlot(ctx, s.pipe4)
	h.logf("HTTP ceiling: %d workers", o.Concurrency*o.Webhooks)
	after = h.httpCeiling(ctx, o.Concurrency*o.Webhooks, o.Ceiling)
	return before, after, nil
}

// logf writes one line of progress.
func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, "bench: "+format+"\n", args...)
}

// slotName is a new slot name, unique in the cluster.
func (h *harness) slotName() string {
	h.slotSeq++
	return fmt.Sprintf("%s_s%d", h.prefix, h.slotSeq)
}
