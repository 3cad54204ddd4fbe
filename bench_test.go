package main

import (
	"encoding/json"
	"testing"
	"time"
)

// TestBenchSmoke runs walhook bench with tiny sizes against the built
// binary: every phase completes and reports positive figures under the
// documented JSON keys. It asserts no timing.
func TestBenchSmoke(t *testing.T) {
	res, err := runBench(t.Context(), benchOptions{
		changes: 200, txSize: 10, webhooks: 2, rowWidth: 64, concurrency: 4,
		rate: 400, duration: time.Second, backlog: 100, bigTx: 100, backfill: 100,
		ceiling: 300 * time.Millisecond, exe: walhookBinary(t), selfExe: walhookBinary(t), cluster: cluster,
	}, t.Output())
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
	for _, key := range []string{
		"decode_ceiling_eps", "http_ceiling_rps", "e2e_eps", "e2e_4_webhooks_rps",
		"p50_ms", "p99_ms", "p999_ms", "peak_rss_mb", "ratio", "e2e_cpu_us_per_event",
		"http_ceiling_own_process_rps", "ratio_own_process", "pipeline_floor_eps", "ratio_pipeline_floor", "pipeline_floor_4_webhooks_rps", "ratio_pipeline_floor_4_webhooks",
		"backlog_rss_mb", "store_bytes_per_delivery", "backlog_first_delivery_ms", "backlog_drain_eps", "backlog_restart_rss_mb",
		"big_tx_eps", "big_tx_rss_mb",
		"backfill_rows", "backfill_read_eps", "backfill_drain_eps", "backfill_own_p99_ms", "backfill_other_p99_ms",
	} {
		v, ok := got[key].(float64)
		if !ok || !(v > 0) {
			t.Errorf("%s = %v, want a positive number", key, got[key])
		}
	}
}
