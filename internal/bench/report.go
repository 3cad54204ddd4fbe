package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Result is what walhook bench measured; -json prints it.
type Result struct {
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
	E2ESteadyCPU   float64 `json:"e2e_steady_cpu_us_per_event"`   // the same from the first 2xx to the last: walhook's start left out
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

	// -store postgres: walhook with its queue in PostgreSQL (another
	// database of the bench's cluster) beside the bbolt figures above.
	PGE2EEPS       float64 `json:"pg_store_e2e_eps,omitempty"`                  // 1 webhook, from the first 2xx to the last, as e2e_eps
	PGE2EFirstMS   float64 `json:"pg_store_e2e_first_delivery_ms,omitempty"`    // its start → its first 2xx
	PGE2ECPU       float64 `json:"pg_store_e2e_cpu_us_per_event,omitempty"`     // walhook's process only, as e2e_cpu_us_per_event
	PGBackendCPU   float64 `json:"pg_store_backend_cpu_us_per_event,omitempty"` // the store database's backends (walhook's store connections, autovacuum there), from /proc: not in the figure above
	PGBoltRerunEPS float64 `json:"pg_store_bbolt_rerun_eps,omitempty"`          // bbolt again, just after the PostgreSQL run
	PGBoltRerunCPU float64 `json:"pg_store_bbolt_rerun_cpu_us_per_event,omitempty"`
	PGRatioEPS     float64 `json:"pg_store_ratio_eps,omitempty"` // pg_store_e2e_eps / mean(e2e_eps, pg_store_bbolt_rerun_eps)
	PGRatioCPU     float64 `json:"pg_store_ratio_cpu,omitempty"` // the same for walhook's CPU per delivery
	PGOfferedEPS   float64 `json:"pg_store_latency_offered_eps,omitempty"`
	PGP50MS        float64 `json:"pg_store_p50_ms,omitempty"`
	PGP99MS        float64 `json:"pg_store_p99_ms,omitempty"`
	PGP999MS       float64 `json:"pg_store_p999_ms,omitempty"`
	PGRatioP99     float64 `json:"pg_store_ratio_p99,omitempty"`   // pg_store_p99_ms / p99_ms
	PGPeakRSSMB    float64 `json:"pg_store_peak_rss_mb,omitempty"` // walhook's VmHWM in the two phases above
	// The backlog (-backlog deliveries, the receiver hung) in PostgreSQL:
	// pg_total_relation_size of the schema's tables before and after, and
	// its rows once drained, with the default retention of 100.
	PGBacklogQueueEPS  float64 `json:"pg_store_backlog_queue_eps,omitempty"`
	PGBytesPerDelivery float64 `json:"pg_store_bytes_per_delivery,omitempty"`
	PGRatioBytes       float64 `json:"pg_store_ratio_bytes,omitempty"` // pg_store_bytes_per_delivery / store_bytes_per_delivery
	PGDeliveryRows     int     `json:"pg_store_delivery_rows_after_drain,omitempty"`
	PGEventRows        int     `json:"pg_store_event_rows_after_drain,omitempty"`
	// -instances N: deliveries/s of 1..N walhooks on one PostgreSQL
	// store, the receiver taking 50 ms per request.
	PGInstancesDPS     []float64 `json:"pg_store_instances_dps,omitempty"`
	PGInstancesChanges int       `json:"pg_store_instances_changes,omitempty"`

	// -when: walhook's CPU µs per event read (from ready to the last 2xx,
	// its start left out), one webhook with no filter, with WhenPass and
	// with WhenReject; each the mean of two runs.
	WhenEvents      int       `json:"when_events,omitempty"` // per run
	WhenNoneCPU     float64   `json:"when_none_cpu_us_per_event,omitempty"`
	WhenPassCPU     float64   `json:"when_pass_cpu_us_per_event,omitempty"`
	WhenRejectCPU   float64   `json:"when_reject_cpu_us_per_event,omitempty"`
	WhenFilterShare float64   `json:"when_filter_share,omitempty"` // (pass - none) / none: the filter's share of a delivery
	WhenRejectRatio float64   `json:"when_reject_ratio,omitempty"` // reject / none
	WhenRunsCPU     []float64 `json:"when_runs_cpu_us,omitempty"`  // in the order none, pass, reject, reject, pass, none

	// -batch: one webhook with batch_size of each size (batch_wait_ms 0) on
	// the same changes as e2e_eps, then unbatched and the decode ceiling
	// again; the ratios are to the means of these and the first runs.
	BatchRuns             []BatchRun `json:"batch_runs,omitempty"`
	BatchUnbatchedEPS     float64    `json:"batch_unbatched_rerun_eps,omitempty"`              // the unbatched webhook again, just after the batches
	BatchUnbatchedCPU     float64    `json:"batch_unbatched_rerun_cpu_us_per_event,omitempty"` // its CPU per event
	BatchUnbatchedMeanCPU float64    `json:"batch_unbatched_cpu_us_per_event,omitempty"`       // mean(e2e_cpu_us_per_event, the rerun's)
	// The same from the first 2xx to the last (walhook's start left out).
	BatchUnbatchedSteadyCPU     float64 `json:"batch_unbatched_rerun_steady_cpu_us_per_event,omitempty"`
	BatchUnbatchedMeanSteadyCPU float64 `json:"batch_unbatched_steady_cpu_us_per_event,omitempty"`
	BatchDecodeAfterEPS         float64 `json:"batch_decode_ceiling_after_eps,omitempty"` // the decode ceiling again, just after the batches
	BatchDecodeMeanEPS          float64 `json:"batch_decode_ceiling_eps,omitempty"`       // mean(decode_ceiling_eps, the one after)
	// CPU per event after the first 2xx split as floor + request/size, from
	// the unbatched mean and the largest size's run (with its mean batch):
	// floor is what each event costs batched or not, request what one
	// request costs.
	BatchFloorCPU   float64 `json:"batch_floor_cpu_us_per_event,omitempty"`
	BatchRequestCPU float64 `json:"batch_cpu_us_per_request,omitempty"`
	BatchFloorFrom  int     `json:"batch_floor_from_size,omitempty"`
	// The latency phase (-rate for -duration) with the largest size and
	// batch_wait_ms BatchLatencyWaitMS: commit → 2xx of each event.
	BatchLatencySize             int     `json:"batch_latency_size,omitempty"`
	BatchLatencyWaitMS           int     `json:"batch_latency_wait_ms,omitempty"`
	BatchOfferedEPS              float64 `json:"batch_latency_offered_eps,omitempty"`
	BatchP50MS                   float64 `json:"batch_p50_ms,omitempty"`
	BatchP99MS                   float64 `json:"batch_p99_ms,omitempty"`
	BatchP999MS                  float64 `json:"batch_p999_ms,omitempty"`
	BatchLatencyEventsPerRequest float64 `json:"batch_latency_events_per_request,omitempty"`
	BatchPeakRSSMB               float64 `json:"batch_peak_rss_mb,omitempty"` // walhook's VmHWM in the batch phases

	Load string `json:"load"` // /proc/loadavg before and after
}

