package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"

	"walhook/admin"
	"walhook/cdc"
	"walhook/deliver"
	"walhook/matcher"
)

// backfillState is what the store keeps of a backfill under way, with its
// rows: where a restart resumes it.
type backfillState struct {
	Webhook   string               `json:"webhook"`
	Tables    []string             `json:"tables"`
	Position  cdc.SnapshotPosition `json:"position"`
	StartedAt time.Time            `json:"started_at"`
}

func (s backfillState) at(pos cdc.SnapshotPosition) []byte {
	s.Position = pos
	raw, _ := json.Marshal(s)
	return raw
}

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
func (a *App) StartBackfill(name string, events []string) (admin.BackfillStatus, error) {
	if err := a.mustLead(); err != nil {
		return admin.BackfillStatus{}, err
	}
	w, err := a.backfillable(name)
	if err != nil {
		return admin.BackfillStatus{}, err
	}
	tables, err := a.backfillTables(w, events)
	if err != nil {
		return admin.BackfillStatus{}, fmt.Errorf("%w: %v", admin.ErrBackfillInvalid, err)
	}
	return a.startBackfill(backfillState{Webhook: name, Tables: tables, StartedAt: time.Now().UTC()}, false)
}

func (a *App) startBackfill(state backfillState, resumed bool) (admin.BackfillStatus, error) {
	b, err := a.queue.StartBackfill(state.Webhook, state.at(state.Position))
	if err != nil {
		return admin.BackfillStatus{}, err
	}
	run := &backfillRun{b: b, st: admin.BackfillStatus{Webhook: state.Webhook, Tables: state.Tables, State: "running", StartedAt: state.StartedAt, Resumed: resumed}}
	a.backfills.Store(state.Webhook, run)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.runBackfill(run, state)
	}()
	return run.status(), nil
}

// resumeBackfill goes on with a backfill a stop or a crash interrupted,
// under a new snapshot, from the position stored with its last rows.
func (a *App) resumeBackfill() {
	raw := a.queue.PendingBackfill()
	if raw == nil {
		return
	}
	var state backfillState
	err := json.Unmarshal(raw, &state)
	if err == nil {
		_, err = a.backfillable(state.Webhook)
	}
	if err == nil {
		a.logger.Info("backfill: resuming after a restart", "webhook", state.Webhook, "table", state.Position.Table, "after", state.Position.After)
		_, err = a.startBackfill(state, true)
	}
	if err != nil {
		a.logger.Warn("backfill: the one under way when walhook stopped is not resumed", "err", err)
		a.queue.DropBackfill()
	}
}

// Backfill is webhook name's latest backfill since walhook started; on a
// walhook sharing its store that does not lead, the one under way on the
// leader, as the store keeps it.
func (a *App) Backfill(name string) (admin.BackfillStatus, bool) {
	if v, ok := a.backfills.Load(name); ok && (a.pg == nil || a.leads.Load()) {
		return v.(*backfillRun).status(), true
	}
	if a.pg == nil {
		return admin.BackfillStatus{}, false
	}
	raw, err := a.pg.Backfill()
	var state backfillState
	if err != nil || raw == nil || json.Unmarshal(raw, &state) != nil || state.Webhook != name {
		return admin.BackfillStatus{}, false
	}
	return admin.BackfillStatus{Webhook: name, Tables: state.Tables, State: "running", StartedAt: state.StartedAt, RunsOn: a.leaderName()}, true
}

// backfillable is webhook name if a backfill's rows can reach it: it
// exists, is switched on and takes create events.
func (a *App) backfillable(name string) (deliver.Webhook, error) {
	w, ok := a.queue.Webhook(name)
	switch {
	case !ok:
		return w, fmt.Errorf("webhook %q: %w", name, deliver.ErrNotFound)
	case !w.Active:
		return w, fmt.Errorf("%w: webhook %q is switched off, so its events are not queued: switch it on first", admin.ErrBackfillInvalid, name)
	case !slices.Contains(w.Actions, cdc.ActionCreate):
		return w, fmt.Errorf("%w: webhook %q does not take create events (actions), which a backfill sends", admin.ErrBackfillInvalid, name)
	}
	return w, nil
}

