package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
)

// Config says where to read from and what the publication must cover.
type Config struct {
	DSN               string                // libpq/pgx DSN; replication=database is added by the Reader
	Slot              string                // logical replication slot (pgoutput), created if missing
	Publication       string                // publication the slot streams
	ManagePublication bool                  // create/alter the publication; false: use it as the DBA made it
	Tables            []string              // "schema.table" the webhooks need (the managed publication covers exactly these)
	AllTables         bool                  // FOR ALL TABLES (a webhook said "*")
	Required          []string              // "schema.table" that must exist: Run, once connected, stops with a *MissingTablesError before it changes anything
	StatusInterval    time.Duration         // standby status period, default 1s
	Logger            *slog.Logger          // default slog.Default()
	Registerer        prometheus.Registerer // may be nil
}

const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// errSlotInUse marks the wait for another walhook to let go of the slot.
var errSlotInUse = errors.New("slot in use by another process")

// Reader streams a replication slot into a Sink and confirms to PostgreSQL
// only what the Sink reports durable.
type Reader struct {
	cfg  Config
	sink Sink
	log  *slog.Logger

	mu     sync.Mutex // guards tables and all
	tables []tableName
	all    bool

	required []tableName // until they have been found once

	pubMu    sync.Mutex  // one publication change at a time
	pubStale atomic.Bool // the managed publication's last change failed: retried while streaming
	refused  atomic.Pointer[string]

	refusedGauge prometheus.Gauge

	ready     atomic.Bool
	confirmed atomic.Uint64

	// lastWritten is the EndLSN of the last transaction handed to the
	// sink, over all sessions; only Run's loop touches it.
	lastWritten uint64
	// passed is a position every transaction committed before which has
	// been handed to the sink (see Passed).
	passed atomic.Uint64

	lagBytes     prometheus.Gauge
	confirmedLSN prometheus.Gauge
}

// NewReader checks cfg and registers the Reader's metrics.
func NewReader(cfg Config, sink Sink) (*Reader, error) {
	if sink == nil {
		return nil, errors.New("cdc: nil sink")
	}
	if _, err := pgconn.ParseConfig(cfg.DSN); err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	if !slotNameRE.MatchString(cfg.Slot) {
		return nil, fmt.Errorf("slot: must be 1..63 of a-z, 0-9, _ (got %q)", cfg.Slot)
	}
	if cfg.Publication == "" {
		return nil, errors.New("publication: must not be empty")
	}
	tables, err := parseTables(cfg.Tables)
	if err != nil {
		return nil, fmt.Errorf("tables: %w", err)
	}
	required, err := parseTables(cfg.Required)
	if err != nil {
		return nil, fmt.Errorf("required: %w", err)
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reader{
		cfg:      cfg,
		sink:     sink,
		log:      cfg.Logger.With("slot", cfg.Slot),
		tables:   tables,
		all:      cfg.AllTables,
		required: required,
		lagBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walhook_replication_lag_bytes",
			Help: "Bytes of WAL between the server's end and the position confirmed to it.",
		}),
		confirmedLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walhook_confirmed_flush_lsn",
			Help: "The last flush LSN confirmed to PostgreSQL.",
		}),
		refusedGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walhook_publication_refused",
			Help: "1 while tables the webhooks want are left out of the managed publication (missing, UNLOGGED, no primary key or replica identity), else 0.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.lagBytes, r.confirmedLSN, r.refusedGauge} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Ready reports whether the Reader is connected and streaming.
func (r *Reader) Ready() bool { return r.ready.Load() }

// ConfirmedLSN returns the last flush LSN sent to PostgreSQL.
func (r *Reader) ConfirmedLSN() uint64 { return r.confirmed.Load() }

// SetTables changes what the publication must cover. When connected, a
// managed publication is altered now; otherwise at the next connect.
func (r *Reader) SetTables(tables []string, all bool) {
	parsed, err := parseTables(tables)
	if err != nil {
		r.log.Error("set tables: keeping the previous ones", "err", err)
		return
	}
	r.mu.Lock()
	r.tables, r.all = parsed, all
	r.mu.Unlock()
	if !r.cfg.ManagePublication || !r.Ready() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.syncPublication(ctx); err != nil {
		r.log.Error("alter publication", "publication", r.cfg.Publication, "err", err, "retry_in", maxBackoff)
	}
}

