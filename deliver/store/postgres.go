package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"walhook/cdc"
)

// PostgresVersion is the version of the tables this walhook writes. A store
// whose tables are newer is refused: an older binary must not write into a
// layout it does not know.
const PostgresVersion = 4

// callTimeout bounds each call on the store's database: a database that
// stops answering fails the call, which the caller retries or reports,
// instead of holding walhook forever.
const callTimeout = 30 * time.Second

// PostgresOptions configure a Postgres store.
type PostgresOptions struct {
	DSN       string // the database that holds the store
	Schema    string // its schema; default "walhook"
	Retention int    // completed deliveries kept per webhook; failed ones stay until delivered again
	Logger    *slog.Logger
	// Lead: the walhook that leads the store opens it (see Leader); it
	// takes the next epoch, and its writes fail with ErrFenced once
	// another has taken a later one. Tools and tests leave it false.
	Lead bool
}

// ErrFenced: another walhook leads the store now; this one's write was
// refused, so that a leader that lost its lock cannot overwrite the next.
var ErrFenced = errors.New("another walhook leads the store now (its epoch is newer): this walhook's write was refused")

// Postgres is the store in tables of one schema of a PostgreSQL database
// (see pgSchemaV1 for the layout). It keeps what Bolt keeps, with the same
// meaning: one row per event with the count of deliveries that refer to
// it, one row per delivery keyed by webhook and sequence. Commit writes a
// batch in one transaction; PostgreSQL's commit makes it durable.
type Postgres struct {
	pool      *pgxpool.Pool
	schema    string // quoted
	retention int
	log       *slog.Logger
	durable   atomic.Uint64
	loaded    *lru.Cache[string, *cdc.Event] // events read back, shared by the webhooks that load them
	// unpruned counts the successes stored per webhook since its last
	// prune; Commit's alone (see pruneEvery).
	unpruned map[string]int
	prunes   map[string]pruned       // Commit's alone, as unpruned
	epoch    atomic.Int64            // this leader's (see Lead); 0: not checked
	channel  string                  // of the notes between walhooks sharing the store (see Listen)
	origin   string                  // this store's in its notes: a walhook does not hear its own
	counted  noted[string, Counters] // the counters as this walhook last stored them (see pgCommit.counters)
	charted  noted[chartKey, Bucket] // the chart buckets as this walhook last stored them (see pgCommit.putCharts)
}

// RedactDSN hides the password of a connection string, URL or key=value
// form, for messages.
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	fields := strings.Fields(dsn)
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			fields[i] = k + "=xxxxx"
		}
	}
	return strings.Join(fields, " ")
}

// OpenPostgres connects to the store's database, creates or migrates its
// tables and reads the durable position.
func OpenPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Schema == "" {
		o.Schema = "walhook"
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("store dsn %s: %w", RedactDSN(o.DSN), err)
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "walhook store"
	}
	// A commit is durable when COMMIT returns, whatever the database's or
	// role's default: walhook confirms the WAL position it stored.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		return nil, fmt.Errorf("open store at %s: %w", RedactDSN(o.DSN), err)
	}
	loaded, _ := lru.New[string, *cdc.Event](loadedEvents)
	s := &Postgres{pool: pool, schema: pgx.Identifier{o.Schema}.Sanitize(), retention: o.Retention, log: o.Logger, loaded: loaded, unpruned: map[string]int{}, prunes: map[string]pruned{},
		channel: "walhook " + o.Schema, origin: rand.Text()}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store at %s, schema %s: %w", RedactDSN(o.DSN), o.Schema, err)
	}
	if err := s.readDurable(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	if o.Lead {
		if err := s.Lead(ctx); err != nil {
			pool.Close()
			return nil, err
		}
	}
	return s, nil
}

// readDurable reads the durable position stored.
func (s *Postgres) readDurable(ctx context.Context) error {
	var v []byte
	err := s.pool.QueryRow(ctx, s.sql(`SELECT value FROM {s}.meta WHERE key = 'durable_lsn'`)).Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store: read durable position: %w", err)
	}
	if len(v) == 8 {
		s.durable.Store(binary.BigEndian.Uint64(v))
	}
	return nil
}

// Lead makes this walhook the one that writes events: for the walhook that
// has just taken the leader lock (see Leader). It takes the next epoch,
// which fences the commits of events of every earlier leader (see
// seqLock), and reads the durable position the previous leader stored.
func (s *Postgres) Lead(ctx context.Context) error {
	var epoch int64
	err := s.pool.QueryRow(ctx, s.sql(`INSERT INTO {s}.leader VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET epoch = {s}.leader.epoch + 1 RETURNING epoch`)).Scan(&epoch)
	if err != nil {
		return fmt.Errorf("store: take the leader's epoch: %w", err)
	}
	s.epoch.Store(epoch)
	return s.readDurable(ctx)
}

// seqLock serializes the transactions that hand out delivery sequences
// (Commit, Redeliver): a sequence taken must not become visible after a
// greater one, or a window read in between would pass it by. With a
// leader's epoch and fence (a transaction that writes events) it also
// fences the transaction: the epoch row is locked for share, so a new
// leader's count-up waits for it, and it is refused if the epoch has moved
// on. Outcomes and redeliveries are not fenced: every walhook sharing the
// store writes those. It returns the durable position stored.
func (s *Postgres) seqLock(ctx context.Context, tx pgx.Tx, fence bool) (uint64, error) {
	var b pgx.Batch
	var persisted uint64
	s.queueSeqLock(&b, fence, &persisted)
	err := tx.SendBatch(ctx, &b).Close()
	return persisted, err
}

// queueSeqLock queues seqLock's statement in b, to be sent with others:
// the durable position goes to persisted.
func (s *Postgres) queueSeqLock(b *pgx.Batch, fence bool, persisted *uint64) {
	b.Queue(s.sql(`SELECT (SELECT value FROM {s}.meta WHERE key = 'durable_lsn'),
		(SELECT epoch FROM {s}.leader WHERE id = 1 FOR SHARE) FROM pg_advisory_xact_lock($1, hashtext($2))`), leaderKey+1, s.schema).QueryRow(func(row pgx.Row) error {
		var v []byte
		var epoch *int64
		if err := row.Scan(&v, &epoch); err != nil {
			return err
		}
		if mine := s.epoch.Load(); fence && mine != 0 && (epoch == nil || *epoch != mine) {
			return ErrFenced
		}
		if len(v) == 8 {
			*persisted = binary.BigEndian.Uint64(v)
		}
		return nil
	})
}