// BatchRun is one batch size's end to end (-batch).
type BatchRun struct {
	Size             int     `json:"batch_size"`
	EPS              float64 `json:"e2e_eps"`              // events/s from the first 2xx to the last
	CPU              float64 `json:"cpu_us_per_event"`     // walhook's CPU per event, its start included, as e2e_cpu_us_per_event
	EventsPerRequest float64 `json:"events_per_request"`   // the mean batch
	RatioDecode      float64 `json:"ratio_decode_ceiling"` // e2e_eps / batch_decode_ceiling_eps
	RatioCPU         float64 `json:"ratio_cpu_unbatched"`  // cpu_us_per_event / batch_unbatched_cpu_us_per_event
	// SteadyCPU is CPU per event from the first 2xx to the last, as the
	// rate counts events: walhook's start (opening the store, connecting,
	// the first batch) is not a cost per event, and with 20,000 changes
	// it weighs several µs on each.
	SteadyCPU      float64 `json:"steady_cpu_us_per_event"`
	RatioSteadyCPU float64 `json:"ratio_steady_cpu_unbatched"` // steady_cpu_us_per_event / batch_unbatched_steady_cpu_us_per_event
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

// loadavg is the first three fields of /proc/loadavg.
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

// Print writes r as the table walhook bench prints, with the options
// that produced it and each figure's target.
func Print(w io.Writer, o Options, r *Result) {
	fmt.Fprintf(w, "walhook bench: -changes %d -tx-size %d -webhooks %d -row-width %d -latency %s -concurrency %d -rate %d\n",
		o.Changes, o.TxSize, o.Webhooks, o.RowWidth, o.Latency, o.Concurrency, o.Rate)
	fmt.Fprintf(w, "machine: %s; load average %s; request body %d bytes\n\n", machine(), r.Load, r.BodyBytes)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(what, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", what, value, note) }
	num := func(v float64, unit string) string { return fmt.Sprintf("%.0f %s", v, unit) }
	row("decode ceiling (bare pglogrepl)", num(r.DecodeCeilingEPS, "rows/s"), "")
	runs := func(i int) string {
		if len(r.HTTPCeilingRuns) < i+2 {
			return ""
		}
		return fmt.Sprintf("mean of %.0f before and %.0f after the phase below", r.HTTPCeilingRuns[i], r.HTTPCeilingRuns[i+1])
	}
	row(fmt.Sprintf("HTTP ceiling (%d workers)", o.Concurrency), num(r.HTTPCeilingRPS, "req/s"), runs(0))
	row("walhook end to end, 1 webhook", num(r.E2EEPS, "events/s"),
		fmt.Sprintf("%.2f × min(ceilings), target ≥ 0.7: %s", r.Ratio, verdict(r.Ratio >= 0.7)))
	row("HTTP ceiling, client's own process", num(r.HTTPCeilingOwnRPS, "req/s"),
		fmt.Sprintf("as walhook runs: end to end is %.2f × min(decode, this); for information, not the target's ratio", r.RatioOwn))
	row("bare reader + client, own process", num(r.PipelineEPS, "req/s"),
		fmt.Sprintf("no store, no walhook: %.2f × min(ceilings), the most any walhook could reach here; for information", r.RatioPipeline))
	row("walhook start → first delivery", fmt.Sprintf("%.0f ms", r.E2EFirstMS), "not in the rate above: from the first 2xx to the last")
	row(fmt.Sprintf("HTTP ceiling (%d workers)", o.Concurrency*o.Webhooks), num(r.HTTPCeiling4RPS, "req/s"), runs(2))
	row(fmt.Sprintf("walhook end to end, %d webhooks", o.Webhooks), num(r.E2E4RPS, "req/s"),
		fmt.Sprintf("%.2f × HTTP ceiling, target ≥ 0.7: %s", r.Ratio4, verdict(r.Ratio4 >= 0.7)))
	row(fmt.Sprintf("bare reader + client, %d webhooks", o.Webhooks), num(r.Pipeline4RPS, "req/s"),
		fmt.Sprintf("no store, no walhook: %.2f × HTTP ceiling; for information", r.RatioPipeline4))
	row("walhook CPU per delivery", fmt.Sprintf("%.0f µs", r.E2ECPU), fmt.Sprintf("%.0f µs with %d webhooks", r.E2E4CPU, o.Webhooks))
	row(fmt.Sprintf("latency p50 at %.0f changes/s", r.OfferedEPS), fmt.Sprintf("%.1f ms", r.P50MS), "")
	row("latency p99", fmt.Sprintf("%.1f ms", r.P99MS), "target < 50 ms: "+verdict(r.P99MS < 50))
	row("latency p99.9", fmt.Sprintf("%.1f ms", r.P999MS), "target < 200 ms: "+verdict(r.P999MS < 200))
	row("peak RSS (VmHWM)", fmt.Sprintf("%.1f MB", r.PeakRSSMB), fmt.Sprintf("anonymous (heap) peak %.1f MB; the rest is the store's memory map", r.PeakAnonMB))
	if r.BacklogN > 0 {
		row(fmt.Sprintf("backlog of %d: queued at", r.BacklogN), num(r.BacklogQueueEPS, "deliveries/s"), "")
		row("backlog: peak RSS", fmt.Sprintf("%.1f MB", r.BacklogRSSMB), fmt.Sprintf("anonymous %.1f MB; target < 150 MB at 1,000,000: %s", r.BacklogAnonMB, verdict(r.BacklogRSSMB < 150)))
		row("store bytes per queued delivery", fmt.Sprintf("%.0f B", r.StoreBytesPerDelivery), "")
		row("restart: first delivery after", fmt.Sprintf("%.0f ms", r.BacklogFirstDeliveryMS), "target < 2 s: "+verdict(r.BacklogFirstDeliveryMS < 2000))
		row("restart: drain", num(r.BacklogDrainEPS, "deliveries/s"), fmt.Sprintf("peak RSS %.1f MB, anonymous %.1f MB; target < 150 MB at 1,000,000: %s", r.BacklogRestartRSSMB, r.BacklogRestartAnonMB, verdict(r.BacklogRestartRSSMB < 150)))
	}
	if r.BackfillRows > 0 {
		row(fmt.Sprintf("backfill of %d rows: read", r.BackfillRows), num(r.BackfillReadEPS, "rows/s"), "queued, from the request to the end of the read")
		row("backfill: delivered", num(r.BackfillDrainEPS, "deliveries/s"), "to the backfilled webhook: its rows and the live changes")
		row("backfill: live p99 / max, backfilled webhook", fmt.Sprintf("%.0f / %.0f ms", r.BackfillOwnP99MS, r.BackfillOwnMaxMS), "its changes queue behind its rows")
		row("backfill: live p99 / max, other webhook", fmt.Sprintf("%.0f / %.0f ms", r.BackfillOtherP99, r.BackfillOtherMaxM), "")
	}
	if r.BigTxRows > 0 {
		row(fmt.Sprintf("one transaction of %d rows", r.BigTxRows), num(r.BigTxEPS, "events/s"), "")
		row("big transaction: peak RSS", fmt.Sprintf("%.1f MB", r.BigTxRSSMB), fmt.Sprintf("anonymous %.1f MB; target < 256 MB at 1,000,000: %s", r.BigTxAnonMB, verdict(r.BigTxRSSMB < 256)))
	}
	row("(bench wrote the workload at)", num(r.WriteEPS, "rows/s"), "")
	tw.Flush()
	if o.Store == StorePostgres {
		printStore(w, o, r)
	}
	if o.When {
		printWhen(w, r)
	}
	if len(r.BatchRuns) > 0 {
		printBatch(w, r)
	}
}

// printBatch writes the table of -batch, with the targets at
// batch_size 100.
func printBatch(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\nbatches: 1 webhook, batch_wait_ms 0, the same changes as the end to end above; decode ceiling %.0f rows/s (mean of %.0f before and %.0f after), unbatched CPU per event %.0f µs, %.1f µs after the first 2xx (means of %.0f / %.1f before and %.0f / %.1f after)\n\n",
		r.BatchDecodeMeanEPS, r.DecodeCeilingEPS, r.BatchDecodeAfterEPS, r.BatchUnbatchedMeanCPU, r.BatchUnbatchedMeanSteadyCPU,
		r.E2ECPU, r.E2ESteadyCPU, r.BatchUnbatchedCPU, r.BatchUnbatchedSteadyCPU)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "batch_size\tend to end\t× decode ceiling\tCPU per event\t× unbatched\tafter the first 2xx\t× unbatched\tevents per request\n")
	fmt.Fprintf(tw, "1 (again)\t%.0f events/s\t%.2f\t%.1f µs\t%.2f\t%.1f µs\t%.2f\t1\n",
		r.BatchUnbatchedEPS, r.BatchUnbatchedEPS/r.BatchDecodeMeanEPS, r.BatchUnbatchedCPU, r.BatchUnbatchedCPU/r.BatchUnbatchedMeanCPU,
		r.BatchUnbatchedSteadyCPU, r.BatchUnbatchedSteadyCPU/r.BatchUnbatchedMeanSteadyCPU)
	for _, b := range r.BatchRuns {
		ratio, cpu, steady := fmt.Sprintf("%.2f", b.RatioDecode), fmt.Sprintf("%.2f", b.RatioCPU), fmt.Sprintf("%.2f", b.RatioSteadyCPU)
		if b.Size == 100 {
			ratio += " (target ≥ 0.5: " + verdict(b.RatioDecode >= 0.5) + ")"
			cpu += " (target ≤ 0.25: " + verdict(b.RatioCPU <= 0.25) + ")"
			steady += " (target ≤ 0.25: " + verdict(b.RatioSteadyCPU <= 0.25) + ")"
		}
		fmt.Fprintf(tw, "%d\t%.0f events/s\t%s\t%.1f µs\t%s\t%.1f µs\t%s\t%.1f\n", b.Size, b.EPS, ratio, b.CPU, cpu, b.SteadyCPU, steady, b.EventsPerRequest)
	}
	tw.Flush()
	if r.BatchFloorCPU > 0 {
		fmt.Fprintf(w, "\nafter the first 2xx, CPU per event ≈ %.1f µs + %.1f µs per request (solved from the unbatched run and batch_size %d's): no batch_size takes CPU per event below %.2f × the unbatched one; those %.1f µs are each event's own (reading the WAL, storing, reading back, encoding), batched or not\n",
			r.BatchFloorCPU, r.BatchRequestCPU, r.BatchFloorFrom, r.BatchFloorCPU/r.BatchUnbatchedMeanSteadyCPU, r.BatchFloorCPU)
		for _, b := range r.BatchRuns {
			if b.Size == 100 && b.SteadyCPU > 0 {
				fmt.Fprintf(w, "batch_size 100 after the first 2xx: %.2f × that floor (target ≤ 1.5: %s)\n", b.SteadyCPU/r.BatchFloorCPU, verdict(b.SteadyCPU <= 1.5*r.BatchFloorCPU))
			}
		}
	}
	if r.BatchLatencySize > 0 {
		target := float64(r.BatchLatencyWaitMS + 30)
		fmt.Fprintf(w, "\nlatency at %.0f changes/s, batch_size %d, batch_wait_ms %d (%.1f events per request): p50 %.1f ms, p99 %.1f ms (target ≤ %.0f ms: %s), p99.9 %.1f ms; unbatched p99 %.1f ms\n",
			r.BatchOfferedEPS, r.BatchLatencySize, r.BatchLatencyWaitMS, r.BatchLatencyEventsPerRequest,
			r.BatchP50MS, r.BatchP99MS, target, verdict(r.BatchP99MS <= target), r.BatchP999MS, r.P99MS)
	}
}

