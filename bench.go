package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"walhook/cdc"
	"walhook/internal/pgcluster"
)

// benchOptions are walhook bench's flags, plus what tests inject.
type benchOptions struct {
	changes     int
	txSize      int
	webhooks    int
	rowWidth    int
	latency     time.Duration // the receiver's delay per request
	concurrency int
	rate        int           // changes/s offered in the latency phase
	duration    time.Duration // of the latency phase
	backlog     int
	bigTx       int
	backfill    int
	cpuprofile  string // prefix of the walhook processes' CPU profiles
	memprofile  string // prefix of their heap profiles, taken at the peak

	ceiling time.Duration      // of each HTTP ceiling measurement; default 3s
	exe     string             // the walhook binary to run; default this executable
	selfExe string             // the binary with this bench's -ceiling-client; default this executable
	cluster *pgcluster.Cluster // reused when set (tests); default a new one
}

// benchResult is what walhook bench measured; -json prints it.
type benchResult struct {
	DecodeCeilingEPS float64   `json:"decode_ceiling_eps"`
	HTTPCeilingRPS   float64   `json:"http_ceiling_rps"`   // with -concurrency workers, as one webhook: the mean of the runs just before and just after the 1-webhook phase
	HTTPCeiling4RPS  float64   `json:"http_ceiling_4_rps"` // with -webhooks × -concurrency workers, around the other phase
	HTTPCeilingRuns  []float64 `json:"http_ceiling_runs"`  // the four runs: before and after each end-to-end phase
	// HTTPCeilingOwnRPS is the -concurrency ceiling with the client in a
	// process of its own, as walhook is, measured once after the 1-webhook
	// phase; for information: the targets' ratios use the ones above.
	HTTPCeilingOwnRPS float64 `json:"http_ceiling_own_process_rps"`
	RatioOwn          float64 `json:"ratio_own_process"` // e2e_eps / min(decode, http_ceiling_own_process_rps)
	// PipelineEPS is walhook's work without walhook: a bare reader of the
	// same changes and the ceiling's client in a process of their own,
	// one request per insert, no store; measured like e2e_eps, after the
	// 1-webhook phase. For information: no walhook can beat it here.
	PipelineEPS    float64 `json:"pipeline_floor_eps"`
	RatioPipeline  float64 `json:"ratio_pipeline_floor"`            // pipeline_floor_eps / min(decode, http_ceiling_rps)
	Pipeline4RPS   float64 `json:"pipeline_floor_4_webhooks_rps"`   // the same, each insert posted once per webhook
	RatioPipeline4 float64 `json:"ratio_pipeline_floor_4_webhooks"` // pipeline_floor_4_webhooks_rps / http_ceiling_4_rps
	E2EEPS         float64 `json:"e2e_eps"`                         // from walhook's first 2xx to its last
	E2E4RPS        float64 `json:"e2e_4_webhooks_rps"`
	E2EFirstMS     float64 `json:"e2e_first_delivery_ms"`         // walhook's start → its first 2xx, in the 1-webhook phase
	E2ECPU         float64 `json:"e2e_cpu_us_per_event"`          // walhook's CPU time (user+system) per delivery: steadier than rates on a busy machine
	E2E4CPU        float64 `json:"e2e_4_webhooks_cpu_us_per_req"` // the same with -webhooks webhooks
	P50MS          float64 `json:"p50_ms"`
	P99MS          float64 `json:"p99_ms"`
	P999MS         float64 `json:"p999_ms"`
	OfferedEPS     float64 `json:"latency_offered_eps"` // the load actually offered in the latency phase
	PeakRSSMB      float64 `json:"peak_rss_mb"`         // walhook's VmHWM over the end-to-end and latency phases
	PeakAnonMB     float64 `json:"peak_anon_mb"`        // of which anonymous (heap): the rest is the store's memory map
	Ratio          float64 `json:"ratio"`               // e2e_eps / min(decode, HTTP ceiling)
	Ratio4         float64 `json:"ratio_4_webhooks"`    // e2e_4_webhooks_rps / http_ceiling_4_rps
	WriteEPS       float64 `json:"write_eps"`           // rows/s the bench wrote the workload at
	BodyBytes      int     `json:"body_bytes"`          // of one request body

	BacklogN               int     `json:"backlog,omitempty"`
	BacklogQueueEPS        float64 `json:"backlog_queue_eps,omitempty"` // deliveries/s queued with the receiver down
	BacklogRSSMB           float64 `json:"backlog_rss_mb,omitempty"`
	BacklogAnonMB          float64 `json:"backlog_anon_mb,omitempty"`
	StoreBytesPerDelivery  float64 `json:"store_bytes_per_delivery,omitempty"`
	BacklogFirstDeliveryMS float64 `json:"backlog_first_delivery_ms,omitempty"` // process start → first 2xx after a restart
	BacklogDrainEPS        float64 `json:"backlog_drain_eps,omitempty"`
	BacklogRestartRSSMB    float64 `json:"backlog_restart_rss_mb,omitempty"`
	BacklogRestartAnonMB   float64 `json:"backlog_restart_anon_mb,omitempty"`

	BigTxRows   int     `json:"big_tx_rows,omitempty"`
	BigTxEPS    float64 `json:"big_tx_eps,omitempty"` // commit → last 2xx
	BigTxRSSMB  float64 `json:"big_tx_rss_mb,omitempty"`
	BigTxAnonMB float64 `json:"big_tx_anon_mb,omitempty"`

	// A backfill of the whole table (-backfill rows more than the phases
	// before left) for one of two webhooks, under the latency load.
	BackfillRows      int     `json:"backfill_rows,omitempty"`
	BackfillReadEPS   float64 `json:"backfill_read_eps,omitempty"`   // rows queued per second, from the request to the end of the read
	BackfillDrainEPS  float64 `json:"backfill_drain_eps,omitempty"`  // the backfilled webhook's deliveries (its rows and changes) per second, from the request to its last
	BackfillOwnP99MS  float64 `json:"backfill_own_p99_ms,omitempty"` // the live changes' commit → receipt at the backfilled webhook, which queue behind its rows
	BackfillOwnMaxMS  float64 `json:"backfill_own_max_ms,omitempty"`
	BackfillOtherP99  float64 `json:"backfill_other_p99_ms,omitempty"` // the same at the other webhook
	BackfillOtherMaxM float64 `json:"backfill_other_max_ms,omitempty"`

	Load string `json:"load"` // /proc/loadavg before and after
}

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := benchOptions{}
	fs.IntVar(&o.changes, "changes", 20000, "rows inserted for the throughput phases")
	fs.IntVar(&o.txSize, "tx-size", 10, "rows per transaction")
	fs.IntVar(&o.webhooks, "webhooks", 4, "webhooks on the same table in the second end-to-end phase")
	fs.IntVar(&o.rowWidth, "row-width", 300, "bytes of payload text per row")
	fs.DurationVar(&o.latency, "latency", 0, "the receiver's delay per request")
	fs.IntVar(&o.concurrency, "concurrency", 16, "workers per webhook")
	fs.IntVar(&o.rate, "rate", 2000, "changes/s offered in the latency phase")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of the latency phase")
	fs.IntVar(&o.backlog, "backlog", 10000, "deliveries queued with the receiver down, then drained after a restart (0: skip)")
	fs.IntVar(&o.bigTx, "big-tx", 0, "rows of one big transaction (0: skip)")
	fs.IntVar(&o.backfill, "backfill", 0, "rows added to the table before a backfill of it runs under the latency load (0: skip)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write walhook's CPU profile of each phase to FILE.<phase>")
	fs.StringVar(&o.memprofile, "memprofile", "", "write walhook's heap profile at the peak of each phase to FILE.<phase>")
	fs.StringVar(&o.exe, "exe", "", "the walhook binary to measure (default: this one), to compare builds under the same harness")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	serve := fs.String("serve", "", "internal: run walhook with this config, as bench's subprocess")
	ceilingURL := fs.String("ceiling-client", "", "internal: send the HTTP ceiling's load to this URL for -duration with -concurrency workers, as bench's subprocess")
	ceilingBody := fs.String("ceiling-body", "", "internal: the file with the body -ceiling-client sends")
	pipelineDSN := fs.String("pipeline-dsn", "", "internal: with -pipeline-slot, the database -ceiling-client streams")
	pipelineSlot := fs.String("pipeline-slot", "", "internal: make -ceiling-client send one request per insert read from this slot, for -changes inserts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *serve != "" {
		return benchServe(ctx, *serve, o.concurrency, o.cpuprofile, o.memprofile, stderr)
	}
	if *ceilingURL != "" && *pipelineSlot != "" {
		return pipelineClient(ctx, *ceilingURL, *ceilingBody, *pipelineDSN, *pipelineSlot, o.concurrency, o.webhooks, o.changes)
	}
	if *ceilingURL != "" {
		return ceilingClient(ctx, *ceilingURL, *ceilingBody, o.concurrency, o.duration, stdout)
	}
	if o.changes < 1 || o.txSize < 1 || o.webhooks < 1 || o.rowWidth < 0 || o.concurrency < 1 || o.rate < 1 || o.backlog < 0 || o.bigTx < 0 || o.backfill < 0 {
		fmt.Fprintln(stderr, "bench: sizes must be positive")
		return errUsage
	}
	res, err := runBench(ctx, o, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printBench(stdout, o, res)
	return nil
}

