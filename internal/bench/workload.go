package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"walhook/cdc"
)

// The workload: the bench's table, its slots and the rows written to it.

// exec runs the statements of sql, one at a time.
func (h *harness) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, h.dsn)
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

// replicationConn is a replication connection as walhook's reader opens
// one, for the bench's slots and its bare reader.
func replicationConn(ctx context.Context, dsn string) (*pgconn.PgConn, error) {
	pc, err := cdc.ReplicationConfig(dsn, "walhook bench")
	if err != nil {
		return nil, err
	}
	return pgconn.ConnectConfig(ctx, pc)
}

// createSlot creates a pgoutput slot now, so it streams every change
// written after.
func (h *harness) createSlot(ctx context.Context, name string) error {
	conn, err := replicationConn(ctx, h.dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = pglogrepl.CreateReplicationSlot(ctx, conn, name, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	return err
}

// dropSlot drops a slot once its last reader let go, so it keeps no WAL.
func (h *harness) dropSlot(ctx context.Context, name string) {
	conn, err := pgx.Connect(ctx, h.dsn)
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
	h.logf("could not drop slot %s", name)
}

// insert writes n rows in transactions of txSize over conns connections
// and returns how long that took. With pace > 0 it offers a steady load:
// transaction i starts no earlier than i × pace after the first.
func (h *harness) insert(ctx context.Context, n, txSize, conns int, pace time.Duration) (time.Duration, error) {
	first := h.nextID
	h.nextID += int64(n)
	var next atomic.Int64
	txs := int64((n + txSize - 1) / txSize)
	errs := make(chan error, conns)
	start := time.Now()
	if pace > 0 {
		start = start.Add(50 * time.Millisecond) // every writer connected first
	}
	for range conns {
		go func() {
			conn, err := pgx.Connect(ctx, h.dsn)
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
				if _, err := conn.Exec(ctx, `INSERT INTO bench (id, payload) SELECT g, $3 FROM generate_series($1::bigint, $2::bigint) g`, lo, hi, h.payload); err != nil {
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

// offeredLoad is the latency load: -rate changes/s for -duration, as n
// rows in transactions of -tx-size, one every pace.
func (h *harness) offeredLoad() (n int, pace time.Duration) {
	txs := max(1, int(float64(h.o.Rate)*h.o.Duration.Seconds())/h.o.TxSize)
	return txs * h.o.TxSize, time.Duration(float64(time.Second) * float64(h.o.TxSize) / float64(h.o.Rate))
}

// bodyLike is a body of the shape and size walhook sends for a bench row.
func (h *harness) bodyLike() []byte {
	now := time.Now().UTC()
	body, _ := json.Marshal(map[string]any{
		"id": "00000000016B3A80-00000003", "event": "bench.create", "entity": "bench", "action": "create",
		"entity_id": "123456", "table": "public.bench", "occurred_at": now.Format(time.RFC3339Nano), "webhook": "h1",
		"data": map[string]any{"id": 123456, "payload": h.payload},
	})
	return body
}

// randomText is n characters of random base64, which PostgreSQL cannot
// compress away.
func randomText(n int) string {
	raw := make([]byte, n)
	rand.Read(raw)
	return base64.RawStdEncoding.EncodeToString(raw)[:n]
}