// backfillTables resolves events to the tables to read, each one the
// webhook takes events of.
func (a *App) backfillTables(w deliver.Webhook, events []string) ([]string, error) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.checkBareNames(ctx, asked); err != nil {
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

// runBackfill reads the snapshot into the queue and ends the backfill;
// walhook's stop leaves it to be resumed at the next start.
func (a *App) runBackfill(run *backfillRun, state backfillState) {
	ctx := a.backfillCtx()
	a.mu.Lock()
	dsn := a.cfg.Postgres.DSN
	a.mu.Unlock()
	log := a.logger.With("webhook", run.b.Webhook)
	log.Info("backfill: taking a snapshot of the tables", "tables", state.Tables)
	rows, err := cdc.ReadSnapshot(ctx, dsn, state.Tables, state.Position, func(ctx context.Context, at uint64) error {
		// Rows take their ids from the point: two backfills, which run
		// one at a time, must not share one (each temporary slot writes
		// WAL at its point, so they never do; this makes sure).
		if last := a.lastPoint.Load(); at <= last {
			return fmt.Errorf("the snapshot's point %s is not past the last backfill's %s", pglogrepl.LSN(at), pglogrepl.LSN(last))
		}
		a.lastPoint.Store(at)
		run.b.SetPoint(at)
		run.update(func(st *admin.BackfillStatus) { st.Point = pglogrepl.LSN(at).String() })
		return a.waitPassed(ctx, at, log)
	}, func(tx *cdc.Tx, pos cdc.SnapshotPosition) error {
		run.update(func(st *admin.BackfillStatus) { st.Read += int64(len(tx.Events)) })
		return a.queue.WriteBackfill(ctx, run.b, tx, state.at(pos))
	})
	// walhook stops, or another leads: the state stored with the last rows
	// resumes it, at the next start or on the next leader.
	interrupted := func() {
		log.Info("backfill: interrupted by the stop or the loss of the lead; the next start or leader resumes it from the rows stored", "rows_read", rows)
		a.queue.LeaveBackfill(run.b)
		run.update(func(st *admin.BackfillStatus) { st.State = "interrupted" })
	}
	if ctx.Err() != nil {
		interrupted()
		return
	}
	// The end goes through the committer after the last rows, whatever
	// happened: the changes the backfill noted stop being noted there.
	if eerr := a.queue.EndBackfill(ctx, run.b); err == nil {
		err = eerr
	}
	if err == nil {
		err = run.b.Wait(ctx)
	}
	if err != nil && ctx.Err() != nil {
		// Its end was not stored: another walhook took the lead (its
		// epoch refused the last commits) before this one saw it lose.
		interrupted()
		return
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
		log.Error("backfill failed: the rows queued so far stay queued; start it again to send them all (under new ids)", "rows_read", rows, "err", err)
		return
	}
	st := run.status()
	log.Info("backfill done", "rows_read", rows, "rows_queued", st.Queued, "rows_skipped", st.Skipped)
}

// backfillCtx is what a backfill runs under: walhook's life and, with a
// shared store, the lead term it starts in. Only the leader's rows reach
// that store, so a backfill ends with the term (the next leader resumes
// it from the state stored with its last rows); one that would start
// between terms is interrupted at once.
func (a *App) backfillCtx() context.Context {
	if a.pg == nil {
		return a.bgCtx
	}
	if term := a.term.Load(); term != nil {
		return *term
	}
	ctx, cancel := context.WithCancel(a.bgCtx)
	cancel()
	return ctx
}

// waitPassed waits until the reader has handed the queue every change
// committed before at: the snapshot's rows go in after those.
func (a *App) waitPassed(ctx context.Context, at uint64, log *slog.Logger) error {
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