// benchServe is the walhook that bench measures: `walhook run` with the
// worker count and an optional CPU profile.
func benchServe(ctx context.Context, path string, concurrency int, cpuprofile, memprofile string, stderr io.Writer) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		return err
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if memprofile != "" {
		stop := make(chan struct{})
		defer close(stop)
		go peakHeapProfile(memprofile, stop)
		// Allocations are cumulative: the profile at exit covers the phase.
		defer writeHeapProfile(memprofile + ".end")
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := NewApp(cfg, AppOptions{Logger: logger, Concurrency: concurrency})
	if err != nil {
		return err
	}
	return app.Run(ctx)
}

// peakHeapProfile rewrites the heap profile at path whenever the heap in
// use grows a tenth past its largest yet, so the file ends up describing
// the peak.
func peakHeapProfile(path string, stop <-chan struct{}) {
	var peak uint64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse < peak+peak/10 {
			continue
		}
		peak = ms.HeapInuse
		writeHeapProfile(path)
	}
}

func writeHeapProfile(path string) {
	if f, err := os.Create(path); err == nil {
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
}

// bench is one run's shared state.
type bench struct {
	o        benchOptions
	progress io.Writer
	cluster  *pgcluster.Cluster
	dsn      string
	tmp      string
	rc       *benchReceiver
	payload  string
	nextID   int64 // next row id to insert
	slotSeq  int
	prefix   string // of slot names: slots are cluster-wide
	peakRSS  float64
	peakAnon float64
	sample   []byte // a request body walhook sent
}

func runBench(ctx context.Context, o benchOptions, progress io.Writer) (*benchResult, error) {
	if o.exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.exe = exe
	}
	if o.selfExe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.selfExe = exe
	}
	if o.ceiling <= 0 {
		o.ceiling = 3 * time.Second
	}
	b := &bench{o: o, progress: progress, nextID: 1}
	tmp, err := os.MkdirTemp("", "walhook-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	b.tmp = tmp
	res := &benchResult{Load: loadavg()}
	b.logf("machine: %s", machine())

	b.cluster = o.cluster
	if b.cluster == nil {
		b.logf("starting PostgreSQL")
		c, err := pgcluster.Start(ctx)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		b.cluster = c
	}
	db := fmt.Sprintf("bench%d_%d", os.Getpid(), time.Now().UnixNano()%1e12)
	b.prefix = db
	if b.dsn, err = b.cluster.CreateDatabase(ctx, db); err != nil {
		return nil, err
	}
	if err := b.exec(ctx, `CREATE TABLE bench (id bigint PRIMARY KEY, payload text NOT NULL);
		CREATE PUBLICATION bench FOR TABLE bench`); err != nil {
		return nil, err
	}
	b.payload = randomText(o.rowWidth)
	if b.rc, err = newBenchReceiver(o.latency); err != nil {
		return nil, err
	}
	defer b.rc.close()

	// The throughput workload is written once; each reader has its own slot.
	decodeSlot, e1Slot, e4Slot, pipe1Slot, pipe4Slot := b.slotName(), b.slotName(), b.slotName(), b.slotName(), b.slotName()
	for _, s := range []string{decodeSlot, e1Slot, e4Slot, pipe1Slot, pipe4Slot} {
		if err := b.createSlot(ctx, s); err != nil {
			return nil, err
		}
	}
	b.logf("writing %d rows in transactions of %d", o.changes, o.txSize)
	took, err := b.insert(ctx, o.changes, o.txSize, 8, 0)
	if err != nil {
		return nil, err
	}
	res.WriteEPS = float64(o.changes) / took.Seconds()

	b.logf("decode ceiling: a bare pglogrepl reader")
	if res.DecodeCeilingEPS, err = b.decodeCeiling(ctx, decodeSlot, o.changes); err != nil {
		return nil, fmt.Errorf("decode ceiling: %w", err)
	}
	b.dropSlot(ctx, decodeSlot)

	// The machine's speed drifts (2-3× between runs here): each
	// end-to-end phase is compared with the mean of HTTP ceilings measured
	// just before and just after it.
	b.logf("HTTP ceiling: %d workers", o.concurrency)
	c1 := b.httpCeiling(ctx, o.concurrency, o.ceiling)
	b.logf("walhook end to end, 1 webhook")
	var first time.Duration
	if res.E2EEPS, first, res.E2ECPU, err = b.endToEnd(ctx, "e2e1", e1Slot, 1, o.changes); err != nil {
		return nil, fmt.Errorf("end to end: %w", err)
	}
	res.E2EFirstMS = float64(first.Microseconds()) / 1000
	b.logf("HTTP ceiling: %d and %d workers", o.concurrency, o.concurrency*o.webhooks)
	c2 := b.httpCeiling(ctx, o.concurrency, o.ceiling)
	b.logf("HTTP ceiling: %d workers, the client in its own process", o.concurrency)
	if res.HTTPCeilingOwnRPS, err = b.httpCeilingProc(ctx, o.concurrency, o.ceiling); err != nil {
		return nil, err
	}
	res.RatioOwn = res.E2EEPS / min(res.DecodeCeilingEPS, res.HTTPCeilingOwnRPS)
	b.logf("pipeline floor: a bare reader and the ceiling's client in a process of their own")
	if res.PipelineEPS, err = b.pipelineFloor(ctx, pipe1Slot, o.changes, 1); err != nil {
		return nil, err
	}
	b.dropSlot(ctx, pipe1Slot)
	c3 := b.httpCeiling(ctx, o.concurrency*o.webhooks, o.ceiling)
	b.logf("walhook end to end, %d webhooks", o.webhooks)
	if res.E2E4RPS, _, res.E2E4CPU, err = b.endToEnd(ctx, "e2e4", e4Slot, o.webhooks, o.changes); err != nil {
		return nil, fmt.Errorf("end to end, %d webhooks: %w", o.webhooks, err)
	}
	b.logf("pipeline floor, %d webhooks", o.webhooks)
	if res.Pipeline4RPS, err = b.pipelineFloor(ctx, pipe4Slot, o.changes, o.webhooks); err != nil {
		return nil, err
	}
	b.dropSlot(ctx, pipe4Slot)
	b.logf("HTTP ceiling: %d workers", o.concurrency*o.webhooks)
	c4 := b.httpCeiling(ctx, o.concurrency*o.webhooks, o.ceiling)
	res.HTTPCeilingRuns = []float64{c1, c2, c3, c4}
	res.HTTPCeilingRPS, res.HTTPCeiling4RPS = (c1+c2)/2, (c3+c4)/2
	res.BodyBytes = len(b.sample)

	b.logf("latency at %d changes/s for %s", o.rate, o.duration)
	if err := b.latencyPhase(ctx, res); err != nil {
		return nil, fmt.Errorf("latency: %w", err)
	}
	res.PeakRSSMB, res.PeakAnonMB = b.peakRSS, b.peakAnon
	res.Ratio = res.E2EEPS / min(res.DecodeCeilingEPS, res.HTTPCeilingRPS)
	res.RatioPipeline = res.PipelineEPS / min(res.DecodeCeilingEPS, res.HTTPCeilingRPS)
	res.RatioPipeline4 = res.Pipeline4RPS / res.HTTPCeiling4RPS
	res.Ratio4 = res.E2E4RPS / res.HTTPCeiling4RPS

	if o.backlog > 0 {
		b.logf("backlog of %d deliveries", o.backlog)
		if err := b.backlogPhase(ctx, res); err != nil {
			return nil, fmt.Errorf("backlog: %w", err)
		}
	}
	if o.backfill > 0 {
		b.logf("a backfill of the table, %d rows added, under the latency load", o.backfill)
		if err := b.backfillPhase(ctx, res); err != nil {
			return nil, fmt.Errorf("backfill: %w", err)
		}
	}
	if o.bigTx > 0 {
		b.logf("one transaction of %d rows", o.bigTx)
		if err := b.bigTxPhase(ctx, res); err != nil {
			return nil, fmt.Errorf("big transaction: %w", err)
		}
	}
	res.Load += " → " + loadavg()
	return res, nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

func (b *bench) slotName() string {
	b.slotSeq++
	return fmt.Sprintf("%s_s%d", b.prefix, b.slotSeq)
}

func (b *bench) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, b.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, stmt := range strings.Split(sql, ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(stmt), err)
		}
	}
	return nil
}