// sql puts the store's schema in place of {s}.
func (s *Postgres) sql(q string) string { return strings.ReplaceAll(q, "{s}", s.schema) }

// pgSchemaV1 is the store's first layout. Deliveries are keyed by webhook
// and a sequence shared by all webhooks (it grows in commit order, which
// is all a webhook's queue needs); status is 'p'ending, 's'uccess or
// 'f'ailed, as the record's first byte; record is the binary record
// (recordcodec.go) and body the binary event (eventcodec.go).
const pgSchemaV1 = `
CREATE TABLE {s}.meta (key text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE {s}.events (id text PRIMARY KEY, refs integer NOT NULL, body bytea NOT NULL);
CREATE SEQUENCE {s}.delivery_seq;
CREATE TABLE {s}.deliveries (
	webhook  text   NOT NULL,
	seq      bigint NOT NULL,
	status   "char" NOT NULL,
	event_id text   NOT NULL,
	record   bytea  NOT NULL,
	PRIMARY KEY (webhook, seq)
);
CREATE INDEX deliveries_pending ON {s}.deliveries (webhook, seq) WHERE status = 'p';
CREATE INDEX deliveries_status ON {s}.deliveries (webhook, status, seq);
CREATE TABLE {s}.counters (webhook text PRIMARY KEY, value jsonb NOT NULL);
CREATE TABLE {s}.webhooks (name text PRIMARY KEY, def bytea NOT NULL);
CREATE TABLE {s}.switched_off (name text PRIMARY KEY, url text NOT NULL);
`

// pgSchemaV2 lets the history be searched (Postgres.Find): a delivery's
// entity id, event name and creation time, which v1 kept only inside the
// binary record, become columns (filled from the records of v1 by
// fillSearchColumns), with an index per entity id and per event id; and
// it adds the charts' buckets (Postgres.Chart).
const pgSchemaV2 = `
ALTER TABLE {s}.deliveries ADD COLUMN entity_id text, ADD COLUMN event text, ADD COLUMN created_at timestamptz;
CREATE INDEX deliveries_entity ON {s}.deliveries (webhook, entity_id, seq);
CREATE INDEX deliveries_event_id ON {s}.deliveries (webhook, event_id);
CREATE TABLE {s}.charts (webhook text NOT NULL, slot smallint NOT NULL, bucket bytea NOT NULL, PRIMARY KEY (webhook, slot));
`

// pgSchemaV3 adds the leader's epoch: each walhook that leads the store
// counts it up when it opens the store, and its commits check it is still
// theirs (see Postgres.seqLock).
const pgSchemaV3 = `
CREATE TABLE {s}.leader (id integer PRIMARY KEY CHECK (id = 1), epoch bigint NOT NULL);
`

// pgSchemaV4 lets several walhooks deliver side by side: each delivery
// has the partition of its entity id (PartOf; filled by fillParts for the
// pending deliveries of v3), the partitions have leases (Postgres.Claim),
// and each walhook sharing the store says it is alive in instances.
const pgSchemaV4 = `
ALTER TABLE {s}.deliveries ADD COLUMN part smallint;
CREATE TABLE {s}.instances (
	id      text        PRIMARY KEY,
	name    text        NOT NULL,
	admin   text        NOT NULL,
	config  text        NOT NULL,
	leader  boolean     NOT NULL,
	seen_at timestamptz NOT NULL
);
CREATE TABLE {s}.partitions (part smallint PRIMARY KEY, owner text, lease_until timestamptz);
INSERT INTO {s}.partitions (part) SELECT generate_series(0, %d);
`

// migrate creates the schema's tables, or brings them to PostgresVersion,
// under a transaction-scoped advisory lock so that walhooks starting
// together migrate once.
func (s *Postgres) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('walhook store migration ' || $1))`, s.schema); err != nil {
		return err
	}
	// DDL only when something is missing: a role that may only read and
	// write the tables (the schema made for it by a DBA) opens them too.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, s.schema+".schema_version").Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := tx.Exec(ctx, s.sql(`CREATE SCHEMA IF NOT EXISTS {s}; CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer PRIMARY KEY)`)); err != nil {
			return fmt.Errorf("create the schema: %w", err)
		}
	}
	var version int
	if err := tx.QueryRow(ctx, s.sql(`SELECT coalesce(max(version), 0) FROM {s}.schema_version`)).Scan(&version); err != nil {
		return err
	}
	switch {
	case version > PostgresVersion:
		return fmt.Errorf("its tables are version %d, newer than this walhook knows (%d): run the walhook that wrote them, or a newer one", version, PostgresVersion)
	case version == PostgresVersion:
		return nil
	}
	if version < 1 {
		if _, err := tx.Exec(ctx, s.sql(pgSchemaV1)); err != nil {
			return fmt.Errorf("create the tables (version 1): %w", err)
		}
		if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {s}.schema_version VALUES (1)`)); err != nil {
			return err
		}
	}
	if version < 2 {
		if _, err := tx.Exec(ctx, s.sql(pgSchemaV2)); err != nil {
			return fmt.Errorf("migrate the tables to version 2: %w", err)
		}
		if err := s.fillSearchColumns(ctx, tx); err != nil {
			return fmt.Errorf("migrate the tables to version 2: %w", err)
		}
		// One row, the version: what an older walhook reads and refuses.
		if _, err := tx.Exec(ctx, s.sql(`UPDATE {s}.schema_version SET version = 2`)); err != nil {
			return err
		}
	}
	if version < 3 {
		if _, err := tx.Exec(ctx, s.sql(pgSchemaV3)); err != nil {
			return fmt.Errorf("migrate the tables to version 3: %w", err)
		}
		if _, err := tx.Exec(ctx, s.sql(`UPDATE {s}.schema_version SET version = 3`)); err != nil {
			return err
		}
	}
	if version < 4 {
		if _, err := tx.Exec(ctx, s.sql(fmt.Sprintf(pgSchemaV4, Partitions-1))); err != nil {
			return fmt.Errorf("migrate the tables to version 4: %w", err)
		}
		if err := s.fillParts(ctx, tx); err != nil {
			return fmt.Errorf("migrate the tables to version 4: %w", err)
		}
		if _, err := tx.Exec(ctx, s.sql(`UPDATE {s}.schema_version SET version = 4`)); err != nil {
			return err
		}
	}
	s.log.Info("store tables created", "schema", s.schema, "from_version", version, "version", PostgresVersion)
	return tx.Commit(ctx)
}

