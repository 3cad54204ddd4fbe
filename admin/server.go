// Package admin serves the operator's page, the JSON API, the health
// probes and /metrics.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"walhook/deliver"
)

// Queue is what the admin needs of the delivery queue (*deliver.Queue).
type Queue interface {
	Webhooks() []deliver.Webhook
	Webhook(name string) (deliver.Webhook, bool)
	Stats(name string) deliver.Stats
	CreateWebhook(w deliver.Webhook) (deliver.Webhook, error)
	UpdateWebhook(name string, patch func(*deliver.Webhook) error) (deliver.Webhook, error)
	SetActive(name string, active bool) (deliver.Webhook, error)
	DeleteWebhook(name string) error
	Test(ctx context.Context, name string) (deliver.Attempt, error)
	Deliveries(name string, limit int, status string) ([]deliver.Delivery, error)
	FindDeliveries(name string, q deliver.DeliveryQuery, payloads bool) (deliver.DeliveryPage, error)
	Delivery(id string) (deliver.Delivery, error)
	Chart(name, span string, now time.Time) (deliver.Chart, bool)
	Overview(now time.Time) deliver.Overview
	Redeliver(id string) error
	Recover(name string, since time.Time) (int, error)
	LogPath(name string) string
	FlushLog(name string)
	TryWhen(name, expr string, event []byte, limit int) (string, []deliver.WhenResult, error)
}

// Entity is an event type a webhook can subscribe to.
type Entity struct {
	Name            string `json:"name"`             // what a webhook's events lists: an [[entity]] name or schema.table
	Table           string `json:"table"`            // schema.table
	Source          string `json:"source"`           // "config" for an [[entity]], "database" for a table
	ReplicaIdentity string `json:"replica_identity"` // default, full, index or nothing; "" when the table was not found
	PrimaryKey      bool   `json:"primary_key"`
	// Unpublished says in a few words why walhook does not publish the
	// table (cdc's verdict); "" when it does.
	Unpublished string `json:"unpublished,omitempty"`
}

// Options configure a Server.
type Options struct {
	Token    string              // required for every route but /healthz when set
	Ready    func() error        // nil when ready; the error says why not
	Gatherer prometheus.Gatherer // for /metrics
	Logger   *slog.Logger

	// Queue backs the page and the API; nil serves only the probes and
	// /metrics.
	Queue Queue
	// Entities lists the event types offered to webhooks. On error it may
	// still return what it knows without the database (the configured
	// entities).
	Entities func(ctx context.Context) ([]Entity, error)
	// Validate checks a webhook beyond deliver.Webhook.Validate, e.g. that
	// its events name known entities; its error is shown to the user.
	Validate func(w deliver.Webhook) error
	// Problems lists what the page shows above the webhooks: what keeps
	// them from getting events (tables left out of the publication).
	Problems func() []string
	// Backfills runs backfills; nil: none.
	Backfills Backfiller
	// Slot says whether the slot is read and how far it lags, for the
	// overview strip; nil: reading, no lag known.
	Slot func() SlotState
}

// Server is the admin HTTP handler.
type Server struct {
	opts  Options
	mux   *http.ServeMux
	csrf  *http.CrossOriginProtection
	token atomic.Pointer[string] // Options.Token, or SetToken's
}

// SetToken replaces the admin token (a reload of [admin] token): requests
// from now on need the new one.
func (s *Server) SetToken(token string) { s.token.Store(&token) }

// New builds the handler.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), csrf: http.NewCrossOriginProtection()}
	s.SetToken(opts.Token)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.Handle("GET /readyz", http.HandlerFunc(s.readyz))
	if opts.Gatherer != nil {
		s.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	if opts.Queue != nil {
		s.routeAPI()
		s.routePage()
	}
	return s
}

// Handle registers an extra authenticated route.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, s.guard(h)) }

func (s *Server) handleFunc(pattern string, h http.HandlerFunc) { s.Handle(pattern, h) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.opts.Ready != nil {
		if err := s.opts.Ready(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// guard runs every check a route needs before its handler: the host (when
// there is no token), the token, and the cross-site check for requests
// that change something.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if *s.token.Load() == "" && !loopbackHost(r.Host) {
			// Without a token only the loopback listener protects the
			// admin; a page that rebinds its own DNS name to 127.0.0.1
			// would reach it under a foreign Host.
			writeError(w, http.StatusForbidden, "host %q refused: without [admin] token only localhost names are served", r.Host)
			return
		}
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="walhook"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong admin token")
			return
		}
		if err := s.csrf.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "cross-site request refused: %v", err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authorized checks the bearer token or the basic-auth password in
// constant time.
func (s *Server) authorized(r *http.Request) bool {
	token := *s.token.Load()
	if token == "" {
		return true
	}
	given := ""
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		given = strings.TrimPrefix(h, "Bearer ")
	} else if _, pw, ok := r.BasicAuth(); ok {
		given = pw
	}
	return subtle.ConstantTimeCompare([]byte(given), []byte(token)) == 1
}

// loopbackHost reports whether a Host header names this machine.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
