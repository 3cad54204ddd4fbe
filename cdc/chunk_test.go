package cdc

import (
	"fmt"
	"testing"
)

// TestDecodeChunks: a transaction bigger than the chunk size comes out in
// chunks as it is decoded; ids and indexes run on across them, only the
// last chunk has an EndLSN, and it is never empty.
func TestDecodeChunks(t *testing.T) {
	d := newDecoder(discardLogger())
	d.chunkSize = 2
	mustDecode(t, d, relationMsg(16384, "public", "employees", 'd', benchCols))
	if tx := mustDecode(t, d, beginMsg(0x100)); tx != nil {
		t.Fatalf("begin handed out %+v", tx)
	}
	var chunks []*Tx
	for range 4 {
		if tx := mustDecode(t, d, insertMsg(16384, benchValues...)); tx != nil {
			chunks = append(chunks, tx)
		}
	}
	if len(chunks) != 1 || len(chunks[0].Events) != 2 || chunks[0].EndLSN != 0 || !d.inTx {
		t.Fatalf("after 4 inserts: %d chunks (want 1 of 2 events, EndLSN 0), inTx %v", len(chunks), d.inTx)
	}
	last := mustDecode(t, d, commitMsg(0x100, 0x180))
	if last == nil || len(last.Events) != 2 || last.EndLSN != 0x180 || d.inTx {
		t.Fatalf("commit handed out %+v, inTx %v; want the last 2 events with EndLSN 0x180", last, d.inTx)
	}
	chunks = append(chunks, last)
	i := 0
	for _, c := range chunks {
		if c.CommitLSN != 0x100 || !c.CommitTime.Equal(chunks[0].CommitTime) {
			t.Errorf("chunk commit LSN %X time %v", c.CommitLSN, c.CommitTime)
		}
		for _, ev := range c.Events {
			if want := fmt.Sprintf("%016X-%08X", 0x100, i); ev.ID != want || ev.Index != uint32(i) || ev.CommitLSN != 0x100 {
				t.Errorf("event %d: id %s index %d lsn %X, want id %s", i, ev.ID, ev.Index, ev.CommitLSN, want)
			}
			i++
		}
	}

	// Exactly a chunk's worth: the last chunk holds it all, none before.
	mustDecode(t, d, beginMsg(0x200))
	for range 2 {
		if tx := mustDecode(t, d, insertMsg(16384, benchValues...)); tx != nil {
			t.Fatalf("a chunk went out before it overflowed: %+v", tx)
		}
	}
	if tx := mustDecode(t, d, commitMsg(0x200, 0x280)); tx == nil || len(tx.Events) != 2 || tx.EndLSN != 0x280 {
		t.Fatalf("commit handed out %+v", tx)
	}
}

// TestDecodeCommitMustMatchBegin: ids are made from Begin's LSN, so a
// Commit at another LSN is an error, not silently different ids.
func TestDecodeCommitMustMatchBegin(t *testing.T) {
	d := newDecoder(discardLogger())
	mustDecode(t, d, beginMsg(0x100))
	if _, err := d.decode(commitMsg(0x101, 0x180)); err == nil {
		t.Fatal("commit at another LSN than begin's was accepted")
	}
}
