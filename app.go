package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"walhook/admin"
	"walhook/cdc"
	"walhook/deliver"
	"walhook/deliver/store"
	"walhook/matcher"
	"walhook/notify"
)

// AppOptions are what the caller of NewApp provides besides the config.
type AppOptions struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Concurrency is the number of workers per webhook; 0 keeps deliver's
	// default. walhook bench sets it.
	Concurrency int
	// SlotLagInterval is how often the slot's lag is measured against
	// max_lag_mb; 0: every 5 s.
	SlotLagInterval time.Duration
}

// App is a wired walhook: the WAL reader feeding the delivery queue through
// the matcher, and the admin server.
type App struct {
	logger *slog.Logger
	queue  *deliver.Queue
	reader *cdc.Reader
	lag    *cdc.SlotLag // the slot's lag against max_lag_mb
	admin  *http.Server
	ln     net.Listener

	adminSrv *admin.Server // admin's handler, whose token a reload changes

	notifier *notify.Notifier // failure e-mails

	mu      sync.Mutex // serialises Reload and rebuilds
	cfg     *Config
	matcher atomic.Pointer[matcher.Matcher]
	unnamed sync.Map // schema.table → true: tables warned of (route)
	// ownSchema is the store's schema when the store's tables are in the
	// source database: their changes are walhook's own and never events.
	ownSchema string

	// A store in PostgreSQL, shared with other walhooks (see leader.go);
	// nil for bbolt.
	pg    *store.Postgres
	me    store.Instance // this walhook, to the others
	leads atomic.Bool    // it holds the leader lock and reads the slot
	// term ends with the lead term under way (shared store): a backfill
	// runs under it (backfillCtx). Nil while this walhook does not lead.
	term        atomic.Pointer[context.Context]
	following   atomic.Pointer[string] // while it does not lead: who does, or why it cannot tell
	otherLeads  atomic.Bool            // another walhook holds the leader lock, as last seen
	unreachable atomic.Pointer[error]  // the store cannot be reached (leadLoop); nil when it can
	leaderGauge prometheus.Gauge       // walhook_leader

	backfills sync.Map      // webhook → *backfillRun, the latest
	lastPoint atomic.Uint64 // of the latest backfill's snapshot
	bgCtx     context.Context
	bgStop    context.CancelFunc
	bg        sync.WaitGroup // backfills under way
}

// NewApp opens the store and prepares the reader and the admin server;
// Run starts them.
func NewApp(cfg *Config, opts AppOptions) (*App, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	a := &App{logger: opts.Logger, cfg: cfg, ownSchema: ownSchema(cfg)}
	a.bgCtx, a.bgStop = context.WithCancel(context.Background())
	nopts := cfg.SMTPOptions()
	nopts.AdminURL, nopts.Logger = adminURL(*cfg.Admin.Listen), opts.Logger
	a.notifier = notify.New(nopts)
	pg, err := openStore(cfg, opts.Logger)
	if err != nil {
		return nil, err
	}
	var st deliver.Store
	if pg != nil {
		a.pg, st, a.me = pg, pg, newInstance(cfg)
		a.leaderGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "walhook_leader", Help: "1 when this walhook leads the walhooks sharing its store in PostgreSQL (reads the slot), 0 while another does; every one of them delivers its share."})
		opts.Registry.MustRegister(a.leaderGauge)
		waiting := "waiting for the store's leader lock"
		a.following.Store(&waiting)
	}
	q, err := deliver.Open(deliver.Options{
		Store: st, Shared: pg != nil,
		Dir: cfg.Store.Dir, LogDir: cfg.Log.Dir,
		LogMaxSizeMB: cfg.Log.MaxSizeMB, LogMaxBackups: cfg.Log.MaxBackups,
		LogMaxAgeDays: cfg.Log.MaxAgeDays, LogCompress: cfg.Log.Compress,
		Retention:  cfg.Store.Retention,
		Route:      a.route,
		Logger:     opts.Logger,
		Registerer: opts.Registry,
		Version:    version,
		OnFailed:   a.notifier.Notify,

		Concurrency:  opts.Concurrency,
		MaxBodyBytes: cfg.Delivery.MaxBodyBytes,
		Policy:       cfg.AddressPolicy(),
	})
	if err != nil {
		return nil, err
	}
	a.queue = q
	if err := q.SetConfigWebhooks(cfg.DeliverWebhooks()); err != nil {
		q.Close()
		return nil, err
	}
	m, err := a.buildMatcher(cfg)
	if err != nil {
		q.Close()
		return nil, err
	}
	a.matcher.Store(m)
	tables, all := m.Tables()
	a.reader, err = cdc.NewReader(cdc.Config{
		DSN: cfg.Postgres.DSN, Slot: cfg.Postgres.Slot, Publication: cfg.Postgres.Publication,
		ManagePublication: *cfg.Postgres.ManagePublication,
		Tables:            tables, AllTables: all,
		Required: bareTables(cfg),
		Logger:   opts.Logger, Registerer: opts.Registry,
	}, q)
	if err != nil {
		q.Close()
		return nil, err
	}
	a.lag, err = cdc.NewSlotLag(cdc.SlotLagConfig{
		DSN: cfg.Postgres.DSN, Slot: cfg.Postgres.Slot, MaxBytes: uint64(cfg.Postgres.MaxLagMB) << 20,
		Interval: opts.SlotLagInterval, Logger: opts.Logger, Registerer: opts.Registry,
	})
	if err != nil {
		q.Close()
		return nil, err
	}
	q.OnChange(a.webhooksChanged)
	if listen := *cfg.Admin.Listen; listen != "" {
		ln, err := adminListener(cfg.Admin)
		if err != nil {
			q.Close()
			return nil, err
		}
		a.ln = ln
		srv := admin.New(admin.Options{
			Token: cfg.Admin.Token, Ready: a.ready, Gatherer: opts.Registry, Logger: opts.Logger,
			Queue: q, Entities: a.entities,
			Validate:  a.validateAPIWebhook,
			Problems:  a.problems,
			Backfills: a,
			Slot:      a.slotState,
		})
		a.adminSrv = srv
		a.admin = newAdminServer(srv)
	}
	return a, nil
}