// fillChunk is the rows a migration's statement fills at once.
var fillChunk = 10000

// fillByKey goes through the deliveries query selects (its $1, $2 and $3
// are the key it starts after and the chunk's size; it orders by the key),
// a chunk at a time from where the last ended by the primary key (linear
// in the table), scanning each row with scan, which returns the row's key,
// and writing each chunk with write.
func fillByKey(ctx context.Context, tx pgx.Tx, query string, scan func(pgx.Rows) (string, int64, error), write func() error) error {
	lastName, lastSeq := "", int64(-1)
	for {
		rows, err := tx.Query(ctx, query, lastName, lastSeq, fillChunk)
		if err != nil {
			return err
		}
		n := 0
		for ; rows.Next(); n++ {
			if lastName, lastSeq, err = scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if err := write(); err != nil {
			return err
		}
	}
}

// fillSearchColumns copies the entity id, event name and creation time of
// the deliveries stored before version 2 out of their records into the
// columns version 2 added, a chunk of rows per statement.
func (s *Postgres) fillSearchColumns(ctx context.Context, tx pgx.Tx) error {
	var (
		names, entities, events []string
		seqs                    []int64
		created                 []time.Time
	)
	return fillByKey(ctx, tx, s.sql(`SELECT webhook, seq, record FROM {s}.deliveries
		WHERE (webhook, seq) > ($1, $2) AND created_at IS NULL ORDER BY webhook, seq LIMIT $3`), func(rows pgx.Rows) (string, int64, error) {
		var name string
		var seq int64
		var v []byte
		if err := rows.Scan(&name, &seq, &v); err != nil {
			return "", 0, err
		}
		rec := &Record{}
		if r, err := decodeRecord(v); err == nil {
			rec = r
		} else {
			s.log.Error("unreadable delivery left out of searches", "webhook", name, "seq", seq, "err", err)
		}
		names, seqs = append(names, name), append(seqs, seq)
		entities, events, created = append(entities, rec.EntityID), append(events, rec.Event), append(created, rec.CreatedAt)
		return name, seq, nil
	}, func() error {
		_, err := tx.Exec(ctx, s.sql(`UPDATE {s}.deliveries d SET entity_id = u.entity_id, event = u.event, created_at = u.created_at
			FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[]) AS u(webhook, seq, entity_id, event, created_at)
			WHERE d.webhook = u.webhook AND d.seq = u.seq`), names, seqs, entities, events, created)
		names, seqs, entities, events, created = names[:0], seqs[:0], entities[:0], events[:0], created[:0]
		return err
	})
}

// fillParts sets the partition of the pending deliveries stored before
// version 4, a chunk of rows per statement (the others are never read by
// partition).
func (s *Postgres) fillParts(ctx context.Context, tx pgx.Tx) error {
	var (
		names []string
		seqs  []int64
		parts []int16
	)
	return fillByKey(ctx, tx, s.sql(`SELECT webhook, seq, coalesce(entity_id, '') FROM {s}.deliveries
		WHERE (webhook, seq) > ($1, $2) AND status = 'p' AND part IS NULL ORDER BY webhook, seq LIMIT $3`), func(rows pgx.Rows) (string, int64, error) {
		var name, id string
		var seq int64
		if err := rows.Scan(&name, &seq, &id); err != nil {
			return "", 0, err
		}
		names, seqs, parts = append(names, name), append(seqs, seq), append(parts, int16(PartOf(id)))
		return name, seq, nil
	}, func() error {
		_, err := tx.Exec(ctx, s.sql(`UPDATE {s}.deliveries d SET part = u.part
			FROM unnest($1::text[], $2::bigint[], $3::smallint[]) AS u(webhook, seq, part)
			WHERE d.webhook = u.webhook AND d.seq = u.seq`), names, seqs, parts)
		names, seqs, parts = names[:0], seqs[:0], parts[:0]
		return err
	})
}

// Schema is the store's schema, quoted.
func (s *Postgres) Schema() string { return s.schema }

// Close closes the connections.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

// Durable is the WAL position stored with the latest commit.
func (s *Postgres) Durable() uint64 { return s.durable.Load() }

func callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

// Commit writes b in one transaction and returns the deliveries it queued,
// in order. As Bolt's: an empty batch writes nothing, repeats queue
// nothing, and the successes the retention would prune at once are deleted
// instead of written.
func (s *Postgres) Commit(b *Batch) ([]Queued, error) {
	if b.Empty() {
		return nil, nil
	}
	ctx, cancel := callContext()
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx)
	c := &pgCommit{s: s, ctx: ctx, tx: tx, derefs: map[string]int32{}}
	endLSN, err := c.run(b)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	if endLSN > s.durable.Load() {
		s.durable.Store(endLSN)
	}
	for name, n := range c.added {
		s.unpruned[name] += n
	}
	for _, name := range c.pruned {
		s.unpruned[name] = 0
	}
	maps.Copy(s.prunes, c.prunes)
	s.counted.set(c.counted)
	s.charted.set(c.charted)
	return c.queued, nil
}

// pruneEvery is how many successes of a webhook a prune waits for: the
// retention keeps up to a tenth more than it says, and a commit that
// completes deliveries rarely pays for the prune's query (it doubled the
// cost of such a commit).
func (s *Postgres) pruneEvery() int { return max(1, s.retention/10) }

