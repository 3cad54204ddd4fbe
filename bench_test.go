package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"walhook/internal/bench"
)

// TestBenchSmoke runs walhook bench with tiny sizes against the built
// binary: every phase completes and reports positive figures under the
// documented JSON keys. It asserts no timing.
func TestBenchSmoke(t *testing.T) {
	runBenchSmoke(t, bench.Options{
		Changes: 200, TxSize: 10, Webhooks: 2, RowWidth: 64, Concurrency: 4,
		Rate: 400, Duration: time.Second, Backlog: 100, BigTx: 100, Backfill: 100,
		Ceiling: 300 * time.Millisecond,
	},
		"decode_ceiling_eps", "http_ceiling_rps", "e2e_eps", "e2e_4_webhooks_rps",
		"p50_ms", "p99_ms", "p999_ms", "peak_rss_mb", "ratio", "e2e_cpu_us_per_event",
		"http_ceiling_own_process_rps", "ratio_own_process", "pipeline_floor_eps", "ratio_pipeline_floor", "pipeline_floor_4_webhooks_rps", "ratio_pipeline_floor_4_webhooks",
		"backlog_rss_mb", "store_bytes_per_delivery", "backlog_first_delivery_ms", "backlog_drain_eps", "backlog_restart_rss_mb",
		"big_tx_eps", "big_tx_rss_mb",
		"backfill_rows", "backfill_read_eps", "backfill_drain_eps", "backfill_own_p99_ms", "backfill_other_p99_ms",
	)
}

// TestBenchStoreSmoke runs walhook bench -store postgres -instances 2
// -when with tiny sizes: the PostgreSQL store's phases and the filter's
// report positive figures under their JSON keys. It asserts no timing.
func TestBenchStoreSmoke(t *testing.T) {
	res, _ := runBenchSmoke(t, bench.Options{
		Changes: 200, TxSize: 10, Webhooks: 1, RowWidth: 64, Concurrency: 4,
		Rate: 400, Duration: time.Second, Backlog: 100,
		Store: bench.StorePostgres, Instances: 2, When: true,
		Ceiling: 300 * time.Millisecond,
	},
		"pg_store_e2e_eps", "pg_store_e2e_cpu_us_per_event", "pg_store_backend_cpu_us_per_event", "pg_store_bbolt_rerun_eps",
		"pg_store_ratio_eps", "pg_store_ratio_cpu", "pg_store_p99_ms", "pg_store_ratio_p99",
		"pg_store_bytes_per_delivery", "pg_store_ratio_bytes", "pg_store_delivery_rows_after_drain", "pg_store_event_rows_after_drain",
		"when_none_cpu_us_per_event", "when_pass_cpu_us_per_event", "when_reject_cpu_us_per_event", "when_reject_ratio",
	)
	// Retention keeps at most 100 successes per webhook.
	if res.PGDeliveryRows > 100 {
		t.Errorf("pg_store_delivery_rows_after_drain = %d, want at most the retention of 100", res.PGDeliveryRows)
	}
	if len(res.PGInstancesDPS) != 2 || !(res.PGInstancesDPS[0] > 0) || !(res.PGInstancesDPS[1] > 0) {
		t.Errorf("pg_store_instances_dps = %v, want 2 positive figures", res.PGInstancesDPS)
	}
	if len(res.WhenRunsCPU) != 6 {
		t.Errorf("when_runs_cpu_us = %v, want 6 runs", res.WhenRunsCPU)
	}
	var table bytes.Buffer
	bench.Print(&table, bench.Options{Store: bench.StorePostgres, When: true, Concurrency: 4}, res)
	for _, want := range []string{"the queue in PostgreSQL", "store backends' CPU per delivery", "2 instance(s)", "a filter that rejects"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, table.String())
		}
	}
}