func replicationConn(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["replication"] = "database"
	return pgconn.ConnectConfig(ctx, pc)
}

// createSlot creates a pgoutput slot now, so it streams every change
// written after.
func (b *bench) createSlot(ctx context.Context, name string) error {
	conn, err := replicationConn(ctx, b.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = pglogrepl.CreateReplicationSlot(ctx, conn, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	return err
}

// dropSlot drops a slot once its last reader let go, so it keeps no WAL.
func (b *bench) dropSlot(ctx context.Context, name string) {
	conn, err := pgx.Connect(ctx, b.dsn)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	for range 50 {
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.logf("could not drop slot %s", name)
}

// insert writes n rows in transactions of txSize over conns connections
// and returns how long that took. With pace > 0 it offers a steady load:
// transaction i starts no earlier than i × pace after the first.
func (b *bench) insert(ctx context.Context, n, txSize, conns int, pace time.Duration) (time.Duration, error) {
	first := b.nextID
	b.nextID += int64(n)
	var next atomic.Int64
	txs := int64((n + txSize - 1) / txSize)
	errs := make(chan error, conns)
	start := time.Now()
	if pace > 0 {
		start = start.Add(50 * time.Millisecond) // every writer connected first
	}
	for range conns {
		go func() {
			conn, err := pgx.Connect(ctx, b.dsn)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for {
				i := next.Add(1) - 1
				if i >= txs {
					errs <- nil
					return
				}
				if d := time.Until(start.Add(time.Duration(i) * pace)); pace > 0 && d > 0 {
					time.Sleep(d)
				}
				lo := first + i*int64(txSize)
				hi := min(lo+int64(txSize), first+int64(n)) - 1
				if _, err := conn.Exec(ctx, `INSERT INTO bench (id, payload) SELECT g, $3 FROM generate_series($1::bigint, $2::bigint) g`, lo, hi, b.payload); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var firstErr error
	for range conns {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return time.Since(start), firstErr
}

// decodeCeiling is the rows/s of a bare pglogrepl reader: parse every
// message, count the inserts, nothing else.
func (b *bench) decodeCeiling(ctx context.Context, slot string, want int) (float64, error) {
	start := time.Now()
	if err := streamInserts(ctx, b.dsn, slot, want, func(int) {}); err != nil {
		return 0, err
	}
	return float64(want) / time.Since(start).Seconds(), nil
}

// streamInserts is a bare pglogrepl reader: it streams slot, parses every
// message and calls each with the number of every insert, from 0, until
// want came.
func streamInserts(ctx context.Context, dsn, slot string, want int, each func(int)) error {
	conn, err := replicationConn(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'bench'"},
	})
	if err != nil {
		return err
	}
	// One deadline for the whole read, none per message.
	conn.Conn().SetReadDeadline(time.Now().Add(5 * time.Minute))
	n := 0
	for n < want {
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			return err
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if er, ok := msg.(*pgproto3.ErrorResponse); ok {
				return pgconn.ErrorResponseToPgError(er)
			}
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err == nil && pkm.ReplyRequested {
				pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pkm.ServerWALEnd})
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return err
			}
			m, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return err
			}
			if _, ok := m.(*pglogrepl.InsertMessage); ok {
				each(n)
				n++
			}
		}
	}
	return nil
}

// benchHook is one webhook of a walhook under test.
type benchHook struct {
	name, path string
	timeoutMS  int
	retryMode  string
}

// walhookProc is a walhook subprocess.
type walhookProc struct {
	cmd   *exec.Cmd
	dir   string
	admin string
	token string
	done  chan struct{}
	anon  atomic.Int64 // peak RssAnon in kB, sampled every 50 ms
}

func (b *bench) writeConfig(name, slot string, hooks []benchHook) (dir, admin, token string, err error) {
	dir = filepath.Join(b.tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", "", err
	}
	admin = ln.Addr().String()
	ln.Close()
	token = randomText(24)
	var sb strings.Builder
	fmt.Fprintf(&sb, "[postgres]\ndsn = %q\nslot = %q\npublication = \"bench\"\nmanage_publication = false\n", b.dsn, slot)
	fmt.Fprintf(&sb, "[store]\ndir = \"data\"\n[log]\ndir = \"logs\"\n[admin]\nlisten = %q\ntoken = %q\n", admin, token)
	for _, h := range hooks {
		fmt.Fprintf(&sb, "[[webhook]]\nname = %q\nurl = %q\nevents = [\"public.bench\"]\nsecret = \"whsec_%s\"\ntimeout_ms = %d\nretry_mode = %q\nmax_attempts = 8\n",
			h.name, b.rc.url+h.path, base64.StdEncoding.EncodeToString([]byte("bench-secret-bench-secret")), h.timeoutMS, h.retryMode)
	}
	return dir, admin, token, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(sb.String()), 0o600)
}

// startWalhook runs walhook with its config in dir and waits until it is
// ready; phase names the CPU profile.
func (b *bench) startWalhook(ctx context.Context, dir, admin, token, phase string) (*walhookProc, error) {
	args := []string{"bench", "-serve", filepath.Join(dir, "config.toml"), "-concurrency", strconv.Itoa(b.o.concurrency)}
	if b.o.cpuprofile != "" {
		args = append(args, "-cpuprofile", b.o.cpuprofile+"."+phase)
	}
	if b.o.memprofile != "" {
		args = append(args, "-memprofile", b.o.memprofile+"."+phase)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "walhook.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.o.exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &walhookProc{cmd: cmd, dir: dir, admin: admin, token: token, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	go p.sampleAnon()
	deadline := time.Now().Add(30 * time.Second)
	for p.get("/readyz") != http.StatusOK {
		select {
		case <-p.done:
			return nil, fmt.Errorf("walhook exited: %s", p.logTail())
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("walhook not ready after 30s: %s", p.logTail())
		}
	}
	return p, nil
}

func (p *walhookProc) request(path string) (*http.Response, error) {
	return p.call("GET", path)
}

func (p *walhookProc) call(method, path string) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+p.admin+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	return http.DefaultClient.Do(req)
}

// pendingSample is the start of a webhook's pending deliveries, with their
// attempts: what a stalled drain was waiting for.
func (p *walhookProc) pendingSample(hook string) string {
	resp, err := p.request("/api/webhooks/" + hook + "/deliveries?status=pending&limit=3")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return string(b)
}

func (p *walhookProc) get(path string) int {
	resp, err := p.request(path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// queued is walhook_queue_depth of a webhook, -1 when unknown.
func (p *walhookProc) queued(hook string) int {
	resp, err := p.request("/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	want := `walhook_queue_depth{webhook="` + hook + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return int(f)
		}
	}
	return -1
}

// rssMB is the process's peak resident set (VmHWM) in MB. It counts the
// pages of the store's memory map walhook touched, which the kernel can
// drop at will, as well as its heap: anonMB tells them apart.
func (p *walhookProc) rssMB() float64 { return float64(p.status("VmHWM")) / 1024 }

// anonMB is the peak of the anonymous resident memory (heap, stacks) seen.
func (p *walhookProc) anonMB() float64 {
	return float64(max(p.anon.Load(), p.status("RssAnon"))) / 1024
}

func (p *walhookProc) sampleAnon() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			if kb := p.status("RssAnon"); kb > p.anon.Load() {
				p.anon.Store(kb)
			}
		}
	}
}

// status is a kB field of /proc/<pid>/status, 0 when unknown.
func (p *walhookProc) status(field string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// stop ends walhook gracefully (SIGTERM), killing it after a minute.
func (p *walhookProc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.kill()
	}
}

func (p *walhookProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *walhookProc) logTail() string {
	raw, _ := os.ReadFile(filepath.Join(p.dir, "walhook.log"))
	if len(raw) > 2000 {
		raw = raw[len(raw)-2000:]
	}
	return strings.TrimSpace(string(raw))
}

// oneHook is the single webhook of the latency and big-transaction phases.
var oneHook = []benchHook{{name: "h1", path: "/h1", timeoutMS: 10000, retryMode: "production"}}

// launch writes a config for phase and starts walhook on slot with a reset
// receiver; keepLatency makes the receiver record commit → receipt times.
func (b *bench) launch(ctx context.Context, phase, slot string, hooks []benchHook, keepLatency bool) (*walhookProc, error) {
	dir, admin, token, err := b.writeConfig(phase, slot, hooks)
	if err != nil {
		return nil, err
	}
	b.rc.reset(keepLatency)
	return b.startWalhook(ctx, dir, admin, token, phase)
}

// endToEnd starts walhook on a slot holding want changes and returns the
// deliveries per second from its first 2xx to its last, the time from its
// start to the first 2xx, and its CPU microseconds per delivery (start
// included).
func (b *bench) endToEnd(ctx context.Context, phase, slot string, webhooks, want int) (rate float64, first time.Duration, cpuUS float64, err error) {
	var hooks []benchHook
	for i := range webhooks {
		hooks = append(hooks, benchHook{name: fmt.Sprintf("h%d", i+1), path: fmt.Sprintf("/h%d", i+1), timeoutMS: 10000, retryMode: "production"})
	}
	start := time.Now()
	p, err := b.launch(ctx, phase, slot, hooks, false)
	if err != nil {
		return 0, 0, 0, err
	}
	total := want * webhooks
	err = b.waitReceived(ctx, p, total, time.Duration(total/200+60)*time.Second)
	firstAt, last := b.rc.firstAt(), b.rc.lastAt()
	cpu := p.cpuSeconds()
	b.peakRSS, b.peakAnon = max(b.peakRSS, p.rssMB()), max(b.peakAnon, p.anonMB())
	p.stop()
	b.dropSlot(ctx, slot)
	if err != nil {
		return 0, 0, 0, err
	}
	if s := b.rc.sampleBody(); s != nil && b.sample == nil {
		b.sample = s
	}
	rate = float64(total) / last.Sub(start).Seconds()
	if last.After(firstAt) {
		rate = float64(total-1) / last.Sub(firstAt).Seconds()
	}
	return rate, firstAt.Sub(start), cpu * 1e6 / float64(total), nil
}

// cpuSeconds is the user and system CPU time walhook used so far.
func (p *walhookProc) cpuSeconds() float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	_, rest, ok := strings.Cut(string(raw), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// waitReceived waits until n distinct deliveries came.
func (b *bench) waitReceived(ctx context.Context, p *walhookProc, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for b.rc.count() < n {
		select {
		case <-p.done:
			return fmt.Errorf("walhook exited after %d of %d deliveries: %s", b.rc.count(), n, p.logTail())
		case <-ctx.Done():
			p.kill()
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("only %d of %d deliveries after %s: %s", b.rc.count(), n, timeout, p.logTail())
		}
	}
	return nil
}

// httpCeiling is the requests/s of a client set up like walhook's (a
// keep-alive transport with as many idle connections as workers) sending
// walhook's body (or, before walhook ran, one of its shape and size) with
// the same headers and signature to the same receiver, which does for
// each what it does for walhook's.
func (b *bench) httpCeiling(ctx context.Context, workers int, d time.Duration) float64 {
	b.rc.reset(false)
	n, took := ceilingLoad(ctx, b.rc.url+"/ceiling", b.ceilingBody(), workers, d)
	return float64(n) / took.Seconds()
}

// httpCeilingProc is httpCeiling with the client in a process of its own,
// as walhook is: this bench's binary with -ceiling-client.
func (b *bench) httpCeilingProc(ctx context.Context, workers int, d time.Duration) (float64, error) {
	path, err := b.ceilingBodyFile()
	if err != nil {
		return 0, err
	}
	b.rc.reset(false)
	out, err := exec.CommandContext(ctx, b.o.selfExe, "bench", "-ceiling-client", b.rc.url+"/ceiling", "-ceiling-body", path,
		"-concurrency", strconv.Itoa(workers), "-duration", d.String()).Output()
	if err != nil {
		return 0, fmt.Errorf("ceiling client: %w", err)
	}
	var r struct{ Requests, Seconds float64 }
	if err := json.Unmarshal(out, &r); err != nil || r.Seconds <= 0 {
		return 0, fmt.Errorf("ceiling client printed %q: %v", out, err)
	}
	return r.Requests / r.Seconds, nil
}

// ceilingBody is walhook's body or, before walhook ran, one of its shape
// and size.
func (b *bench) ceilingBody() []byte {
	if b.sample != nil {
		return b.sample
	}
	return b.bodyLike()
}

// ceilingBodyFile writes ceilingBody to a file for the client processes.
func (b *bench) ceilingBodyFile() (string, error) {
	path := filepath.Join(b.tmp, "ceiling-body")
	return path, os.WriteFile(path, b.ceilingBody(), 0o600)
}

// ceilingClient is -ceiling-client: the ceiling's load from this process,
// printed as JSON.
func ceilingClient(ctx context.Context, url, bodyPath string, workers int, d time.Duration, stdout io.Writer) error {
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		return err
	}
	n, took := ceilingLoad(ctx, url, body, workers, d)
	return json.NewEncoder(stdout).Encode(map[string]float64{"requests": float64(n), "seconds": took.Seconds()})
}

// ceilingLoad sends body to url from workers goroutines for d, with
// walhook's headers and signature, and counts the 2xx answers.
func ceilingLoad(ctx context.Context, url string, body []byte, workers int, d time.Duration) (int64, time.Duration) {
	c := newCeilingSender(url, body, workers)
	defer c.close()
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				if c.send(ctx, fmt.Sprintf("%016X-%08X", w, i), i) {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return n.Load(), time.Since(start)
}

// ceilingSender is the ceilings' client: a keep-alive transport with as
// many idle connections as workers, as walhook's.
type ceilingSender struct {
	url       string
	body, key []byte
	t         *http.Transport
	client    *http.Client
}

func newCeilingSender(url string, body []byte, workers int) *ceilingSender {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = workers
	return &ceilingSender{url: url, body: body, key: []byte("bench-secret-bench-secret"), t: t, client: &http.Client{Transport: t}}
}

func (c *ceilingSender) close() { c.t.CloseIdleConnections() }

// send posts the body as delivery id of entity i, with walhook's headers
// and signature, and reports a 2xx answer.
func (c *ceilingSender) send(ctx context.Context, id string, i int) bool {
	req, _ := http.NewRequestWithContext(ctx, "POST", c.url, bytes.NewReader(c.body))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(c.body)
	hd := req.Header
	hd.Set("Content-Type", "application/json")
	hd.Set("User-Agent", "walhook/bench")
	hd.Set("Webhook-Id", id)
	hd.Set("Webhook-Timestamp", ts)
	hd.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	hd.Set("X-Walhook-Event", "bench.create")
	hd.Set("X-Walhook-Event-Id", id)
	hd.Set("X-Walhook-Webhook", "ceiling")
	hd.Set("X-Walhook-Entity-Id", strconv.Itoa(i))
	hd.Set("X-Walhook-Attempt", "1")
	resp, err := c.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

// pipelineFloor is walhook's work without walhook: a bare pglogrepl
// reader on slot and the ceiling's client, in a process of their own
// (-pipeline-slot), posting each insert once per webhook from
// -concurrency workers per webhook, with no store, no matching and no
// body built. It returns requests/s from the first 2xx to the last, as
// the end to end is measured: the most any walhook could reach on this
// machine.
func (b *bench) pipelineFloor(ctx context.Context, slot string, want, webhooks int) (float64, error) {
	path, err := b.ceilingBodyFile()
	if err != nil {
		return 0, err
	}
	b.rc.reset(false)
	out, err := exec.CommandContext(ctx, b.o.selfExe, "bench", "-ceiling-client", b.rc.url+"/pipeline", "-ceiling-body", path,
		"-pipeline-dsn", b.dsn, "-pipeline-slot", slot, "-changes", strconv.Itoa(want),
		"-webhooks", strconv.Itoa(webhooks), "-concurrency", strconv.Itoa(b.o.concurrency)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pipeline client: %w: %s", err, out)
	}
	total := want * webhooks
	if n := b.rc.count(); n < total {
		return 0, fmt.Errorf("pipeline client: %d of %d requests answered 2xx", n, total)
	}
	first, last := b.rc.firstAt(), b.rc.lastAt()
	if !last.After(first) {
		return 0, errors.New("pipeline client: no time between the first and the last request")
	}
	return float64(total-1) / last.Sub(first).Seconds(), nil
}

// pipelineClient is -pipeline-slot: every insert on slot, read by a bare
// pglogrepl reader, is posted once per webhook by workers goroutines per
// webhook.
func pipelineClient(ctx context.Context, url, bodyPath, dsn, slot string, workers, webhooks, want int) error {
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		return err
	}
	c := newCeilingSender(url, body, workers*webhooks)
	defer c.close()
	jobs := make(chan int, 4*workers*webhooks)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range workers * webhooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				i := j / webhooks
				if !c.send(ctx, fmt.Sprintf("%d-%d", j%webhooks, i), i) {
					failed.Add(1)
				}
			}
		}()
	}
	err = streamInserts(ctx, dsn, slot, want, func(i int) {
		for h := range webhooks {
			jobs <- i*webhooks + h
		}
	})
	close(jobs)
	wg.Wait()
	if err != nil {
		return err
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d requests failed", n)
	}
	return nil
}

// latencyPhase offers a fixed load to a running walhook and measures
// commit → receipt from each payload's occurred_at.
func (b *bench) latencyPhase(ctx context.Context, res *benchResult) error {
	slot := b.slotName()
	if err := b.createSlot(ctx, slot); err != nil {
		return err
	}
	p, err := b.launch(ctx, "latency", slot, oneHook, true)
	if err != nil {
		return err
	}
	defer b.dropSlot(ctx, slot)
	defer p.stop()

	n, pace := b.offeredLoad()
	took, err := b.insert(ctx, n, b.o.txSize, 4, pace)
	if err != nil {
		return err
	}
	res.OfferedEPS = float64(n) / took.Seconds()
	if err := b.waitReceived(ctx, p, n, time.Minute); err != nil {
		return err
	}
	b.peakRSS, b.peakAnon = max(b.peakRSS, p.rssMB()), max(b.peakAnon, p.anonMB())
	lat := b.rc.latencies()
	if len(lat) == 0 {
		return errors.New("no latencies recorded")
	}
	slices.Sort(lat)
	res.P50MS = percentile(lat, 0.50)
	res.P99MS = percentile(lat, 0.99)
	res.P999MS = percentile(lat, 0.999)
	return nil
}

// offeredLoad is the latency load: -rate changes/s for -duration, as n
// rows in transactions of -tx-size, one every pace.
func (b *bench) offeredLoad() (n int, pace time.Duration) {
	txs := max(1, int(float64(b.o.rate)*b.o.duration.Seconds())/b.o.txSize)
	return txs * b.o.txSize, time.Duration(float64(time.Second) * float64(b.o.txSize) / float64(b.o.rate))
}

func percentile(sorted []time.Duration, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}

// backlogPhase queues deliveries while the receiver hangs, restarts
// walhook with the receiver up and measures the first delivery and the
// drain.
func (b *bench) backlogPhase(ctx context.Context, res *benchResult) error {
	n := b.o.backlog
	slot := b.slotName()
	if err := b.createSlot(ctx, slot); err != nil {
		return err
	}
	defer b.dropSlot(ctx, slot)
	// A long timeout: the workers wait on the hung receiver, the rest stays
	// queued and unattempted.
	// Test retries (3 s apart): a request that fails in the shutdown must
	// not hold the drain for the five minutes of a production backoff.
	hooks := []benchHook{{name: "hb", path: "/hold", timeoutMS: 300000, retryMode: "test"}}
	dir, admin, token, err := b.writeConfig("backlog", slot, hooks)
	if err != nil {
		return err
	}
	b.rc.reset(false)
	release := b.rc.holdRequests()
	p, err := b.startWalhook(ctx, dir, admin, token, "backlog")
	if err != nil {
		release()
		return err
	}
	start := time.Now()
	if _, err := b.insert(ctx, n, max(b.o.txSize, 1000), 4, 0); err != nil {
		release()
		p.kill()
		return err
	}
	deadline := time.Now().Add(time.Duration(n/500+120) * time.Second)
	for p.queued("hb") < n {
		if time.Now().After(deadline) {
			release()
			p.kill()
			return fmt.Errorf("only %d of %d deliveries queued: %s", p.queued("hb"), n, p.logTail())
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

	b.rc.reset(false)
	start = time.Now()
	p, err = b.startWalhook(ctx, dir, admin, token, "restart")
	if err != nil {
		return err
	}
	defer p.stop()
	if err := b.waitReceived(ctx, p, 1, time.Minute); err != nil {
		return err
	}
	firstAt := b.rc.firstAt()
	res.BacklogFirstDeliveryMS = float64(firstAt.Sub(start).Microseconds()) / 1000
	// Requests in flight at the stop were answered then and are not
	// repeated: the queue running empty is the end.
	deadline = time.Now().Add(time.Duration(n/200+60) * time.Second)
	for p.queued("hb") != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d deliveries still queued after the restart: %s\nthe oldest pending: %s",
				p.queued("hb"), n, p.logTail(), p.pendingSample("hb"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.BacklogDrainEPS = float64(b.rc.count()) / b.rc.lastAt().Sub(firstAt).Seconds()
	res.BacklogRestartRSSMB, res.BacklogRestartAnonMB = p.rssMB(), p.anonMB()
	return nil
}

// backfillPhase adds -backfill rows to the table and starts a backfill of
// it for one of two webhooks while the latency phase's load runs: how
// fast the rows are read and delivered, and what the live changes'
// latency is at each webhook meanwhile.
func (b *bench) backfillPhase(ctx context.Context, res *benchResult) error {
	if _, err := b.insert(ctx, b.o.backfill, 1000, 4, 0); err != nil {
		return err
	}
	slot := b.slotName()
	if err := b.createSlot(ctx, slot); err != nil {
		return err
	}
	hooks := []benchHook{
		{name: "filled", path: "/filled", timeoutMS: 10000, retryMode: "production"},
		{name: "other", path: "/other", timeoutMS: 10000, retryMode: "production"},
	}
	p, err := b.launch(ctx, "backfill", slot, hooks, true)
	if err != nil {
		return err
	}
	defer b.dropSlot(ctx, slot)
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
	live, pace := b.offeredLoad()
	loadDone := make(chan error, 1)
	go func() {
		_, err := b.insert(ctx, live, b.o.txSize, 4, pace)
		loadDone <- err
	}()
	var st struct {
		State  string
		Error  string
		Queued int `json:"rows_queued"`
	}
	var readTook time.Duration
	for st.State != "done" {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		resp, err := p.request("/api/webhooks/filled/backfill")
		if err != nil {
			return err
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || st.State == "failed" {
			return fmt.Errorf("backfill: %v %s", err, st.Error)
		}
		readTook = time.Since(start)
	}
	if err := <-loadDone; err != nil {
		return err
	}
	if err := b.waitReceived(ctx, p, st.Queued+2*live, 5*time.Minute); err != nil {
		return err
	}
	b.peakRSS, b.peakAnon = max(b.peakRSS, p.rssMB()), max(b.peakAnon, p.anonMB())
	res.BackfillRows = st.Queued
	res.BackfillReadEPS = float64(st.Queued) / readTook.Seconds()
	res.BackfillDrainEPS = float64(b.rc.countOf("filled")) / b.rc.lastAt().Sub(start).Seconds()
	for _, h := range []struct {
		name     string
		p99, max *float64
	}{{"filled", &res.BackfillOwnP99MS, &res.BackfillOwnMaxMS}, {"other", &res.BackfillOtherP99, &res.BackfillOtherMaxM}} {
		lat := b.rc.latenciesOf(h.name)
		if len(lat) == 0 {
			return fmt.Errorf("no latencies recorded at %s", h.name)
		}
		slices.Sort(lat)
		*h.p99, *h.max = percentile(lat, 0.99), percentile(lat, 1)
	}
	return nil
}

// bigTxPhase commits one transaction of -big-tx rows to a running walhook.
func (b *bench) bigTxPhase(ctx context.Context, res *benchResult) error {
	n := b.o.bigTx
	slot := b.slotName()
	if err := b.createSlot(ctx, slot); err != nil {
		return err
	}
	defer b.dropSlot(ctx, slot)
	p, err := b.launch(ctx, "bigtx", slot, oneHook, false)
	if err != nil {
		return err
	}
	defer p.stop()
	if _, err := b.insert(ctx, n, n, 1, 0); err != nil {
		return err
	}
	committed := time.Now()
	if err := b.waitReceived(ctx, p, n, time.Duration(n/100+120)*time.Second); err != nil {
		return err
	}
	res.BigTxRows = n
	res.BigTxEPS = float64(n) / b.rc.lastAt().Sub(committed).Seconds()
	res.BigTxRSSMB, res.BigTxAnonMB = p.rssMB(), p.anonMB()
	return nil
}

// benchReceiver is the local webhook endpoint: it counts distinct
// deliveries and, when asked, their commit → receipt latency.
type benchReceiver struct {
	srv   *http.Server
	url   string
	delay time.Duration

	mu          sync.Mutex
	seen        map[string]struct{}
	first, last time.Time
	recordLat   bool
	lat         []time.Duration
	latBy       map[string][]time.Duration // by webhook
	sample      []byte
	hold        chan struct{} // requests to /hold wait until it is closed
}

func newBenchReceiver(delay time.Duration) (*benchReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &benchReceiver{url: "http://" + ln.Addr().String(), delay: delay, seen: map[string]struct{}{}}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
	go rc.srv.Serve(ln)
	return rc, nil
}

func (rc *benchReceiver) close() { rc.srv.Close() }

func (rc *benchReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if r.URL.Path == "/hold" {
		rc.mu.Lock()
		hold := rc.hold
		rc.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
	}
	if rc.delay > 0 {
		time.Sleep(rc.delay)
	}
	now := time.Now()
	key := r.Header.Get("X-Walhook-Webhook") + "/" + r.Header.Get("Webhook-Id")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, ok := rc.seen[key]; ok {
		return
	}
	rc.seen[key] = struct{}{}
	if rc.first.IsZero() {
		rc.first = now
	}
	rc.last = now
	if rc.sample == nil {
		rc.sample = body
	}
	if rc.recordLat {
		var v struct {
			ID         string    `json:"id"`
			OccurredAt time.Time `json:"occurred_at"`
		}
		// Changes only: a backfill's rows occurred when its snapshot was
		// taken.
		if json.Unmarshal(body, &v) == nil && !cdc.FromSnapshot(v.ID) {
			d := now.Sub(v.OccurredAt)
			rc.lat = append(rc.lat, d)
			hook := r.Header.Get("X-Walhook-Webhook")
			rc.latBy[hook] = append(rc.latBy[hook], d)
		}
	}
}

// bodyLike is a body of the shape and size walhook sends for a bench row.
func (b *bench) bodyLike() []byte {
	now := time.Now().UTC()
	body, _ := json.Marshal(map[string]any{
		"id": "00000000016B3A80-00000003", "event": "bench.create", "entity": "bench", "action": "create",
		"entity_id": "123456", "table": "public.bench", "occurred_at": now.Format(time.RFC3339Nano), "webhook": "h1",
		"data": map[string]any{"id": 123456, "payload": b.payload},
	})
	return body
}

func (rc *benchReceiver) reset(recordLat bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.seen = map[string]struct{}{}
	rc.first, rc.last = time.Time{}, time.Time{}
	rc.recordLat, rc.lat, rc.latBy = recordLat, nil, map[string][]time.Duration{}
}

// holdRequests makes /hold requests wait until release is called.
func (rc *benchReceiver) holdRequests() (release func()) {
	ch := make(chan struct{})
	rc.mu.Lock()
	rc.hold = ch
	rc.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			rc.mu.Lock()
			rc.hold = nil
			rc.mu.Unlock()
			close(ch)
		})
	}
}

func (rc *benchReceiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}

func (rc *benchReceiver) firstAt() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.first
}

func (rc *benchReceiver) lastAt() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.last
}

func (rc *benchReceiver) latencies() []time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.lat)
}

// latenciesOf are the latencies of one webhook's deliveries.
func (rc *benchReceiver) latenciesOf(hook string) []time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.latBy[hook])
}

// countOf is the distinct deliveries to one webhook.
func (rc *benchReceiver) countOf(hook string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for k := range rc.seen {
		if strings.HasPrefix(k, hook+"/") {
			n++
		}
	}
	return n
}

func (rc *benchReceiver) sampleBody() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.sample
}

// randomText is n characters of random base64, which PostgreSQL cannot
// compress away.
func randomText(n int) string {
	raw := make([]byte, n)
	rand.Read(raw)
	return base64.RawStdEncoding.EncodeToString(raw)[:n]
}

// machine describes the host: cores, CPU model and memory.
func machine() string {
	model, mem := "unknown CPU", "unknown memory"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(raw)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				mem = fmt.Sprintf("%.1f GB", kb/1024/1024)
			}
		}
	}
	return fmt.Sprintf("%d cores, %s, %s", runtime.NumCPU(), model, mem)
}

func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func printBench(w io.Writer, o benchOptions, r *benchResult) {
	fmt.Fprintf(w, "walhook bench: -changes %d -tx-size %d -webhooks %d -row-width %d -latency %s -concurrency %d -rate %d\n",
		o.changes, o.txSize, o.webhooks, o.rowWidth, o.latency, o.concurrency, o.rate)
	fmt.Fprintf(w, "machine: %s; load average %s; request body %d bytes\n\n", machine(), r.Load, r.BodyBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(what, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", what, value, note) }
	check := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "MISSED"
	}
	num := func(v float64, unit string) string { return fmt.Sprintf("%.0f %s", v, unit) }
	row("decode ceiling (bare pglogrepl)", num(r.DecodeCeilingEPS, "rows/s"), "")
	runs := func(i int) string {
		if len(r.HTTPCeilingRuns) < i+2 {
			return ""
		}
		return fmt.Sprintf("mean of %.0f before and %.0f after the phase below", r.HTTPCeilingRuns[i], r.HTTPCeilingRuns[i+1])
	}
	row(fmt.Sprintf("HTTP ceiling (%d workers)", o.concurrency), num(r.HTTPCeilingRPS, "req/s"), runs(0))
	row("walhook end to end, 1 webhook", num(r.E2EEPS, "events/s"),
		fmt.Sprintf("%.2f × min(ceilings), target ≥ 0.7: %s", r.Ratio, check(r.Ratio >= 0.7)))
	row("HTTP ceiling, client's own process", num(r.HTTPCeilingOwnRPS, "req/s"),
		fmt.Sprintf("as walhook runs: end to end is %.2f × min(decode, this); for information, not the target's ratio", r.RatioOwn))
	row("bare reader + client, own process", num(r.PipelineEPS, "req/s"),
		fmt.Sprintf("no store, no walhook: %.2f × min(ceilings), the most any walhook could reach here; for information", r.RatioPipeline))
	row("walhook start → first delivery", fmt.Sprintf("%.0f ms", r.E2EFirstMS), "not in the rate above: from the first 2xx to the last")
	row(fmt.Sprintf("HTTP ceiling (%d workers)", o.concurrency*o.webhooks), num(r.HTTPCeiling4RPS, "req/s"), runs(2))
	row(fmt.Sprintf("walhook end to end, %d webhooks", o.webhooks), num(r.E2E4RPS, "req/s"),
		fmt.Sprintf("%.2f × HTTP ceiling, target ≥ 0.7: %s", r.Ratio4, check(r.Ratio4 >= 0.7)))
	row(fmt.Sprintf("bare reader + client, %d webhooks", o.webhooks), num(r.Pipeline4RPS, "req/s"),
		fmt.Sprintf("no store, no walhook: %.2f × HTTP ceiling; for information", r.RatioPipeline4))
	row("walhook CPU per delivery", fmt.Sprintf("%.0f µs", r.E2ECPU), fmt.Sprintf("%.0f µs with %d webhooks", r.E2E4CPU, o.webhooks))
	row(fmt.Sprintf("latency p50 at %.0f changes/s", r.OfferedEPS), fmt.Sprintf("%.1f ms", r.P50MS), "")
	row("latency p99", fmt.Sprintf("%.1f ms", r.P99MS), "target < 50 ms: "+check(r.P99MS < 50))
	row("latency p99.9", fmt.Sprintf("%.1f ms", r.P999MS), "target < 200 ms: "+check(r.P999MS < 200))
	row("peak RSS (VmHWM)", fmt.Sprintf("%.1f MB", r.PeakRSSMB), fmt.Sprintf("anonymous (heap) peak %.1f MB; the rest is the store's memory map", r.PeakAnonMB))
	if r.BacklogN > 0 {
		row(fmt.Sprintf("backlog of %d: queued at", r.BacklogN), num(r.BacklogQueueEPS, "deliveries/s"), "")
		row("backlog: peak RSS", fmt.Sprintf("%.1f MB", r.BacklogRSSMB), fmt.Sprintf("anonymous %.1f MB; target < 150 MB at 1,000,000: %s", r.BacklogAnonMB, check(r.BacklogRSSMB < 150)))
		row("store bytes per queued delivery", fmt.Sprintf("%.0f B", r.StoreBytesPerDelivery), "")
		row("restart: first delivery after", fmt.Sprintf("%.0f ms", r.BacklogFirstDeliveryMS), "target < 2 s: "+check(r.BacklogFirstDeliveryMS < 2000))
		row("restart: drain", num(r.BacklogDrainEPS, "deliveries/s"), fmt.Sprintf("peak RSS %.1f MB, anonymous %.1f MB; target < 150 MB at 1,000,000: %s", r.BacklogRestartRSSMB, r.BacklogRestartAnonMB, check(r.BacklogRestartRSSMB < 150)))
	}
	if r.BackfillRows > 0 {
		row(fmt.Sprintf("backfill of %d rows: read", r.BackfillRows), num(r.BackfillReadEPS, "rows/s"), "queued, from the request to the end of the read")
		row("backfill: delivered", num(r.BackfillDrainEPS, "deliveries/s"), "to the backfilled webhook: its rows and the live changes")
		row("backfill: live p99 / max, backfilled webhook", fmt.Sprintf("%.0f / %.0f ms", r.BackfillOwnP99MS, r.BackfillOwnMaxMS), "its changes queue behind its rows")
		row("backfill: live p99 / max, other webhook", fmt.Sprintf("%.0f / %.0f ms", r.BackfillOtherP99, r.BackfillOtherMaxM), "")
	}
	if r.BigTxRows > 0 {
		row(fmt.Sprintf("one transaction of %d rows", r.BigTxRows), num(r.BigTxEPS, "events/s"), "")
		row("big transaction: peak RSS", fmt.Sprintf("%.1f MB", r.BigTxRSSMB), fmt.Sprintf("anonymous %.1f MB; target < 256 MB at 1,000,000: %s", r.BigTxAnonMB, check(r.BigTxRSSMB < 256)))
	}
	row("(bench wrote the workload at)", num(r.WriteEPS, "rows/s"), "")
	tw.Flush()
}