// pgCommit is one commit's transaction and what it gathered.
type pgCommit struct {
	s      *Postgres
	ctx    context.Context
	tx     pgx.Tx
	queued []Queued
	derefs map[string]int32  // references dropped per event, applied at the end
	added  map[string]int    // successes added per webhook
	pruned []string          // webhooks pruned
	prunes map[string]pruned // where their prunes got to
	late   pgx.Batch         // writes sent at the end (later)
	// counted and charted are Batch.Counters and Charts, noted in
	// Postgres.counted and charted once the transaction is committed.
	counted map[string]Counters
	charted map[chartKey]Bucket
}

// run writes the batch and returns the durable position it stored.
func (c *pgCommit) run(b *Batch) (uint64, error) {
	// The lock and the rows the commit adds to, in one round trip.
	var first pgx.Batch
	var persisted uint64
	c.s.queueSeqLock(&first, len(b.Appends) > 0, &persisted)
	counters := c.readCounters(&first, b.Counters)
	charts := c.readCharts(&first, b.Charts)
	if err := c.tx.SendBatch(c.ctx, &first).Close(); err != nil {
		return 0, err
	}
	c.counters(b.Counters, counters)
	c.putCharts(b.Charts, charts)
	if err := c.outcomes(b.Outcomes); err != nil {
		return 0, err
	}
	stored, err := c.appends(b.Appends, persisted)
	if err != nil {
		return 0, err
	}
	for name, n := range c.added {
		if unpruned, seen := c.s.unpruned[name]; seen && unpruned+n < c.s.pruneEvery() {
			continue
		}
		if err := c.prune(name); err != nil {
			return 0, err
		}
		c.pruned = append(c.pruned, name)
	}
	if err := c.applyDerefs(); err != nil {
		return 0, err
	}
	if stored > persisted {
		c.later(`INSERT INTO {s}.meta (key, value) VALUES ('durable_lsn', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
			binary.BigEndian.AppendUint64(nil, stored))
	}
	if n := len(c.queued); n > 0 {
		c.late.Queue(`SELECT pg_notify($1, $2)`, c.s.channel, c.s.origin+" "+seqNote(c.queued[n-1].Seq))
	}
	return stored, c.sendLate()
}

// later queues a write whose result nothing in the commit waits for: they
// go to the server together at the end (sendLate), in one round trip.
func (c *pgCommit) later(query string, args ...any) {
	c.late.Queue(c.s.sql(query), args...)
}

// sendLate runs the writes later queued.
func (c *pgCommit) sendLate() error {
	if c.late.Len() == 0 {
		return nil
	}
	return c.tx.SendBatch(c.ctx, &c.late).Close()
}

func (c *pgCommit) putMeta(key string, value []byte) error {
	_, err := c.tx.Exec(c.ctx, c.s.sql(`INSERT INTO {s}.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`), key, value)
	return err
}

// counters adds to each webhook's stored counters what this walhook's
// counted since it last stored them: the walhooks sharing the store each
// count their own attempts, and the stored sums are everybody's. The
// latest status is the latest attempt's, whoever made it.
func (c *pgCommit) counters(m, stored map[string]Counters) {
	for _, name := range slices.Sorted(maps.Keys(m)) {
		now := m[name]
		st := stored[name].merge(now, c.s.counted.get(name))
		c.later(`INSERT INTO {s}.counters (webhook, value) VALUES ($1, $2) ON CONFLICT (webhook) DO UPDATE SET value = excluded.value`,
			name, marshalCounters(st))
	}
	c.counted = m
}

// readCounters queues in b the read of the stored counters of m's
// webhooks, locked until the commit; the map is filled when b is sent.
func (c *pgCommit) readCounters(b *pgx.Batch, m map[string]Counters) map[string]Counters {
	stored := map[string]Counters{}
	if len(m) == 0 {
		return stored
	}
	names := slices.Sorted(maps.Keys(m)) // one order: walhooks committing together do not deadlock
	b.Queue(c.s.sql(`SELECT webhook, value FROM {s}.counters WHERE webhook = ANY($1) ORDER BY webhook FOR UPDATE`), names).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			var v []byte
			if err := rows.Scan(&name, &v); err != nil {
				return err
			}
			var st Counters
			if err := json.Unmarshal(v, &st); err != nil {
				c.s.log.Error("unreadable counters counted afresh", "webhook", name, "err", err)
			}
			stored[name] = st
		}
		return rows.Err()
	})
	return stored
}

// noted is, per key, what this walhook last stored, or loaded first, of
// a sum the walhooks sharing the store add to (a webhook's counters, a
// chart's bucket): what it adds next is what it counted since.
type noted[K comparable, V any] struct {
	mu sync.Mutex
	m  map[K]V
}

func (n *noted[K, V]) get(k K) V {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[k]
}

// first notes v as loaded for k, unless something was noted.
func (n *noted[K, V]) first(k K, v V) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.m[k]; !ok {
		if n.m == nil {
			n.m = map[K]V{}
		}
		n.m[k] = v
	}
}

// set notes what a commit stored.
func (n *noted[K, V]) set(m map[K]V) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[K]V{}
	}
	maps.Copy(n.m, m)
}

// forget forgets the keys drop says.
func (n *noted[K, V]) forget(drop func(K) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	maps.DeleteFunc(n.m, func(k K, _ V) bool { return drop(k) })
}

// outcomes stores the deliveries' new states in one statement, and deletes
// at once the successes the retention would prune in this commit.
func (c *pgCommit) outcomes(outcomes []Outcome) error {
	if len(outcomes) == 0 {
		return nil
	}
	skip := prunedAtOnce(outcomes, c.s.retention)
	var (
		names, dnames     []string
		seqs, dseqs       []int64
		statuses, records [][]byte
		done              []bool
	)
	for i := range outcomes {
		o := &outcomes[i]
		if skip[o] {
			dnames, dseqs = append(dnames, o.Webhook), append(dseqs, int64(o.Seq))
			continue
		}
		rec := encodeRecord(o.Record)
		names, seqs = append(names, o.Webhook), append(seqs, int64(o.Seq))
		statuses, records, done = append(statuses, rec[:1]), append(records, rec), append(done, o.Done)
	}
	if len(dnames) > 0 {
		if err := c.deleteDeliveries(`DELETE FROM {s}.deliveries d USING unnest($1::text[], $2::bigint[]) AS u(webhook, seq)
			WHERE d.webhook = u.webhook AND d.seq = u.seq RETURNING d.event_id`, dnames, dseqs); err != nil {
			return err
		}
	}
	if len(names) == 0 {
		return nil
	}
	rows, err := c.tx.Query(c.ctx, c.s.sql(`UPDATE {s}.deliveries d SET status = u.status::"char", record = u.record
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::bool[]) AS u(webhook, seq, status, record, done)
		WHERE d.webhook = u.webhook AND d.seq = u.seq RETURNING d.webhook, u.done`), names, seqs, texts(statuses), records, done)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var isDone bool
		if err := rows.Scan(&name, &isDone); err != nil {
			return err
		}
		if isDone {
			if c.added == nil {
				c.added = map[string]int{}
			}
			c.added[name]++
		}
	}
	return rows.Err()
}

func texts(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

// deleteDeliveries runs a DELETE that returns the event ids of the
// deliveries it deleted, and drops their references.
func (c *pgCommit) deleteDeliveries(query string, args ...any) error {
	rows, err := c.tx.Query(c.ctx, c.s.sql(query), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		c.derefs[id]++
	}
	return rows.Err()
}

// prune deletes a webhook's oldest successes beyond the retention: those
// up to the newest success the retention leaves out, and above the
// previous prune's bound. The index of statuses keeps the entries of the
// rows pruned before until a vacuum; a prune that went down to the first
// sequence each time read all of them again, and took longer with every
// prune. Every pruneSweep-th prune goes down to the first sequence, for
// the successes of retries that completed below an earlier bound.
func (c *pgCommit) prune(name string) error {
	p := c.s.prunes[name]
	from := p.to
	if p.n%pruneSweep == 0 {
		from = 0
	}
	rows, err := c.tx.Query(c.ctx, c.s.sql(`WITH bound AS (
			SELECT seq FROM {s}.deliveries WHERE webhook = $1 AND status = 's' ORDER BY seq DESC OFFSET $2 LIMIT 1)
		DELETE FROM {s}.deliveries d USING bound WHERE d.webhook = $1 AND d.status = 's' AND d.seq > $3 AND d.seq <= bound.seq
		RETURNING d.event_id, bound.seq`), name, c.s.retention, int64(from))
	if err != nil {
		return err
	}
	defer rows.Close()
	to := p.to
	for rows.Next() {
		var id string
		var bound int64
		if err := rows.Scan(&id, &bound); err != nil {
			return err
		}
		c.derefs[id]++
		to = max(to, uint64(bound))
	}
	if c.prunes == nil {
		c.prunes = map[string]pruned{}
	}
	c.prunes[name] = pruned{n: p.n + 1, to: to}
	return rows.Err()
}

// pruned is where a webhook's prunes got to: how many ran, and the
// sequence up to which they deleted.
type pruned struct {
	n  int
	to uint64
}

// pruneSweep: every pruneSweep-th prune of a webhook reads all its
// successes, down to the first.
var pruneSweep = 50

// applyDerefs drops the references gathered, and the events left without.
func (c *pgCommit) applyDerefs() error {
	if len(c.derefs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(c.derefs))
	ns := make([]int32, 0, len(c.derefs))
	for id, n := range c.derefs {
		ids, ns = append(ids, id), append(ns, n)
	}
	_, err := c.tx.Exec(c.ctx, c.s.sql(`UPDATE {s}.events e SET refs = e.refs - u.n FROM unnest($1::text[], $2::int[]) AS u(id, n) WHERE e.id = u.id`), ids, ns)
	if err == nil {
		_, err = c.tx.Exec(c.ctx, c.s.sql(`DELETE FROM {s}.events WHERE id = ANY($1) AND refs <= 0`), ids)
	}
	return err
}

// appends queues the Appends' deliveries and returns the end of the latest
// transaction stored.
func (c *pgCommit) appends(appends []Append, stored uint64) (uint64, error) {
	known, err := c.storedEvents(appends, stored)
	if err != nil {
		return 0, err
	}
	type one struct{ i, j int } // an event: Append i's event j
	var (
		queue []one
		n     int
	)
	for i := range appends {
		a := &appends[i]
		if a.EndBackfill {
			if _, err := c.tx.Exec(c.ctx, c.s.sql(`DELETE FROM {s}.meta WHERE key = 'backfill'`)); err != nil {
				return 0, err
			}
			continue
		}
		if a.BackfillState != nil {
			if err := c.putMeta("backfill", a.BackfillState); err != nil {
				return 0, err
			}
		}
		if !a.Backfill {
			if Repeated(a.Tx, stored) {
				continue
			}
			stored = max(stored, a.Tx.EndLSN)
		}
		for j := range a.Tx.Events {
			ev := &a.Tx.Events[j]
			if len(a.Targets[j]) == 0 || known[ev.ID] {
				continue
			}
			known[ev.ID] = true // a chunk sent again within this batch
			queue = append(queue, one{i, j})
			n += len(a.Targets[j])
		}
	}
	if n == 0 {
		return stored, nil
	}
	seqs, err := c.nextSeqs(n)
	if err != nil {
		return 0, err
	}
	var (
		eids          []string
		erefs         []int32
		bodies        [][]byte
		dnames, deids []string
		dseqs         []int64
		drecs         [][]byte
		dentities     []string // the search columns (pgSchemaV2)
		devents       []string
		dparts        []int16 // pgSchemaV4
	)
	now := time.Now().UTC()
	for _, q := range queue {
		a := &appends[q.i]
		ev, names := &a.Tx.Events[q.j], a.Targets[q.j]
		body, err := encodeEvent(ev, 0)
		if err != nil {
			return 0, err
		}
		eids, erefs, bodies = append(eids, ev.ID), append(erefs, int32(len(names))), append(bodies, body)
		name := EventName(ev)
		for _, h := range names {
			seq := seqs[0]
			seqs = seqs[1:]
			rec := &Record{Status: StatusPending, EventID: ev.ID, Event: name, Entity: ev.Entity, EntityID: ev.EntityID, PrevEntityID: ev.PrevEntityID, CreatedAt: now}
			dnames, deids, dseqs, drecs = append(dnames, h), append(deids, ev.ID), append(dseqs, int64(seq)), append(drecs, encodeRecord(rec))
			dentities, devents, dparts = append(dentities, rec.EntityID), append(devents, name), append(dparts, int16(PartOf(rec.EntityID)))
			c.queued = append(c.queued, Queued{Append: q.i, Webhook: h, Seq: seq, Record: rec, Event: ev})
		}
	}
	// An event stored already is left out with its deliveries: a whole
	// transaction need not be looked up (storedEvents), but one stored in
	// chunks before may come whole (after an upgrade that changed the
	// chunk size); it must not fail every commit from then on.
	rows, err := c.tx.Query(c.ctx, c.s.sql(`INSERT INTO {s}.events (id, refs, body) SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[])
		ON CONFLICT (id) DO NOTHING RETURNING id`), eids, erefs, bodies)
	if err != nil {
		return 0, err
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	if len(inserted) < len(eids) {
		fresh := make(map[string]bool, len(inserted))
		for _, id := range inserted {
			fresh[id] = true
		}
		keep := func(i int) bool { return fresh[deids[i]] }
		dnames, dseqs, drecs, dentities, devents, dparts = kept(dnames, keep), kept(dseqs, keep), kept(drecs, keep), kept(dentities, keep), kept(devents, keep), kept(dparts, keep)
		deids = kept(deids, keep)
		c.queued = slices.DeleteFunc(c.queued, func(q Queued) bool { return !fresh[q.Record.EventID] })
	}
	_, err = c.tx.Exec(c.ctx, c.s.sql(`INSERT INTO {s}.deliveries (webhook, seq, status, event_id, record, entity_id, event, created_at, part)
		SELECT u.webhook, u.seq, 'p', u.event_id, u.record, u.entity_id, u.event, $7, u.part
		FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::text[], $6::text[], $8::smallint[]) AS u(webhook, seq, event_id, record, entity_id, event, part)`),
		dnames, dseqs, deids, drecs, dentities, devents, now, dparts)
	return stored, err
}

// kept is the elements of xs whose index keep accepts.
func kept[T any](xs []T, keep func(int) bool) []T {
	out := xs[:0:0]
	for i, x := range xs {
		if keep(i) {
			out = append(out, x)
		}
	}
	return out
}

// storedEvents returns which events of the Appends that may repeat are in
// the store already: those of chunks and of last chunks, whose earlier
// chunks may have been stored before a crash. A whole transaction past
// everything stored has no event in the store yet.
func (c *pgCommit) storedEvents(appends []Append, stored uint64) (map[string]bool, error) {
	known := map[string]bool{}
	var ids []string
	for i := range appends {
		a := &appends[i]
		if a.EndBackfill || a.Tx == nil || a.Backfill || Repeated(a.Tx, stored) {
			continue
		}
		if a.Tx.EndLSN != 0 && len(a.Tx.Events) > 0 && a.Tx.Events[0].Index == 0 {
			continue
		}
		for j := range a.Tx.Events {
			ids = append(ids, a.Tx.Events[j].ID)
		}
	}
	if len(ids) == 0 {
		return known, nil
	}
	rows, err := c.tx.Query(c.ctx, c.s.sql(`SELECT id FROM {s}.events WHERE id = ANY($1)`), ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		known[id] = true
	}
	return known, rows.Err()
}

// nextSeqs allocates n delivery sequences, ascending.
func (c *pgCommit) nextSeqs(n int) ([]uint64, error) {
	// One call, whatever n: the transactions that take sequences hold
	// seqLock, so nobody takes one between nextval and setval.
	var last int64
	if err := c.tx.QueryRow(c.ctx, c.s.sql(`SELECT setval('{s}.delivery_seq', nextval('{s}.delivery_seq') + $1 - 1)`), n).Scan(&last); err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = uint64(last) - uint64(n-1-i)
	}
	return out, nil
}

// Queue reads a webhook's counters and counts its pending and failed
// deliveries.
func (s *Postgres) Queue(name string) (Queue, error) {
	ctx, cancel := callContext()
	defer cancel()
	var q Queue
	var counters []byte
	err := s.pool.QueryRow(ctx, s.sql(`SELECT
		(SELECT value FROM {s}.counters WHERE webhook = $1),
		(SELECT count(*) FROM {s}.deliveries WHERE webhook = $1 AND status = 'p'),
		(SELECT count(*) FROM {s}.deliveries WHERE webhook = $1 AND status = 'f')`), name).Scan(&counters, &q.Pending, &q.Failed)
	if err == nil && counters != nil {
		err = json.Unmarshal(counters, &q.Counters)
	}
	if err != nil {
		return Queue{}, fmt.Errorf("load webhook %s: %w", name, err)
	}
	s.counted.first(name, q.Counters)
	return q, nil
}

// Window reads up to limit pending deliveries of a webhook from sequence
// from on, with their events (see Bolt.Window).
func (s *Postgres) Window(name string, from uint64, limit int, parts Parts) (Window, error) {
	ctx, cancel := callContext()
	defer cancel()
	var only []int16 // nil: all
	if parts != AllParts {
		only = parts.List()
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT d.seq, d.record, d.event_id, e.refs, e.body FROM {s}.deliveries d LEFT JOIN {s}.events e ON e.id = d.event_id
		WHERE d.webhook = $1 AND d.status = 'p' AND d.seq >= $2 AND ($4::smallint[] IS NULL OR d.part = ANY($4)) ORDER BY d.seq LIMIT $3`), name, int64(from), limit+1, only)
	if err != nil {
		return Window{}, err
	}
	defer rows.Close()
	w := Window{Last: from - 1, Exhausted: true}
	for rows.Next() {
		if len(w.Pending) == limit {
			w.Exhausted = false
			break
		}
		p, err := s.scanDelivery(rows, name, true)
		if err != nil {
			return Window{}, err
		}
		w.Last = p.Seq
		if p.Record != nil && p.Event != nil {
			w.Pending = append(w.Pending, p)
		}
	}
	return w, rows.Err()
}