// TestBenchBatchSmoke runs walhook bench -batch 10,100 with tiny sizes:
// each batch size, the unbatched rerun and the batched latency phase
// report positive figures under their JSON keys, and batches did carry
// many events. It asserts no timing.
func TestBenchBatchSmoke(t *testing.T) {
	res, got := runBenchSmoke(t, bench.Options{
		Changes: 1000, TxSize: 10, Webhooks: 1, RowWidth: 64, Concurrency: 4,
		Rate: 1000, Duration: time.Second, Batch: []int{10, 100},
		Ceiling: 300 * time.Millisecond,
	},
		"batch_unbatched_rerun_eps", "batch_unbatched_rerun_cpu_us_per_event", "batch_unbatched_cpu_us_per_event",
		"batch_unbatched_rerun_steady_cpu_us_per_event", "batch_unbatched_steady_cpu_us_per_event", "e2e_steady_cpu_us_per_event",
		"batch_decode_ceiling_after_eps", "batch_decode_ceiling_eps",
		"batch_latency_size", "batch_latency_wait_ms", "batch_latency_offered_eps", "batch_p50_ms", "batch_p99_ms", "batch_p999_ms",
		"batch_latency_events_per_request", "batch_peak_rss_mb",
		// The unbatched keys are there as without -batch.
		"decode_ceiling_eps", "e2e_eps", "e2e_cpu_us_per_event", "p99_ms",
	)
	runs, _ := got["batch_runs"].([]any)
	if len(runs) != 2 {
		t.Fatalf("batch_runs = %v, want 2 runs", got["batch_runs"])
	}
	for i, size := range []float64{10, 100} {
		run, _ := runs[i].(map[string]any)
		if run["batch_size"] != size {
			t.Errorf("batch_runs[%d].batch_size = %v, want %v", i, run["batch_size"], size)
		}
		for _, key := range []string{"e2e_eps", "cpu_us_per_event", "events_per_request", "ratio_decode_ceiling", "ratio_cpu_unbatched"} {
			if v, ok := run[key].(float64); !ok || !(v > 0) {
				t.Errorf("batch_runs[%d].%s = %v, want a positive number", i, key, run[key])
			}
		}
		// After the first 2xx, 900-990 events may take less CPU than the
		// /proc clock's tick: present, and not negative.
		for _, key := range []string{"steady_cpu_us_per_event", "ratio_steady_cpu_unbatched"} {
			if v, ok := run[key].(float64); !ok || v < 0 {
				t.Errorf("batch_runs[%d].%s = %v, want a number ≥ 0", i, key, run[key])
			}
		}
		// A backlog of 1,000 changes fills batches: more than one event
		// per request, at most the size.
		if v, _ := run["events_per_request"].(float64); v <= 1 || v > size {
			t.Errorf("batch_runs[%d].events_per_request = %v, want 1 < it ≤ %v", i, v, size)
		}
	}
	if res.BatchLatencySize != 100 || res.BatchLatencyWaitMS != bench.BatchLatencyWaitMS {
		t.Errorf("batch latency at batch_size %d, batch_wait_ms %d; want 100, %d", res.BatchLatencySize, res.BatchLatencyWaitMS, bench.BatchLatencyWaitMS)
	}
	var table bytes.Buffer
	bench.Print(&table, bench.Options{Batch: []int{10, 100}, Concurrency: 4}, res)
	for _, want := range []string{"batches: 1 webhook", "1 (again)", "target ≥ 0.5", "target ≤ 0.25", "after the first 2xx", "batch_size 100, batch_wait_ms 20"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, table.String())
		}
	}
}

// runBenchSmoke runs the bench with o against the built binary and this
// package's cluster, and checks that each of keys is a positive number in
// its JSON; it returns the result and that JSON.
func runBenchSmoke(t *testing.T, o bench.Options, keys ...string) (*bench.Result, map[string]any) {
	t.Helper()
	o.Exe, o.SelfExe, o.Cluster = walhookBinary(t), walhookBinary(t), cluster
	res, err := bench.Run(t.Context(), o, t.Output())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		if v, ok := got[key].(float64); !ok || !(v > 0) {
			t.Errorf("%s = %v, want a positive number", key, got[key])
		}
	}
	return res, got
}

// TestBenchHelp: walhook bench -h lists the user's flags and none of the
// subprocesses' own, and no usage text names the hidden helper.
func TestBenchHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"bench", "-h"}, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Fatalf("bench -h: err = %v, want errUsage", err)
	}
	help := stderr.String()
	for _, flag := range []string{"-changes", "-backlog", "-exe", "-json", "-store", "-instances", "-when", "-batch"} {
		if !strings.Contains(help, flag) {
			t.Errorf("bench -h does not list %s:\n%s", flag, help)
		}
	}
	for _, hidden := range []string{"-serve", "-ceiling-client", "-ceiling-body", "-pipeline-", "internal", bench.HelperCommand} {
		if strings.Contains(help, hidden) {
			t.Errorf("bench -h lists %q:\n%s", hidden, help)
		}
	}
	if strings.Contains(usage, bench.HelperCommand) {
		t.Errorf("usage names %s", bench.HelperCommand)
	}
}
