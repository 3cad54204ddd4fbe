package store_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver/store"
)

// BenchmarkPostgresCommit measures one commit as the latency load makes
// them (2,000 changes/s in transactions of 10): two transactions' events
// for one webhook, the outcomes of the twenty deliveries before them,
// the webhook's counters and a chart bucket. It reports the commit's
// time; the latency of a change is about two of them.
func BenchmarkPostgresCommit(b *testing.B) {
	s, err := store.OpenPostgres(b.Context(), store.PostgresOptions{
		DSN: cluster.DSN("postgres"), Schema: fmt.Sprint("walhook_bench_", time.Now().UnixNano()), Retention: 100,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Lead(b.Context()); err != nil {
		b.Fatal(err)
	}
	var prev []store.Queued
	lsn := uint64(0x1000000)
	calls := int64(0)
	b.ResetTimer()
	for i := range b.N {
		batch := &store.Batch{}
		for range 2 {
			lsn += 0x1000
			tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now()}
			var targets [][]string
			for j := range 10 {
				tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(lsn, uint32(j)), CommitLSN: lsn, Index: uint32(j), CommitTime: tx.CommitTime,
					Schema: "public", Table: "items", Action: cdc.ActionModify, Entity: "items", EntityID: fmt.Sprint(i*20 + j),
					Data: map[string]any{"id": int64(j), "note": "a row of the bench's table, about as wide as its rows"}})
				targets = append(targets, []string{"h"})
			}
			batch.Appends = append(batch.Appends, store.Append{Tx: tx, Targets: targets})
		}
		for _, q := range prev {
			rec := *q.Record
			rec.Status = store.StatusSuccess
			rec.Attempts = []store.Attempt{{N: 1, At: time.Now(), Status: 200}}
			batch.Outcomes = append(batch.Outcomes, store.Outcome{Webhook: "h", Seq: q.Seq, Record: &rec, Done: true})
			calls++
		}
		batch.Counters = map[string]store.Counters{"h": {LatestStatus: 200, SuccessfulCalls: calls, TotalCalls: calls, LastAttemptAt: time.Now()}}
		batch.Charts = []store.ChartBucket{{Webhook: "h", Slot: 1, Bucket: store.Bucket{Start: time.Now().Unix() / 60 * 60, OK: uint32(calls)}}}
		if prev, err = s.Commit(batch); err != nil {
			b.Fatal(err)
		}
	}
}