// scanDelivery reads a row of seq, record, event_id, refs, body. A record
// or event that cannot be read is logged and left nil; with share, an event
// that other deliveries still refer to is kept for their loads.
func (s *Postgres) scanDelivery(rows pgx.Rows, name string, share bool) (Pending, error) {
	var (
		seq         int64
		record      []byte
		eventID     string
		refs        *int32
		body        []byte
		p           Pending
		err, decErr error
	)
	if err = rows.Scan(&seq, &record, &eventID, &refs, &body); err != nil {
		return p, err
	}
	p.Seq = uint64(seq)
	if p.Record, decErr = decodeRecord(record); decErr != nil {
		s.log.Error("skipping unreadable delivery", "webhook", name, "seq", seq, "err", decErr)
		return p, nil
	}
	if ev, ok := s.loaded.Get(eventID); ok && share {
		p.Event = ev
		return p, nil
	}
	if body == nil {
		s.log.Error("skipping delivery of an event not stored", "webhook", name, "event", eventID)
		return p, nil
	}
	if p.Event, decErr = decodeEvent(body); decErr != nil {
		s.log.Error("skipping delivery of unreadable event", "webhook", name, "event", eventID, "err", decErr)
		return p, nil
	}
	if share && refs != nil && *refs > 1 {
		s.loaded.Add(eventID, p.Event)
	}
	return p, nil
}

