package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// SlotLagConfig says which slot to watch and when its lag is too much.
type SlotLagConfig struct {
	DSN        string                // a normal (non-replication) connection is made from it
	Slot       string                // the slot to watch
	MaxBytes   uint64                // above it: one error log per crossing, Exceeded, walhook_slot_lag_exceeded 1; 0: no limit
	Interval   time.Duration         // how often to measure, default 5s
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // may be nil
}

// SlotLag measures a slot's lag the way the database sees it:
// pg_current_wal_lsn() minus the slot's confirmed_flush_lsn, the WAL
// PostgreSQL keeps on its disk for this slot. It asks pg_replication_slots
// over its own connection rather than trusting the replication stream, so
// the lag is still measured while the stream is stalled, reconnecting, or
// waiting for another process that holds the slot.
type SlotLag struct {
	cfg SlotLagConfig
	log *slog.Logger

	bytes    atomic.Uint64
	seconds  atomic.Uint64 // math.Float64bits of the slot's flush_lag
	exceeded atomic.Bool

	bytesGauge    prometheus.Gauge
	exceededGauge prometheus.Gauge
}

const defaultLagInterval = 5 * time.Second

// NewSlotLag checks cfg and registers the metrics.
func NewSlotLag(cfg SlotLagConfig) (*SlotLag, error) {
	if !slotNameRE.MatchString(cfg.Slot) {
		return nil, fmt.Errorf("slot: must be 1..63 of a-z, 0-9, _ (got %q)", cfg.Slot)
	}
	if _, err := pgx.ParseConfig(cfg.DSN); err != nil {
		return nil, fmt.Errorf("dsn: %w", err)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultLagInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &SlotLag{
		cfg: cfg,
		log: cfg.Logger.With("slot", cfg.Slot),
		bytesGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walhook_slot_lag_bytes",
			Help: "WAL the database keeps for the slot: pg_current_wal_lsn() - confirmed_flush_lsn, measured every few seconds.",
		}),
		exceededGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "walhook_slot_lag_exceeded",
			Help: "1 while the slot's lag is above [postgres] max_lag_mb, else 0.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.bytesGauge, s.exceededGauge} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Bytes is the lag last measured, 0 before the first measurement and while
// the slot does not exist.
func (s *SlotLag) Bytes() uint64 { return s.bytes.Load() }

// Seconds is how far the slot's confirmed position trailed the WAL in
// time at the last measurement: pg_stat_replication's flush_lag of the
// walsender reading the slot, 0 while nothing is outstanding or nobody
// reads it.
func (s *SlotLag) Seconds() float64 { return math.Float64frombits(s.seconds.Load()) }

// Limit is MaxBytes.
func (s *SlotLag) Limit() uint64 { return s.cfg.MaxBytes }

// Exceeded reports whether the lag last measured is above MaxBytes.
func (s *SlotLag) Exceeded() bool { return s.exceeded.Load() }

// Run measures at once and then every Interval until ctx is cancelled. A
// failed measurement keeps the previous figures: the replication Reader
// reports lost connections itself.
func (s *SlotLag) Run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		var err error
		if conn, err = s.measure(ctx, conn); err != nil && ctx.Err() == nil {
			s.log.Debug("measure slot lag", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// measure records the lag; it returns the connection to reuse, nil after
// an error.
func (s *SlotLag) measure(ctx context.Context, conn *pgx.Conn) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.Interval, 10*time.Second))
	defer cancel()
	if conn == nil {
		cc, err := pgx.ParseConfig(s.cfg.DSN)
		if err != nil {
			return nil, err
		}
		delete(cc.RuntimeParams, "replication")
		cc.RuntimeParams["application_name"] = "walhook"
		if conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			return nil, err
		}
	}
	var lag int64
	var secs float64
	err := conn.QueryRow(ctx, `
		SELECT coalesce((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END
		                 - confirmed_flush_lsn)::bigint, 0),
		       coalesce((SELECT extract(epoch FROM r.flush_lag)::float8 FROM pg_stat_replication r WHERE r.pid = s.active_pid), 0)
		FROM pg_replication_slots s WHERE slot_name = $1`, s.cfg.Slot).Scan(&lag, &secs)
	if errors.Is(err, pgx.ErrNoRows) {
		err, lag = nil, 0 // not created yet: it keeps nothing
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	s.seconds.Store(math.Float64bits(max(secs, 0)))
	s.record(uint64(max(lag, 0)))
	return conn, nil
}

// record stores a measurement and logs a crossing of MaxBytes once, in
// either direction, not at every measurement.
func (s *SlotLag) record(lag uint64) {
	s.bytes.Store(lag)
	s.bytesGauge.Set(float64(lag))
	over := s.cfg.MaxBytes > 0 && lag > s.cfg.MaxBytes
	if s.exceeded.Swap(over) == over {
		return
	}
	if over {
		s.exceededGauge.Set(1)
		s.log.Error("replication slot lag above the limit: PostgreSQL keeps this WAL on its disk until walhook confirms it",
			"lag_bytes", lag, "max_bytes", s.cfg.MaxBytes)
		return
	}
	s.exceededGauge.Set(0)
	s.log.Info("replication slot lag back below the limit", "lag_bytes", lag, "max_bytes", s.cfg.MaxBytes)
}
