package cdc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"walhook/cdc"
	"walhook/internal/pgcluster"
	"walhook/internal/testkit"
)

// cluster is shared by the package's tests; each test gets its own
// database and slot.
var cluster *pgcluster.Cluster

func TestMain(m *testing.M) {
	ctx := context.Background()
	// Prepared transactions are what XA transaction managers leave.
	c, err := pgcluster.Start(ctx, "max_prepared_transactions=10")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdc tests need PostgreSQL:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

// recSink records transactions; the test decides what is durable.
type recSink struct {
	mu      sync.Mutex
	txs     []*cdc.Tx
	durable atomic.Uint64
}

func (s *recSink) Write(_ context.Context, tx *cdc.Tx) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txs = append(s.txs, tx)
	return nil
}

func (s *recSink) Durable() uint64 { return s.durable.Load() }

// snapshot returns the transactions received so far.
func (s *recSink) snapshot() []*cdc.Tx {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*cdc.Tx(nil), s.txs...)
}

// events returns every event received so far, in order.
func (s *recSink) events() []cdc.Event {
	var out []cdc.Event
	for _, tx := range s.snapshot() {
		out = append(out, tx.Events...)
	}
	return out
}

// waitEvents waits until at least n events have arrived and returns them.
func (s *recSink) waitEvents(t *testing.T, n int) []cdc.Event {
	t.Helper()
	var got []cdc.Event
	waitFor(t, 15*time.Second, func() bool {
		got = s.events()
		return len(got) >= n
	}, fmt.Sprintf("%d events", n))
	return got
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	testkit.WaitFor(t, timeout, what, cond)
}

var (
	nameRE = regexp.MustCompile(`[^a-z0-9_]+`)
	dbSeq  atomic.Int64
)

// newDB creates a database for the test and returns its DSN and a name
// usable for the slot and publication.
func newDB(t *testing.T) (dsn, name string) {
	t.Helper()
	name = "t_" + nameRE.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 50 {
		name = name[:50]
	}
	name = fmt.Sprintf("%s_%d", name, dbSeq.Add(1)) // unique under -count=N
	dsn, err := cluster.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn, name
}

// execSQL runs statements on a fresh connection.
func execSQL(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// queryLSN runs a query returning one pg_lsn (or NULL as 0).
func queryLSN(t *testing.T, dsn, q string, args ...any) uint64 {
	t.Helper()
	ctx := context.Background()
	conn := testkit.Connect(t, dsn)
	defer conn.Close(ctx)
	var s *string
	if err := conn.QueryRow(ctx, q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if s == nil {
		return 0
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(lsn)
}

func confirmedFlush(t *testing.T, dsn, slot string) uint64 {
	t.Helper()
	return queryLSN(t, dsn, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot)
}

// syncBuffer is a log destination the test reads while the code writes.
type syncBuffer = testkit.SyncBuffer

// running is a Reader started by a test.
type running struct {
	*cdc.Reader
	logs *syncBuffer
	stop func()
}

// startReader runs a Reader until the test ends (or stop is called) and
// drops its slot and publication afterwards.
func startReader(t *testing.T, cfg cdc.Config, sink cdc.Sink) *running {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 100 * time.Millisecond
	}
	r, err := cdc.NewReader(cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("reader log:\n%s", logs.String())
		}
		if err := cdc.Teardown(context.Background(), cfg.DSN, cfg.Slot, cfg.Publication); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return &running{Reader: r, logs: logs, stop: stop}
}

func waitReady(t *testing.T, r *running) {
	t.Helper()
	waitFor(t, 15*time.Second, r.Ready, "reader ready")
}

// baseConfig is a managed publication over tables.
func baseConfig(dsn, name string, tables ...string) cdc.Config {
	return cdc.Config{DSN: dsn, Slot: name, Publication: name, ManagePublication: true, Tables: tables}
}

// streamTables starts a reader of tables in the test's database (dsn, with
// slot and publication name), with a sink of its own, and waits until it
// streams.
func streamTables(t *testing.T, dsn, name string, tables ...string) (*running, *recSink) {
	t.Helper()
	sink := &recSink{}
	r := startReader(t, baseConfig(dsn, name, tables...), sink)
	waitReady(t, r)
	return r, sink
}