// Deliveries returns up to limit of a webhook's stored deliveries, newest
// first, with their events (nil where unreadable), only those of status
// when status is not "".
func (s *Postgres) Deliveries(name string, limit int, status string) ([]Pending, error) {
	ctx, cancel := callContext()
	defer cancel()
	// Two forms, so that a status is looked up in its index.
	q, args := `WHERE d.webhook = $1 ORDER BY d.seq DESC LIMIT $2`, []any{name, limit}
	if status != "" {
		q, args = `WHERE d.webhook = $1 AND d.status = $3::"char" ORDER BY d.seq DESC LIMIT $2`, append(args, string(rune(statusByte(status))))
	}
	rows, err := s.pool.Query(ctx, s.sql(`SELECT d.seq, d.record, d.event_id, e.refs, e.body FROM {s}.deliveries d LEFT JOIN {s}.events e ON e.id = d.event_id `+q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		p, err := s.scanDelivery(rows, name, false)
		if err != nil {
			return nil, err
		}
		if p.Record == nil {
			return nil, fmt.Errorf("delivery %s-%d: unreadable record", name, p.Seq)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// FailedSince returns the sequences of a webhook's failed deliveries whose
// last attempt (or creation) is at or after since, in queue order.
func (s *Postgres) FailedSince(name string, since time.Time) ([]uint64, error) {
	ctx, cancel := callContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, s.sql(`SELECT seq, record FROM {s}.deliveries WHERE webhook = $1 AND status = 'f' ORDER BY seq`), name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var seqs []uint64
	for rows.Next() {
		var seq int64
		var v []byte
		if err := rows.Scan(&seq, &v); err != nil {
			return nil, err
		}
		rec, err := decodeRecord(v)
		if err != nil {
			continue
		}
		at := rec.CreatedAt
		if n := len(rec.Attempts); n > 0 {
			at = rec.Attempts[n-1].At
		}
		if !at.Before(since) {
			seqs = append(seqs, uint64(seq))
		}
	}
	return seqs, rows.Err()
}

// Redeliver queues a past delivery of a webhook again as a new one (see
// Bolt.Redeliver).
func (s *Postgres) Redeliver(name string, seq uint64) (Redelivered, error) {
	var r Redelivered
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) (err error) {
		if _, err := s.seqLock(ctx, tx, false); err != nil {
			return err
		}
		if r, err = s.redeliverIn(ctx, tx, name, seq, false); err != nil {
			return err
		}
		return s.notify(ctx, tx, seqNote(r.Seq))
	})
	return r, err
}

// RedeliverFailed queues those of a webhook's deliveries seqs that are
// still failed again, in one transaction.
func (s *Postgres) RedeliverFailed(name string, seqs []uint64) ([]Redelivered, error) {
	var out []Redelivered
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) (err error) {
		if _, err := s.seqLock(ctx, tx, false); err != nil {
			return err
		}
		out, err = redeliverEach(seqs, func(seq uint64) (Redelivered, error) { return s.redeliverIn(ctx, tx, name, seq, true) })
		if err != nil || len(out) == 0 {
			return err
		}
		return s.notify(ctx, tx, seqNote(out[len(out)-1].Seq))
	})
	return out, err
}

