package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"walhook/admin"
	"walhook/cdc"
	"walhook/deliver"
	"walhook/deliver/store"
)

// With a store in PostgreSQL several walhooks share one queue. Each
// delivers its share of the partitions (store.Postgres.Claim) and hears
// of the others' changes (Listen); one of them, the holder of the store's
// leader lock, also reads the slot and writes the events. A walhook that
// does not lead waits for the lock beside its deliveries, and takes over
// the slot when the leader's session ends (a SIGKILL, a crash of its host
// that the server's TCP keepalive notices).

// runShared is Run's reading for a store in PostgreSQL: it delivers its
// share at once and reads the slot whenever it leads, until ctx ends or
// the reader stops for good.
func (a *App) runShared(ctx context.Context) error {
	bg, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); a.pg.Listen(bg, a.queue.Noted) }()
	go func() { defer wg.Done(); a.pg.Claim(bg, a.instance(), a.leads.Load, a.queue.Own) }()
	go func() { defer wg.Done(); a.watchConfigs(bg) }()
	err := a.leadLoop(ctx)
	stop() // Claim stops the deliveries and gives the partitions up
	wg.Wait()
	return err
}

// leadLoop waits for the leader lock and reads the slot while it holds
// it, again and again, until ctx ends. At the first start a store that
// cannot be reached was an error already (NewApp); later it tries again
// every few seconds until the store is back.
func (a *App) leadLoop(ctx context.Context) error {
	var told string
	waiting := func(h store.Holder) {
		a.unreachable.Store(nil)
		a.otherLeads.Store(true)
		msg := "the leader is " + h.String()
		a.following.Store(&msg)
		if msg != told {
			a.logger.Info("another walhook leads the store: this one delivers its share and waits to lead", "leader", h.String())
			told = msg
		}
	}
	for ctx.Err() == nil {
		a.mu.Lock()
		dsn, schema := a.cfg.Store.DSN, a.cfg.Store.Schema
		a.mu.Unlock()
		l, err := store.AcquireLeader(ctx, dsn, schema, a.me.Name, waiting)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			msg := "the store cannot be reached: " + err.Error()
			a.following.Store(&msg)
			e := errors.New(msg)
			a.unreachable.Store(&e)
			a.otherLeads.Store(false)
			a.logger.Error("the store cannot be reached; trying again in 5 s", "err", err)
			pause(ctx, 5*time.Second)
			continue
		}
		a.unreachable.Store(nil)
		a.otherLeads.Store(false)
		err = a.leadTerm(ctx, l)
		l.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// leadTerm reads the slot while l is held. It returns nil when the lock is
// lost (the next leader reads on from what was stored) or ctx ends, and
// the reader's error when it stops for good.
func (a *App) leadTerm(ctx context.Context, l *store.Leader) error {
	if err := a.queue.Lead(ctx); err != nil {
		a.logger.Error("taking the lead failed; trying again in 5 s", "err", err)
		pause(ctx, 5*time.Second)
		return nil
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.term.Store(&rctx) // before leads: a backfill asked for once it leads runs under the term
	defer a.term.Store(nil)
	a.leads.Store(true)
	a.leaderGauge.Set(1)
	a.logger.Info("this walhook leads the store: it reads the slot", "schema", a.cfg.Store.Schema)
	defer func() {
		a.leads.Store(false)
		a.leaderGauge.Set(0)
		a.queue.Follow()
	}()
	go func() {
		select {
		case <-l.Lost():
			a.logger.Error("this walhook no longer leads the store: it stops reading the slot, delivers its share and waits to lead again", "err", l.Err())
			cancel()
		case <-rctx.Done():
		}
	}()
	a.resumeBackfill()
	err := a.reader.Run(rctx)
	if missing := (*cdc.MissingTablesError)(nil); errors.As(err, &missing) {
		return a.unknownNames(missing)
	}
	if err != nil {
		return err
	}
	if ctx.Err() == nil {
		pause(ctx, 5*time.Second) // a lock lost with a store that restarts is not fought for in a loop
	}
	return nil
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// newInstance says who this walhook is to the others sharing its store.
func newInstance(cfg *Config) store.Instance {
	host, _ := os.Hostname()
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		panic(err)
	}
	return store.Instance{
		ID:     hex.EncodeToString(id),
		Name:   fmt.Sprintf("%s %s pid %d", host, *cfg.Admin.Listen, os.Getpid()),
		Admin:  *cfg.Admin.Listen,
		Config: configDigest(cfg),
	}
}

// instance is this walhook as its renewals say, with the config in use.
func (a *App) instance() store.Instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	me := a.me
	me.Config = configDigest(a.cfg)
	return me
}

// configDigest is a digest of the config's webhooks, which every walhook
// sharing a store must agree on: their names, URLs, events, actions,
// filters, templates and limits; not their secrets or header values
// (the store holds only the digest, but a digest of a weak secret could be
// guessed).
func configDigest(cfg *Config) string {
	hooks := cfg.DeliverWebhooks()
	for i := range hooks {
		w := &hooks[i]
		w.Secrets = nil
		names := make(map[string]string, len(w.Headers)) // a copy: the config's map stays
		for k := range w.Headers {
			names[k] = ""
		}
		w.Headers = names
	}
	slices.SortFunc(hooks, func(x, y deliver.Webhook) int { return strings.Compare(x.Name, y.Name) })
	b, _ := json.Marshal(hooks)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// watchConfigs logs, when it changes, which walhooks sharing the store
// run a config whose webhooks differ from this one's.
func (a *App) watchConfigs(ctx context.Context) {
	var told string
	for {
		if differ := a.differingConfigs(); differ != nil {
			if s := fmt.Sprint(differ); s != told {
				a.logger.Error("walhooks sharing the store run configs whose webhooks differ from this one's: each delivers by its own, so make them agree", "differing", differ)
				told = s
			}
		} else {
			told = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// differingConfigs names the walhooks alive whose config differs from
// this one's; nil when they agree (or cannot be read).
func (a *App) differingConfigs() []string {
	ins, err := a.pg.Instances()
	if err != nil {
		return nil
	}
	mine := a.instance().Config
	var out []string
	for _, in := range ins {
		if in.Config != mine {
			out = append(out, in.Name)
		}
	}
	return out
}

// mustLead refuses what only the walhook that reads the slot may do (a
// backfill: it reads the rows in step with the changes it reads), naming
// the one that does.
func (a *App) mustLead() error {
	if a.pg == nil || a.leads.Load() {
		return nil
	}
	return fmt.Errorf("%w: backfills run on the walhook that does, %s: send the request there", admin.ErrNotLeader, a.leaderName())
}

// leaderName names the walhook that leads the store, as its renewals say.
func (a *App) leaderName() string {
	if ins, err := a.pg.Instances(); err == nil {
		for _, in := range ins {
			if in.Leader {
				return fmt.Sprintf("the walhook at %s (%s)", in.Admin, in.Name)
			}
		}
	}
	return "another walhook"
}