// printStore writes the table of -store postgres: the PostgreSQL store's
// figures beside bbolt's of the same run.
func printStore(w io.Writer, o Options, r *Result) {
	fmt.Fprintf(w, "\nthe queue in PostgreSQL (another database of the bench's cluster) beside bbolt\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(what, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", what, value, note) }
	fmt.Fprintf(tw, "\tpostgres\tbbolt\tpostgres/bbolt\n")
	fmt.Fprintf(tw, "end to end, 1 webhook\t%.0f events/s\t%.0f events/s\t%.2f\tbbolt: mean of %.0f before and %.0f after; target ≥ 0.5: %s\n",
		r.PGE2EEPS, (r.E2EEPS+r.PGBoltRerunEPS)/2, r.PGRatioEPS, r.E2EEPS, r.PGBoltRerunEPS, verdict(r.PGRatioEPS >= 0.5))
	fmt.Fprintf(tw, "walhook CPU per delivery\t%.0f µs\t%.0f µs\t%.2f\twalhook's process only\n",
		r.PGE2ECPU, (r.E2ECPU+r.PGBoltRerunCPU)/2, r.PGRatioCPU)
	fmt.Fprintf(tw, "store backends' CPU per delivery\t%.0f µs\t\t\tthe store database's PostgreSQL backends, from /proc; not in the line above\n", r.PGBackendCPU)
	fmt.Fprintf(tw, "latency p50 at %.0f / %.0f changes/s\t%.1f ms\t%.1f ms\t\t\n", r.PGOfferedEPS, r.OfferedEPS, r.PGP50MS, r.P50MS)
	fmt.Fprintf(tw, "latency p99\t%.1f ms\t%.1f ms\t%.2f\ttarget < 100 ms: %s\n", r.PGP99MS, r.P99MS, r.PGRatioP99, verdict(r.PGP99MS < 100))
	fmt.Fprintf(tw, "latency p99.9\t%.1f ms\t%.1f ms\t\t\n", r.PGP999MS, r.P999MS)
	fmt.Fprintf(tw, "walhook start → first delivery\t%.0f ms\t%.0f ms\t\t\n", r.PGE2EFirstMS, r.E2EFirstMS)
	fmt.Fprintf(tw, "peak RSS (VmHWM)\t%.1f MB\t%.1f MB\t\tend to end and latency\n", r.PGPeakRSSMB, r.PeakRSSMB)
	if r.BacklogN > 0 {
		fmt.Fprintf(tw, "backlog of %d: queued at\t%.0f deliveries/s\t%.0f deliveries/s\t\t\n", r.BacklogN, r.PGBacklogQueueEPS, r.BacklogQueueEPS)
		fmt.Fprintf(tw, "store bytes per queued delivery\t%.0f B\t%.0f B\t%.2f\tpostgres: pg_total_relation_size of the schema's tables, before and after\n",
			r.PGBytesPerDelivery, r.StoreBytesPerDelivery, r.PGRatioBytes)
		fmt.Fprintf(tw, "rows after the drain\t%d deliveries, %d events\t\t\tretention 100\n", r.PGDeliveryRows, r.PGEventRows)
	}
	tw.Flush()
	if len(r.PGInstancesDPS) > 0 {
		fmt.Fprintf(w, "\n%d changes, 1 webhook, %d workers, the receiver taking %s; every instance on one PostgreSQL store\n\n",
			r.PGInstancesChanges, o.Concurrency, instancesReceiverDelay)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for i, v := range r.PGInstancesDPS {
			note := ""
			if i > 0 {
				note = fmt.Sprintf("%.2f × 1 instance", v/r.PGInstancesDPS[0])
			}
			if i == 2 {
				note += ", target ≥ 2.5: " + verdict(v/r.PGInstancesDPS[0] >= 2.5)
			}
			row(fmt.Sprintf("%d instance(s)", i+1), fmt.Sprintf("%.0f deliveries/s", v), note)
		}
		tw.Flush()
	}
}