func (s *Postgres) redeliverIn(ctx context.Context, tx pgx.Tx, name string, seq uint64, failedOnly bool) (Redelivered, error) {
	var v, body []byte
	err := tx.QueryRow(ctx, s.sql(`SELECT d.record, e.body FROM {s}.deliveries d JOIN {s}.events e ON e.id = d.event_id
		WHERE d.webhook = $1 AND d.seq = $2 FOR UPDATE OF d, e`), name, int64(seq)).Scan(&v, &body)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && failedOnly && v[0] != recFailed {
		return Redelivered{}, ErrNotFound
	}
	if err != nil {
		return Redelivered{}, err
	}
	if v[0] == recPending {
		return Redelivered{}, ErrPending
	}
	old, err := decodeRecord(v)
	if err != nil {
		return Redelivered{}, err
	}
	ev, err := decodeEvent(body)
	if err != nil {
		return Redelivered{}, err
	}
	var nseq int64
	if err := tx.QueryRow(ctx, s.sql(`SELECT nextval('{s}.delivery_seq')`)).Scan(&nseq); err != nil {
		return Redelivered{}, err
	}
	rec := &Record{Status: StatusPending, EventID: old.EventID, Event: old.Event, Entity: old.Entity, EntityID: old.EntityID, PrevEntityID: old.PrevEntityID, CreatedAt: time.Now().UTC()}
	if _, err := tx.Exec(ctx, s.sql(`INSERT INTO {s}.deliveries (webhook, seq, status, event_id, record, entity_id, event, created_at, part) VALUES ($1, $2, 'p', $3, $4, $5, $6, $7, $8)`),
		name, nseq, old.EventID, encodeRecord(rec), rec.EntityID, rec.Event, rec.CreatedAt, int16(PartOf(rec.EntityID))); err != nil {
		return Redelivered{}, err
	}
	r := Redelivered{Pending: Pending{Seq: uint64(nseq), Record: rec, Event: ev}}
	if v[0] == recFailed {
		// The failed delivery is replaced: its reference goes to the new one.
		r.WasFailed = true
		_, err = tx.Exec(ctx, s.sql(`DELETE FROM {s}.deliveries WHERE webhook = $1 AND seq = $2`), name, int64(seq))
	} else {
		_, err = tx.Exec(ctx, s.sql(`UPDATE {s}.events SET refs = refs + 1 WHERE id = $1`), old.EventID)
	}
	if err != nil {
		return Redelivered{}, err
	}
	return r, nil
}

