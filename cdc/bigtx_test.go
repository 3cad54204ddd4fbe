package cdc_test

import (
	"fmt"
	"testing"
	"time"
)

// TestBigTransactionChunked: a 200,000-row transaction reaches the sink
// whole, in chunks: one commit LSN, ids distinct and in index order, row
// order kept, only the last chunk carrying the EndLSN to confirm.
func TestBigTransactionChunked(t *testing.T) {
	const rows = 200_000
	dsn, name := newDB(t)
	execSQL(t, dsn, `CREATE TABLE big (id int PRIMARY KEY, note text)`)
	sink := &recSink{}
	r := startReader(t, baseConfig(dsn, name, "public.big"), sink)
	waitReady(t, r)
	execSQL(t, dsn, fmt.Sprintf(`INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, %d) g`, rows))
	waitFor(t, 2*time.Minute, func() bool {
		txs := sink.snapshot()
		return len(txs) > 0 && txs[len(txs)-1].EndLSN != 0
	}, "the transaction's last chunk")

	txs := sink.snapshot()
	if len(txs) < 2 {
		t.Fatalf("got %d chunk(s), want the transaction split", len(txs))
	}
	commit := txs[0].CommitLSN
	seen := make(map[string]bool, rows)
	next := 0
	for c, tx := range txs {
		if tx.CommitLSN != commit || !tx.CommitTime.Equal(txs[0].CommitTime) {
			t.Fatalf("chunk %d: commit LSN %X time %v, want %X %v", c, tx.CommitLSN, tx.CommitTime, commit, txs[0].CommitTime)
		}
		if last := c == len(txs)-1; (tx.EndLSN != 0) != last {
			t.Errorf("chunk %d of %d: EndLSN %X (only the last has one)", c, len(txs), tx.EndLSN)
		}
		if len(tx.Events) == 0 || len(tx.Events) > 10_000 {
			t.Errorf("chunk %d holds %d events", c, len(tx.Events))
		}
		for _, ev := range tx.Events {
			if want := fmt.Sprintf("%016X-%08X", commit, next); ev.ID != want || ev.Index != uint32(next) {
				t.Fatalf("event %d: id %s index %d, want %s", next, ev.ID, ev.Index, want)
			}
			if ev.Data["id"] != int64(next+1) {
				t.Fatalf("event %d: row %v, want %d", next, ev.Data["id"], next+1)
			}
			seen[ev.ID] = true
			next++
		}
	}
	if next != rows || len(seen) != rows {
		t.Errorf("got %d events with %d distinct ids, want %d", next, len(seen), rows)
	}
	if tx := txs[len(txs)-1]; tx.EndLSN <= commit {
		t.Errorf("EndLSN %X not past commit %X", tx.EndLSN, commit)
	}
	t.Logf("%d rows in %d chunks", rows, len(txs))
}