// validateAPIWebhook checks an API webhook's events as a config webhook's
// are checked (entities of the current config), and that the publication
// can take its tables: a webhook whose table walhook must not publish is
// refused with the reason, rather than created to receive nothing.
func (a *App) validateAPIWebhook(w deliver.Webhook) error {
	a.mu.Lock()
	entities := a.cfg.MatcherEntities()
	a.mu.Unlock()
	m, err := matcher.New(entities, []matcher.Rule{{Webhook: w.Name, Events: w.Events, Actions: w.Actions}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.checkBareNames(ctx, m); err != nil {
		return err
	}
	tables, all := m.Tables()
	if err := a.reader.CheckTables(ctx, tables, all); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// bareTables lists the tables that cfg's webhooks name by a bare name:
// walhook run stops when one does not exist, as it would at any other
// unknown entity, had it not needed the database to tell.
func bareTables(cfg *Config) []string {
	m, err := matcher.New(cfg.MatcherEntities(), cfg.rules())
	if err != nil {
		return nil // Validate has refused cfg already
	}
	var out []string
	for _, b := range m.BareNames() {
		out = append(out, b.Table())
	}
	return out
}

// checkBareNames returns the error of each bare name in m's events whose
// table is missing (matcher.BareName). When the database cannot be asked
// it lets them be: the publication then refuses a missing table, as it
// refuses a missing schema.table, and the page says so.
func (a *App) checkBareNames(ctx context.Context, m *matcher.Matcher) error {
	var tables []string
	for _, b := range m.BareNames() {
		tables = append(tables, b.Table())
	}
	if len(tables) == 0 {
		return nil
	}
	found, err := a.reader.Inspect(ctx, tables...)
	if err != nil {
		a.logger.Warn("cannot tell whether the tables that events name without a schema exist", "tables", tables, "err", err)
		return nil
	}
	exists := map[string]bool{}
	for _, t := range found {
		exists[t.String()] = t.Exists
	}
	return m.Check(func(table string) bool { return exists[table] })
}

// unknownNames turns the reader's missing required tables into the errors
// of the config's bare names that stand for them.
func (a *App) unknownNames(missing *cdc.MissingTablesError) error {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	m, err := matcher.New(cfg.MatcherEntities(), cfg.rules())
	if err != nil {
		return missing
	}
	if err := m.Check(func(table string) bool { return !slices.Contains(missing.Tables, table) }); err != nil {
		return err
	}
	return missing
}

// problems is what the admin page shows above the webhooks.
func (a *App) problems() []string {
	var out []string
	if msg := a.reader.Refused(); msg != "" {
		for _, line := range strings.Split(msg, "\n") {
			out = append(out, "No events: "+line)
		}
	}
	if err := a.queue.Healthy(); err != nil {
		out = append(out, "Store failing, reading the WAL paused (nothing is lost; it goes on when the store writes again): "+err.Error())
	}
	return out
}

// route is the queue's Route: the current matcher decides. The changes of
// a table the config does not name are dropped, with a warning the first
// time: most often the table was renamed, and its webhooks get nothing.
func (a *App) route(ev *cdc.Event) []string {
	if ev.Schema == a.ownSchema {
		return nil
	}
	targets, named := a.matcher.Load().Match(ev)
	if !named {
		table := ev.Schema + "." + ev.Table
		if _, seen := a.unnamed.LoadOrStore(table, true); !seen {
			a.logger.Warn("changes of a table that no webhook or entity names are read and dropped; if it was renamed, its webhooks get nothing until the config names it", "table", table)
		}
	}
	return targets
}

// buildMatcher compiles the config's entities with the rules of every
// webhook the queue knows (config and API).
func (a *App) buildMatcher(cfg *Config) (*matcher.Matcher, error) {
	var rules []matcher.Rule
	for _, w := range a.queue.Webhooks() {
		rules = append(rules, matcher.Rule{Webhook: w.Name, Events: w.Events, Actions: w.Actions})
	}
	return matcher.New(cfg.MatcherEntities(), rules)
}

func (a *App) webhooksChanged() {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, err := a.buildMatcher(a.cfg)
	if err != nil {
		a.logger.Error("webhooks changed but cannot be matched; keeping the previous routing", "err", err)
		return
	}
	a.matcher.Store(m)
	tables, all := m.Tables()
	a.reader.SetTables(tables, all)
}

// Reload applies a new config's webhooks, entities and [smtp] settings.
// Other connection settings need a restart. A bare name in its events
// whose table does not exist keeps the old config, as it stops a start.
func (a *App) Reload(cfg *Config) error {
	m, err := matcher.New(cfg.MatcherEntities(), cfg.rules())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.checkBareNames(ctx, m); err != nil {
		return err
	}
	a.mu.Lock()
	old := a.cfg
	a.cfg = cfg
	a.mu.Unlock()
	if err := a.queue.SetConfigWebhooks(cfg.DeliverWebhooks()); err != nil {
		return err
	}
	a.notifier.SetOptions(cfg.SMTPOptions())
	if cfg.Admin.Token != old.Admin.Token && a.adminSrv != nil {
		a.adminSrv.SetToken(cfg.Admin.Token)
		a.logger.Info("reload: the new [admin] token is in force")
	}
	oa, na := old.Admin, cfg.Admin
	if *oa.Listen != *na.Listen || oa.TLSCert != na.TLSCert || oa.TLSKey != na.TLSKey {
		a.logger.Warn("reload: [admin] listen, tls_cert and tls_key are read at start: the change needs a restart")
	}
	if !reflect.DeepEqual(old.Delivery, cfg.Delivery) {
		a.logger.Warn("reload: [delivery] is read at start: the change needs a restart")
	}
	return nil
}

// adminListener listens on [admin] listen, with TLS when tls_cert and
// tls_key are set.
func adminListener(c AdminConfig) (net.Listener, error) {
	var tc *tls.Config
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("admin.tls_cert, admin.tls_key: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", *c.Listen)
	if err != nil {
		return nil, fmt.Errorf("admin.listen: %w", err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	return ln, nil
}

// newAdminServer serves the admin handler with every timeout set: an idle
// keep-alive connection, a slow request and a slow reader each end (the
// test route extends its own write deadline to the webhook's timeout).
func newAdminServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}

// AdminAddr is the admin server's address, "" when disabled.
func (a *App) AdminAddr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

// Queue exposes the delivery queue (for the demo and tests).
func (a *App) Queue() *deliver.Queue { return a.queue }

// slotState is the slot as the admin page's overview strip shows it.
func (a *App) slotState() admin.SlotState {
	st := admin.SlotState{Reading: a.reader.Ready(), LagBytes: a.lag.Bytes(), LagSeconds: a.lag.Seconds(), MaxLagBytes: a.lag.Limit()}
	if a.pg != nil {
		st.Shared, st.Leads = true, a.leads.Load()
		st.Instances, _ = a.pg.Instances()
		st.Differing = a.differingConfigs()
	}
	switch err := a.queue.Healthy(); {
	case a.pg != nil && !st.Leads:
		st.Reading, st.Waiting = false, "another walhook reads the slot; this one delivers its share: "+*a.following.Load()
	case !st.Reading:
		st.Waiting = "not connected to PostgreSQL, retrying"
	case err != nil:
		// Connected, but the reader stops at the changes already waiting.
		st.Reading, st.Waiting = false, "the store cannot commit, reading paused: "+err.Error()
	}
	return st
}

// ready is /readyz: a slot above max_lag_mb is named first, because it is
// what fills the database's disk.
func (a *App) ready() error {
	if a.pg != nil && !a.leads.Load() {
		// Delivering its share and answering the admin API as the leader
		// does: ready while another walhook reads the slot and the store
		// takes writes. Not before it has seen the leader: a walhook about
		// to lead is ready once it reads.
		if err := a.unreachable.Load(); err != nil {
			return *err
		}
		if !a.otherLeads.Load() {
			return errors.New(*a.following.Load())
		}
		return a.queue.Healthy()
	}
	var errs []error
	if a.lag.Exceeded() {
		errs = append(errs, fmt.Errorf("replication slot lag %d bytes is above max_lag_mb = %d: PostgreSQL keeps that WAL on its disk",
			a.lag.Bytes(), a.lag.Limit()>>20))
	}
	if !a.reader.Ready() {
		errs = append(errs, errors.New("not connected to PostgreSQL"))
	}
	return errors.Join(append(errs, a.queue.Healthy())...)
}

// Run serves until ctx is cancelled, then shuts down gracefully: stops
// reading WAL, lets in-flight requests finish, persists and closes.
func (a *App) Run(ctx context.Context) error {
	if a.admin != nil {
		go func() {
			if err := a.admin.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("admin server", "err", err)
			}
		}()
		scheme := "http://"
		a.mu.Lock()
		if a.cfg.Admin.TLSCert != "" {
			scheme = "https://"
		}
		a.mu.Unlock()
		a.logger.Info("admin page", "url", scheme+a.AdminAddr()+"/")
	}
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() { a.lag.Run(lagCtx); close(lagDone) }()
	var err error
	if a.pg != nil {
		err = a.runShared(ctx)
	} else {
		a.resumeBackfill()
		err = a.reader.Run(ctx)
		if missing := (*cdc.MissingTablesError)(nil); errors.As(err, &missing) {
			err = a.unknownNames(missing)
		}
	}
	stopLag()
	<-lagDone
	a.bgStop()
	a.bg.Wait()
	if a.admin != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.admin.Shutdown(sctx)
		cancel()
	}
	if cerr := a.queue.Close(); err == nil {
		err = cerr
	}
	a.notifier.Close()
	return err
}

// adminURL is the base of the admin routes named in failure e-mails; ""
// (routes only) when the admin server is off or its port is chosen at start.
func adminURL(listen string) string {
	if _, port, err := net.SplitHostPort(listen); err != nil || port == "0" {
		return ""
	}
	return "http://" + listen
}

// openStore opens the store in PostgreSQL that [store] names; nil for
// bbolt, which the queue opens itself in store.dir. It does not lead it
// yet (App.leadTerm).
func openStore(cfg *Config, logger *slog.Logger) (*store.Postgres, error) {
	if cfg.Store.Kind != storePostgres {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return store.OpenPostgres(ctx, store.PostgresOptions{
		DSN: cfg.Store.DSN, Schema: cfg.Store.Schema, Retention: cfg.Store.Retention, Logger: logger,
	})
}

// ownSchema is the store's schema for a store in PostgreSQL: its changes
// are walhook's own and never events, wherever the store is. (Telling
// whether the store is in the database walhook reads by comparing DSNs
// misses aliases: localhost and 127.0.0.1, a socket and TCP.) The schema's
// name is walhook's in every database it reads.
func ownSchema(cfg *Config) string {
	if cfg.Store.Kind != storePostgres {
		return ""
	}
	return cfg.Store.Schema
}