// inTx runs f in a transaction and commits it.
func (s *Postgres) inTx(f func(context.Context, pgx.Tx) error) error {
	return s.inTxWithin(callTimeout, f)
}

// inTxWithin is inTx, the transaction bounded by d.
func (s *Postgres) inTxWithin(d time.Duration, f func(context.Context, pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return f(ctx, tx) })
}

// exec runs one statement.
func (s *Postgres) exec(query string, args ...any) error {
	ctx, cancel := callContext()
	defer cancel()
	_, err := s.pool.Exec(ctx, s.sql(query), args...)
	return err
}

// Queues returns the names of the webhooks with stored deliveries.
func (s *Postgres) Queues() ([]string, error) {
	ctx, cancel := callContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, s.sql(`SELECT DISTINCT webhook FROM {s}.deliveries ORDER BY 1`))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// DropQueue deletes a webhook's deliveries, counters and override, a chunk
// of deliveries per transaction with their references (see Bolt.DropQueue).
func (s *Postgres) DropQueue(name string) error {
	for more := true; more; {
		err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
			c := &pgCommit{s: s, ctx: ctx, tx: tx, derefs: map[string]int32{}}
			if err := c.deleteDeliveries(`DELETE FROM {s}.deliveries WHERE webhook = $1 AND seq IN (
				SELECT seq FROM {s}.deliveries WHERE webhook = $1 ORDER BY seq LIMIT $2) RETURNING event_id`, name, dropChunk); err != nil {
				return err
			}
			n := 0
			for _, k := range c.derefs {
				n += int(k)
			}
			more = n == dropChunk
			if err := c.applyDerefs(); err != nil {
				return err
			}
			if more {
				return nil
			}
			_, err := tx.Exec(ctx, s.sql(`DELETE FROM {s}.counters WHERE webhook = $1; `), name)
			if err == nil {
				_, err = tx.Exec(ctx, s.sql(`DELETE FROM {s}.charts WHERE webhook = $1`), name)
			}
			if err == nil {
				_, err = tx.Exec(ctx, s.sql(`DELETE FROM {s}.switched_off WHERE name = $1`), name)
			}
			return err
		})
		if err == nil && !more {
			s.counted.forget(func(k string) bool { return k == name })
			s.charted.forget(func(k chartKey) bool { return k.webhook == name })
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// WebhookDefs returns the definitions PutWebhook stored, by name.
func (s *Postgres) WebhookDefs() (map[string][]byte, error) {
	ctx, cancel := callContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, s.sql(`SELECT name, def FROM {s}.webhooks`))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var name string
		var def []byte
		if err := rows.Scan(&name, &def); err != nil {
			return nil, err
		}
		out[name] = def
	}
	return out, rows.Err()
}

// PutWebhook stores the definition of a webhook made through the admin API.
func (s *Postgres) PutWebhook(name string, def []byte) error {
	return s.execNoting(noteWebhooks, `INSERT INTO {s}.webhooks (name, def) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET def = excluded.def`, name, def)
}

// DeleteWebhook forgets a definition PutWebhook stored.
func (s *Postgres) DeleteWebhook(name string) error {
	return s.execNoting(noteWebhooks, `DELETE FROM {s}.webhooks WHERE name = $1`, name)
}

// SwitchedOff reports whether the store keeps config webhook name, at url,
// switched off.
func (s *Postgres) SwitchedOff(name, url string) (bool, error) {
	ctx, cancel := callContext()
	defer cancel()
	var n int
	err := s.pool.QueryRow(ctx, s.sql(`SELECT count(*) FROM {s}.switched_off WHERE name = $1 AND url = $2`), name, url).Scan(&n)
	return n > 0, err
}

// SetSwitchedOff keeps config webhook name switched off while its URL
// stays url (off), or forgets that (not off).
func (s *Postgres) SetSwitchedOff(name, url string, off bool) error {
	if !off {
		return s.execNoting(noteWebhooks, `DELETE FROM {s}.switched_off WHERE name = $1`, name)
	}
	return s.execNoting(noteWebhooks, `INSERT INTO {s}.switched_off (name, url) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET url = excluded.url`, name, url)
}

// Backfill returns the state of the backfill under way, nil if none.
func (s *Postgres) Backfill() ([]byte, error) {
	ctx, cancel := callContext()
	defer cancel()
	var state []byte
	err := s.pool.QueryRow(ctx, s.sql(`SELECT value FROM {s}.meta WHERE key = 'backfill'`)).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return state, err
}

// SetBackfill stores the state of a backfill under way; nil drops it.
func (s *Postgres) SetBackfill(state []byte) error {
	if state == nil {
		return s.exec(`DELETE FROM {s}.meta WHERE key = 'backfill'`)
	}
	return s.exec(`INSERT INTO {s}.meta (key, value) VALUES ('backfill', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value`, state)
}