// Run connects, makes sure the publication and slot exist and streams until
// ctx is cancelled. Connection and server errors are logged and retried
// with exponential backoff; it returns an error only for a slot it can
// never use.
func (r *Reader) Run(ctx context.Context) error {
	backoff := minBackoff
	for {
		streamed, err := r.session(ctx)
		r.ready.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			r.log.Error("replication stopped", "err", err)
			return err
		}
		if streamed {
			backoff = minBackoff
		}
		switch {
		case errors.Is(err, errSlotInUse):
			r.log.Info("slot in use by another walhook, waiting", "retry_in", backoff)
		case errors.Is(err, ErrPublicationMissing):
			r.log.Error("publication missing: create it or set manage_publication = true", "publication", r.cfg.Publication, "retry_in", backoff)
		default:
			r.log.Error("replication connection failed", "err", err, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// MissingTablesError is what Run returns when tables of Config.Required
// do not exist.
type MissingTablesError struct {
	Tables []string // schema.table
}

// Error names each missing table.
func (e *MissingTablesError) Error() string {
	msgs := make([]string, len(e.Tables))
	for i, t := range e.Tables {
		msgs[i] = fmt.Sprintf("table %s %v", t, ErrTableMissing)
	}
	return strings.Join(msgs, "; ")
}

// Unwrap makes errors.Is(err, ErrTableMissing) hold.
func (e *MissingTablesError) Unwrap() error { return ErrTableMissing }

// checkRequired stops Run on the first connection where a required table
// is missing; once they have all been found, a table dropped later is the
// publication's business (refused), as any other.
func (r *Reader) checkRequired(ctx context.Context, conn *pgx.Conn) error {
	if len(r.required) == 0 {
		return nil
	}
	var missing []string
	for _, name := range r.required {
		t, err := inspect(ctx, conn, name)
		if err != nil {
			return err
		}
		if !t.Exists {
			missing = append(missing, t.String())
		}
	}
	if len(missing) > 0 {
		return &fatalError{&MissingTablesError{Tables: missing}}
	}
	r.required = nil
	return nil
}

// fatalError is a problem no retry can fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// syncPublication makes a managed publication match the wanted tables.
func (r *Reader) syncPublication(ctx context.Context) error {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	r.mu.Lock()
	tables, all := r.tables, r.all
	r.mu.Unlock()
	err = ensurePublication(ctx, conn, r.log, r.cfg.Publication, tables, all)
	r.pubStale.Store(err != nil)
	var u unpublishable
	switch {
	case err == nil:
		r.refused.Store(nil)
		r.refusedGauge.Set(0)
	case errors.As(err, &u):
		msg := err.Error()
		r.refused.Store(&msg)
		r.refusedGauge.Set(1)
	}
	return err
}

// Refused says why tables the webhooks want are left out of the managed
// publication, one line per table ("" when none are).
func (r *Reader) Refused() string {
	if p := r.refused.Load(); p != nil {
		return *p
	}
	return ""
}

// mendPublication retries a failed change of the managed publication while
// the session streams the publication as it is: once the DBA fixed the
// table, its changes come without a restart.
func (r *Reader) mendPublication(ctx context.Context) {
	t := time.NewTicker(maxBackoff)
	defer t.Stop()
	var logged time.Time // the failure was logged when it happened
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !r.pubStale.Load() {
			logged = time.Time{}
			continue
		}
		if logged.IsZero() {
			logged = time.Now()
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := r.syncPublication(sctx)
		cancel()
		switch {
		case err == nil:
			r.log.Info("publication now as wanted", "publication", r.cfg.Publication)
		case time.Since(logged) >= remindEvery:
			// Not every 10 s, but not forgotten either.
			r.log.Error("publication still not as wanted", "publication", r.cfg.Publication, "err", err, "retry_in", maxBackoff)
			logged = time.Now()
		}
	}
}

// remindEvery is how often a publication that stays short of what the
// webhooks want is logged again.
const remindEvery = 5 * time.Minute

// connect opens a normal (non-replication) connection.
func (r *Reader) connect(ctx context.Context) (*pgx.Conn, error) {
	return connect(ctx, r.cfg.DSN, nil)
}

// connect opens a normal (non-replication) connection to dsn with the
// session settings params.
func connect(ctx context.Context, dsn string, params map[string]string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	delete(cc.RuntimeParams, "replication")
	for k, v := range params {
		cc.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// ReplicationConfig is dsn for a logical replication connection, as
// walhook's reader opens it: replication=database, application_name set to
// application, and the session settings the decoder's converters read
// values in. Whoever tests or measures a replication connection opens it
// with this, so it meets what the reader meets.
func ReplicationConfig(dsn, application string) (*pgconn.Config, error) {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pc.RuntimeParams["replication"] = "database"
	pc.RuntimeParams["application_name"] = application
	for k, v := range sessionParams {
		pc.RuntimeParams[k] = v
	}
	return pc, nil
}

// slotState is the slot as pg_replication_slots shows it.
type slotState struct {
	exists         bool
	confirmedFlush uint64
	primaryKeys    map[string][]string // schema.table → primary key columns
	types          typeCatalog         // domains and array types
}

// prepare makes sure the publication is usable and inspects the slot.
func (r *Reader) prepare(ctx context.Context) (slotState, error) {
	var st slotState
	conn, err := r.connect(ctx)
	if err != nil {
		return st, err
	}
	defer conn.Close(context.Background())
	if err := r.checkRequired(ctx, conn); err != nil {
		return st, err
	}
	var syncErr error
	if r.cfg.ManagePublication {
		syncErr = r.syncPublication(ctx)
	}
	if err := publicationExists(ctx, conn, r.cfg.Publication); err != nil {
		if syncErr != nil {
			return st, syncErr // why walhook could not create it
		}
		return st, err
	}
	if syncErr != nil {
		// The publication is streamed with what it could take (tables left
		// out, or unchanged when the change failed). Waiting would not
		// bring a left-out table's changes later (pgoutput publishes what
		// the publication covered when the change was made) and would hold
		// back every other webhook.
		r.log.Error("publication not as wanted: streaming it as it is", "publication", r.cfg.Publication, "err", syncErr, "retry_in", maxBackoff)
	}
	var slotType, plugin, confirmed, walStatus string
	var sameDB bool
	err = conn.QueryRow(ctx, `
		SELECT slot_type, coalesce(plugin, ''), coalesce(database = current_database(), false),
		       coalesce(confirmed_flush_lsn::text, ''), coalesce(wal_status, '')
		FROM pg_replication_slots WHERE slot_name = $1`, r.cfg.Slot).Scan(&slotType, &plugin, &sameDB, &confirmed, &walStatus)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, st.readCatalog(ctx, conn)
	}
	if err != nil {
		return st, fmt.Errorf("look up slot: %w", err)
	}
	if slotType != "logical" || plugin != "pgoutput" || !sameDB {
		return st, &fatalError{fmt.Errorf("slot %s exists but is not a pgoutput logical slot of this database (type %s, plugin %s): drop it or choose another slot name", r.cfg.Slot, slotType, plugin)}
	}
	if walStatus == "lost" {
		// No retry brings back the WAL it needed.
		return st, &fatalError{fmt.Errorf("slot %s was invalidated by PostgreSQL (wal_status = lost: it fell more than max_slot_wal_keep_size behind), "+
			"so the changes after its confirmed position %s are gone: run walhook teardown to drop it and start walhook again, which makes a new slot and delivers from then on",
			r.cfg.Slot, confirmed)}
	}
	st.exists = true
	if err := st.readCatalog(ctx, conn); err != nil {
		return st, err
	}
	if confirmed != "" {
		lsn, err := pglogrepl.ParseLSN(confirmed)
		if err != nil {
			return st, fmt.Errorf("slot confirmed_flush_lsn %q: %w", confirmed, err)
		}
		st.confirmedFlush = uint64(lsn)
	}
	return st, nil
}

// session runs one connection's worth of replication. streamed tells
// whether it got as far as streaming (which resets the backoff).
func (r *Reader) session(ctx context.Context) (streamed bool, err error) {
	st, err := r.prepare(ctx)
	if err != nil {
		return false, err
	}
	pc, err := ReplicationConfig(r.cfg.DSN, "walhook")
	if err != nil {
		return false, &fatalError{fmt.Errorf("dsn: %w", err)}
	}
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return false, fmt.Errorf("replication connect: %w", err)
	}
	defer conn.Close(context.Background())

	if !st.exists {
		r.log.Info("creating the replication slot: PostgreSQL first waits for the transactions open now to end")
		stopWatch := r.watchSlotCreation(ctx)
		_, err := pglogrepl.CreateReplicationSlot(ctx, conn, r.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		stopWatch()
		switch {
		case err == nil:
			r.log.Info("replication slot created")
		case SQLState(err) == SQLStateDuplicateObject:
			// Another walhook created it in between; use it.
		default:
			return false, fmt.Errorf("create slot: %w", err)
		}
	}
	pubArg := strings.ReplaceAll(pgx.Identifier{r.cfg.Publication}.Sanitize(), "'", "''")
	err = pglogrepl.StartReplication(ctx, conn, r.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + pubArg + "'"},
	})
	if err != nil {
		if SQLState(err) == SQLStateObjectInUse {
			return false, fmt.Errorf("%w: %v", errSlotInUse, err)
		}
		return false, fmt.Errorf("start replication: %w", err)
	}
	r.log.Info("replication started", "publication", r.cfg.Publication, "confirmed_flush_lsn", pglogrepl.LSN(st.confirmedFlush).String())
	r.ready.Store(true)
	if r.cfg.ManagePublication {
		mctx, stop := context.WithCancel(ctx)
		defer stop()
		go r.mendPublication(mctx)
	}
	dec := newDecoder(r.log)
	dec.primaryKeys, dec.catalog = st.primaryKeys, st.types
	dec.refresh = func() (map[string][]string, typeCatalog, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := r.connect(rctx)
		if err != nil {
			return nil, typeCatalog{}, err
		}
		defer conn.Close(context.Background())
		var fresh slotState
		err = fresh.readCatalog(rctx, conn)
		return fresh.primaryKeys, fresh.types, err
	}
	s := &stream{r: r, conn: conn, dec: dec, floor: st.confirmedFlush}
	return true, s.run(ctx)
}

// How long creating the slot may take before walhook names the
// transactions it waits for, and then how often it names them again.
const (
	slotWaitFirst = 5 * time.Second
	slotWaitAgain = 30 * time.Second
)

// watchSlotCreation names, in a warning, the transactions that keep the
// slot from being created: PostgreSQL waits for every transaction that
// has written something, in any database, to end first, and an
// application's session left idle in a transaction would otherwise hold
// walhook's first start without a word. The returned func stops it.
func (r *Reader) watchSlotCreation(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait := slotWaitFirst
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = slotWaitAgain
			blockers, err := r.openWriters(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.log.Warn("creating the replication slot waits for open transactions to end; listing them failed", "err", err)
				continue
			}
			r.log.Warn("creating the replication slot waits for these transactions to end: commit or roll them back (pg_terminate_backend ends a forgotten session)",
				"transactions", blockers)
		}
	}()
	return func() { cancel(); <-done }
}