// printWhen writes the table of -when.
func printWhen(w io.Writer, r *Result) {
	fmt.Fprintf(w, "\nwhen: %d events per run, 1 webhook; walhook's CPU per event read, from ready to the last 2xx, mean of 2 runs each\n", r.WhenEvents)
	fmt.Fprintf(w, "  pass:   %s\n  reject: %s (the last row only)\n\n", WhenPass, WhenReject)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(what, value, note string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", what, value, note) }
	runs := func(i, j int) string {
		if len(r.WhenRunsCPU) < 6 {
			return ""
		}
		return fmt.Sprintf("runs %.1f and %.1f µs", r.WhenRunsCPU[i], r.WhenRunsCPU[j])
	}
	row("no filter", fmt.Sprintf("%.1f µs", r.WhenNoneCPU), runs(0, 5))
	row("a filter that passes", fmt.Sprintf("%.1f µs", r.WhenPassCPU), runs(1, 4))
	row("a filter that rejects", fmt.Sprintf("%.1f µs", r.WhenRejectCPU), runs(2, 3))
	row("the filter's cost", fmt.Sprintf("%+.1f %%", 100*r.WhenFilterShare), "of a delivery, (pass - none) / none; target < 10 %: "+verdict(r.WhenFilterShare < 0.10))
	row("a rejected event", fmt.Sprintf("%.2f × a delivered one", r.WhenRejectRatio), "reject / none; target < 1: "+verdict(r.WhenRejectRatio < 1))
	tw.Flush()
}

// verdict is a target's mark in the tables: ok or MISSED.
func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}
