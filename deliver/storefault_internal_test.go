package deliver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
	"weak"

	"walhook/cdc"
)

// While the store cannot commit, Write lets through no more than
// faultWaitingEvents: what is held is built again at every retry, and a
// batch's worth (maxWaitingEvents) held and built again was what grew
// walhook's memory on a full disk. Once the store commits again, every
// transaction is stored and Write takes a batch's worth again.
func TestStoreFaultHoldsLittle(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	q := openWith(t, t.TempDir(), srv.URL, []string{"h"}, nil)
	diskFull := fmt.Errorf("no space left on device")
	q.failCommit.Store(&diskFull)

	const per = 10 // events a transaction, as from ~1,000 changes/s
	lsn := uint64(0)
	tx := func() *cdc.Tx {
		lsn += 2
		tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now()}
		for i := range per {
			tx.Events = append(tx.Events, cdc.Event{ID: cdc.EventID(lsn, uint32(i)), Schema: "public", Table: "t",
				Action: cdc.ActionCreate, EntityID: fmt.Sprint(lsn*100 + uint64(i))})
		}
		return tx
	}
	if err := q.Write(t.Context(), tx()); err != nil {
		t.Fatal(err)
	}
	if !eventually(5*time.Second, func() bool { return q.Healthy() != nil }) {
		t.Fatal("Healthy stays nil while commits fail")
	}
	// Write until it waits: what it let through is what walhook holds.
	held := per
	for held <= maxWaitingEvents {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		err := q.Write(ctx, tx())
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			lsn -= 2 // not handed over
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		held += per
	}
	if held > faultWaitingEvents {
		t.Errorf("Write let %d events through while the store could not commit, want at most %d", held, faultWaitingEvents)
	}

	q.failCommit.Store(nil)
	last := lsn + 1
	if !eventually(15*time.Second, func() bool { return q.Durable() == last && q.Healthy() == nil }) {
		t.Fatalf("after the store commits again: Durable %d, want %d; Healthy %v", q.Durable(), last, q.Healthy())
	}
	// The bound is a batch's worth again: more than faultWaitingEvents
	// are let through while the committer has not taken them yet.
	q.gate.mu.Lock()
	q.gate.n += maxWaitingEvents - 2*faultWaitingEvents // as if that many waited for the committer
	q.gate.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := q.Write(ctx, tx())
	q.gate.release(maxWaitingEvents - 2*faultWaitingEvents)
	if err != nil {
		t.Errorf("Write with %d events waiting after the store recovered: %v, want it let through", maxWaitingEvents-2*faultWaitingEvents, err)
	}
}

// Once its batch is committed, the committer holds none of its
// transactions: after a backlog (here the batch that waited while commits
// failed) a batch's items left in the slice's backing array kept their
// events alive as long as walhook ran.
func TestCommitterKeepsNoCommittedTx(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	q := openWith(t, t.TempDir(), srv.URL, []string{"h"}, nil)
	diskFull := fmt.Errorf("no space left on device")
	q.failCommit.Store(&diskFull)
	write := func(lsn uint64) weak.Pointer[cdc.Tx] {
		tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now(), Events: []cdc.Event{{
			ID: cdc.EventID(lsn, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, EntityID: fmt.Sprint(lsn),
		}}}
		if err := q.Write(t.Context(), tx); err != nil {
			t.Fatal(err)
		}
		return weak.Make(tx)
	}
	const waiting = 50
	var txs []weak.Pointer[cdc.Tx]
	for i := range waiting {
		txs = append(txs, write(uint64(10+2*i)))
	}
	if !eventually(5*time.Second, func() bool { return q.Healthy() != nil }) {
		t.Fatal("Healthy stays nil while commits fail")
	}
	q.failCommit.Store(nil)
	last := uint64(10 + 2*(waiting-1) + 1)
	if !eventually(15*time.Second, func() bool { return q.Durable() == last }) {
		t.Fatalf("Durable %d after the store commits again, want %d", q.Durable(), last)
	}
	// A later commit of one transaction reuses the batch's first item.
	txs = append(txs, write(last+1))
	if !eventually(5*time.Second, func() bool { return q.Durable() == last+2 }) {
		t.Fatalf("Durable %d, want %d", q.Durable(), last+2)
	}
	kept := func() int {
		runtime.GC()
		n := 0
		for _, p := range txs {
			if p.Value() != nil {
				n++
			}
		}
		return n
	}
	if !eventually(5*time.Second, func() bool { return kept() == 0 }) {
		t.Errorf("%d of %d committed transactions are still reachable", kept(), len(txs))
	}
}
