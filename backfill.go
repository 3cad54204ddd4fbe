package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"

	"walhook/admin"
	"walhook/cdc"
	"walhook/deliver"
	"walhook/matcher"
)

// backfillRun is a backfill's progress as the admin API shows it.
type backfillRun struct {
	b  *deliver.Backfill
	mu sync.Mutex
	st admin.BackfillStatus
}

func (r *backfillRun) status() admin.BackfillStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Tables = slices.Clone(st.Tables)
	st.Queued, st.Skipped = r.b.Sent(), r.b.Skipped()
	return st
}

func (r *backfillRun) update(f func(*admin.BackfillStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.st)
}

// StartBackfill sends webhook name the rows its tables hold now (events:
// entity names or schema.table, by default the webhook's own), as create
// events, in order with the changes (see deliver.Backfill). It returns
// once the backfill is under way.
func (a *App) StartBackfill(_ context.Context, name string, events []string) (admin.BackfillStatus, error) {
	w, ok := a.queue.Webhook(name)
	if !ok {
		return admin.BackfillStatus{}, fmt.Errorf("webhook %q: %w", name, deliver.ErrNotFound)
	}
	if !w.Active {
		return admin.BackfillStatus{}, fmt.Errorf("%w: webhook %q is switched off, so its events are not queued: switch it on first", admin.ErrBackfillInvalid, name)
	}
	tables, err := a.backfillTables(w, events)
	if err != nil {
		return admin.BackfillStatus{}, fmt.Errorf("%w: %v", admin.ErrBackfillInvalid, err)
	}
	b, err := a.queue.StartBackfill(name)
	if err != nil {
		return admin.BackfillStatus{}, err
	}
	run := &backfillRun{b: b, st: admin.BackfillStatus{Webhook: name, Tables: tables, State: "running", StartedAt: time.Now().UTC()}}
	a.backfills.Store(name, run)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.runBackfill(run, tables)
	}()
	return run.status(), nil
}

// Backfill is webhook name's latest backfill since walhook started.
func (a *App) Backfill(name string) (admin.BackfillStatus, bool) {
	v, ok := a.backfills.Load(name)
	if !ok {
		return admin.BackfillStatus{}, false
	}
	return v.(*backfillRun).status(), true
}

// backfillTables resolves events to the tables to read, each one the
// webhook takes create events of.
func (a *App) backfillTables(w deliver.Webhook, events []string) ([]string, error) {
	if !slices.Contains(w.Actions, cdc.ActionCreate) {
		return nil, fmt.Errorf("webhook %q does not take create events (actions), which a backfill sends", w.Name)
	}
	if len(events) == 0 {
		events = w.Events
	}
	a.mu.Lock()
	entities := a.cfg.MatcherEntities()
	a.mu.Unlock()
	asked, err := matcher.New(entities, []matcher.Rule{{Webhook: w.Name, Events: events}})
	if err != nil {
		return nil, err
	}
	tables, all := asked.Tables()
	if all {
		return nil, errors.New(`events: name the entities or tables to backfill: "*" would read every table`)
	}
	own, err := matcher.New(entities, []matcher.Rule{{Webhook: w.Name, Events: w.Events}})
	if err != nil {
		return nil, err
	}
	ownTables, ownAll := own.Tables()
	for _, t := range tables {
		if !ownAll && !slices.Contains(ownTables, t) {
			return nil, fmt.Errorf("events: webhook %q does not take events of %s", w.Name, t)
		}
	}
	return tables, nil
}

// runBackfill reads the snapshot into the queue and ends the backfill.
func (a *App) runBackfill(run *backfillRun, tables []string) {
	ctx := a.bgCtx
	a.mu.Lock()
	dsn := a.cfg.Postgres.DSN
	a.mu.Unlock()
	log := a.logger.With("webhook", run.b.Webhook)
	log.Info("backfill: taking a snapshot of the tables", "tables", tables)
	rows, err := cdc.ReadSnapshot(ctx, dsn, tables, func(ctx context.Context, at uint64) error {
		// Rows take their ids from the point: two backfills must not share
		// one (each temporary slot writes WAL at its point, so they never
		// do; this makes sure).
		// (One backfill runs at a time.)
		if last := a.lastPoint.Load(); at <= last {
			return fmt.Errorf("the snapshot's point %s is not past the last backfill's %s", pglogrepl.LSN(at), pglogrepl.LSN(last))
		}
		a.lastPoint.Store(at)
		run.b.SetPoint(at)
		run.update(func(st *admin.BackfillStatus) { st.Point = pglogrepl.LSN(at).String() })
		return a.waitPassed(ctx, at, log)
	}, func(tx *cdc.Tx) error {
		run.update(func(st *admin.BackfillStatus) { st.Read += int64(len(tx.Events)) })
		return a.queue.WriteBackfill(ctx, run.b, tx)
	})
	// The end goes through the committer after the last rows, whatever
	// happened: the changes the backfill noted stop being noted there.
	if eerr := a.queue.EndBackfill(context.WithoutCancel(ctx), run.b); err == nil {
		err = eerr
	}
	if err == nil {
		err = run.b.Wait(ctx)
	}
	now := time.Now().UTC()
	run.update(func(st *admin.BackfillStatus) {
		st.EndedAt = &now
		st.State = "done"
		if err != nil {
			st.State, st.Error = "failed", err.Error()
		}
	})
	if err != nil {
		log.Error("backfill failed: the rows queued so far stay queued; start it again to send the rest (rows sent again get new ids)", "rows_read", rows, "err", err)
		return
	}
	st := run.status()
	log.Info("backfill done", "rows_read", rows, "rows_queued", st.Queued, "rows_skipped", st.Skipped)
}

// waitPassed waits until the reader has handed the queue every change
// committed before at: the snapshot's rows go in after those.
func (a *App) waitPassed(ctx context.Context, at uint64, log interface{ Info(string, ...any) }) error {
	start := time.Now()
	warned := false
	for a.reader.Passed() < at {
		if !warned && time.Since(start) > 10*time.Second {
			log.Info("backfill: waiting for the replication stream to reach the snapshot", "snapshot_lsn", pglogrepl.LSN(at).String(), "stream_lsn", pglogrepl.LSN(a.reader.Passed()).String())
			warned = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