func (r *Reader) openWriters(ctx context.Context) ([]string, error) {
	conn, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return OpenWriters(ctx, conn)
}

// OpenWriters describes the other sessions with a transaction that has
// written something (pid, database, application, state and since when),
// and the prepared transactions: creating a slot waits for them all.
func OpenWriters(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT format('pid %s, database %s, application %s, %s since %s', pid, coalesce(datname, '-'),
		              coalesce(nullif(application_name, ''), '-'), coalesce(state, 'unknown state'),
		              to_char(xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'))
		FROM pg_stat_activity
		WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'
		UNION ALL
		SELECT format('prepared transaction %L, database %s, since %s (COMMIT PREPARED or ROLLBACK PREPARED it)', gid, database,
		              to_char(prepared AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'))
		FROM pg_prepared_xacts`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// stream is one replication connection's loop state.
type stream struct {
	r    *Reader
	conn *pgconn.PgConn
	dec  *decoder

	floor        uint64 // never confirm below the slot's position at start
	idle         uint64 // confirmable once everything written is durable
	serverWALEnd uint64
	next         time.Time // next standby status update

	// The sink's Write waits at most until the next status update (see
	// write); one context per status interval, not one per transaction.
	wctx    context.Context
	wcancel context.CancelFunc
}

func (s *stream) run(ctx context.Context) error {
	// One read deadline per status interval instead of a context per
	// message; cancelling ctx pulls the deadline in to wake the read.
	netConn := s.conn.Conn()
	stop := context.AfterFunc(ctx, func() { netConn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	defer func() {
		if s.wcancel != nil {
			s.wcancel()
		}
	}()
	s.next = time.Now().Add(s.r.cfg.StatusInterval)
	if err := netConn.SetReadDeadline(s.next); err != nil {
		return err
	}
	for {
		if ctx.Err() != nil {
			return s.finish()
		}
		if now := time.Now(); !now.Before(s.next) {
			if err := s.sendStatus(); err != nil {
				return err
			}
			s.next = now.Add(s.r.cfg.StatusInterval)
			if ctx.Err() != nil {
				return s.finish()
			}
			if err := netConn.SetReadDeadline(s.next); err != nil {
				return err
			}
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.handle(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("replication stream ended by the server")
		default:
			s.r.log.Debug("unexpected replication message", "type", fmt.Sprintf("%T", msg))
		}
	}
}

func (s *stream) handle(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return err
		}
		end := uint64(pkm.ServerWALEnd)
		s.serverWALEnd = max(s.serverWALEnd, end)
		if !s.dec.inTx {
			// Every commit before a keepalive has been sent before it.
			s.idle = max(s.idle, end)
			s.r.pass(s.idle)
		}
		if pkm.ReplyRequested {
			return s.sendStatus()
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return err
		}
		s.serverWALEnd = max(s.serverWALEnd, uint64(xld.ServerWALEnd))
		tx, err := s.dec.decode(xld.WALData)
		if err != nil {
			return err
		}
		if tx == nil {
			return nil
		}
		if tx.EndLSN != 0 && len(tx.Events) == 0 {
			s.idle = max(s.idle, tx.EndLSN)
			s.r.pass(s.idle)
			return nil
		}
		if err := s.write(ctx, tx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("sink write: %w", err)
		}
		// A chunk before the last (EndLSN 0) moves nothing: the decoder
		// stays in the transaction, so no keepalive counts as idle until
		// its Commit.
		s.r.lastWritten = max(s.r.lastWritten, tx.EndLSN)
		s.r.pass(tx.EndLSN)
	}
	return nil
}

// write hands tx to the sink. A sink that cannot take it (its store
// failing) holds the loop here, where nothing answers the server: so the
// wait is cut at each status deadline to send a standby status update with
// the position confirmed so far, and however long the sink waits, the
// walsender does not time the connection out (wal_sender_timeout).
func (s *stream) write(ctx context.Context, tx *Tx) error {
	paused := false
	for {
		if s.wctx == nil || s.wctx.Err() != nil {
			if s.wcancel != nil {
				s.wcancel()
			}
			s.wctx, s.wcancel = context.WithDeadline(ctx, s.next)
		}
		err := s.r.sink.Write(s.wctx, tx)
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			if paused {
				s.r.log.Debug("the sink takes changes again: reading resumes")
			}
			return err
		}
		if !paused {
			paused = true
			s.r.log.Debug("the sink does not take changes: reading paused, standby status updates go on", "confirmed_lsn", pglogrepl.LSN(s.r.confirmed.Load()).String())
		}
		if err := s.sendStatus(); err != nil {
			return err
		}
		s.next = time.Now().Add(s.r.cfg.StatusInterval)
		if err := s.conn.Conn().SetReadDeadline(s.next); err != nil {
			return err
		}
	}
}

// pass records that every transaction committed before lsn has been
// handed to the sink.
func (r *Reader) pass(lsn uint64) {
	for {
		old := r.passed.Load()
		if lsn <= old || r.passed.CompareAndSwap(old, lsn) {
			return
		}
	}
}

// Passed is a WAL position every transaction committed before which has
// been handed to the sink: a snapshot taken at that position is older
// than everything the sink is handed from now on.
func (r *Reader) Passed() uint64 { return r.passed.Load() }

// finish runs on a graceful stop: it gives the sink a moment to make what
// it was handed durable, then confirms that, so whoever reads the slot next
// does not get it again. A sink that is not done in time only costs
// duplicates.
func (s *stream) finish() error {
	deadline := time.Now().Add(3 * time.Second)
	for s.r.sink.Durable() < s.r.lastWritten && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.sendStatus(); err != nil {
		s.r.log.Warn("final confirmation on stop failed", "err", err)
	}
	return nil
}

// position is what may be confirmed now: what the sink made durable, or,
// when nothing written is still waiting for that, the idle position too.
func (s *stream) position() uint64 {
	durable := s.r.sink.Durable()
	// Never step back: PostgreSQL 15 would lower the slot's position.
	pos := max(durable, s.floor, s.r.confirmed.Load())
	if !s.dec.inTx && durable >= s.r.lastWritten {
		pos = max(pos, s.idle)
	}
	return pos
}

func (s *stream) sendStatus() error {
	pos := s.position()
	lsn := pglogrepl.LSN(pos)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn,
	})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	if old := s.r.confirmed.Swap(pos); old != pos {
		s.r.log.Debug("confirmed", "lsn", lsn.String())
	}
	s.r.confirmedLSN.Set(float64(pos))
	lag := 0.0
	if s.serverWALEnd > pos {
		lag = float64(s.serverWALEnd - pos)
	}
	s.r.lagBytes.Set(lag)
	return nil
}

// readCatalog reads what the decoder needs from the catalog: the tables'
// primary keys, the domains' base types and the array types' elements.
func (st *slotState) readCatalog(ctx context.Context, conn *pgx.Conn) error {
	var err error
	if st.primaryKeys, err = primaryKeys(ctx, conn); err != nil {
		return err
	}
	if st.types.bases, err = domainBases(ctx, conn); err != nil {
		return err
	}
	st.types.arrays, st.types.known, err = arrayAndUserTypes(ctx, conn)
	return err
}

// domainBases maps every domain type to the type it is ultimately based on:
// pgoutput names a column's own type, and a domain over int should still
// give a number.
func domainBases(ctx context.Context, conn *pgx.Conn) (map[uint32]uint32, error) {
	rows, err := conn.Query(ctx, `
		WITH RECURSIVE d(oid, base) AS (
			SELECT oid, typbasetype FROM pg_type WHERE typtype = 'd'
			UNION ALL
			SELECT d.oid, t.typbasetype FROM d JOIN pg_type t ON t.oid = d.base AND t.typtype = 'd')
		SELECT d.oid::int8, d.base::int8 FROM d JOIN pg_type bt ON bt.oid = d.base AND bt.typtype <> 'd'`)
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	out := make(map[uint32]uint32)
	var domain, base int64
	if _, err := pgx.ForEachRow(rows, []any{&domain, &base}, func() error {
		out[uint32(domain)] = uint32(base)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	return out, nil
}

// arrayAndUserTypes maps every array type to its element type and
// delimiter (the arrays of enums, domains and extension types have OIDs of
// their own database, which pgx cannot know), and lists the types past the
// built-in ones: one pass over pg_type.
func arrayAndUserTypes(ctx context.Context, conn *pgx.Conn) (map[uint32]arrayType, map[uint32]bool, error) {
	rows, err := conn.Query(ctx, `
		SELECT t.oid::int8, coalesce(e.oid, 0)::int8, coalesce(ascii(e.typdelim), 0)
		FROM pg_type t LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem
		WHERE t.oid >= 10000 OR t.typcategory = 'A'`)
	if err != nil {
		return nil, nil, fmt.Errorf("list types: %w", err)
	}
	arrays, known := make(map[uint32]arrayType), make(map[uint32]bool)
	var oid, elem int64
	var delim int32
	if _, err := pgx.ForEachRow(rows, []any{&oid, &elem, &delim}, func() error {
		if elem != 0 {
			arrays[uint32(oid)] = arrayType{elem: uint32(elem), delim: byte(delim)}
		}
		if oid >= 10000 {
			known[uint32(oid)] = true
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("list types: %w", err)
	}
	return arrays, known, nil
}

// primaryKeys lists the primary key columns of every table in the database.
func primaryKeys(ctx context.Context, conn *pgx.Conn) (map[string][]string, error) {
	rows, err := conn.Query(ctx, `
		SELECT n.nspname || '.' || c.relname, array_agg(a.attname::text ORDER BY a.attnum)
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
		WHERE i.indisprimary
		GROUP BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list primary keys: %w", err)
	}
	out := make(map[string][]string)
	var table string
	var cols []string
	if _, err := pgx.ForEachRow(rows, []any{&table, &cols}, func() error {
		out[table] = cols
		cols = nil
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list primary keys: %w", err)
	}
	return out, nil
}
