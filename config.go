package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"walhook/deliver"
	"walhook/matcher"
	"walhook/notify"
)

// Config is config.toml as written by the user.
type Config struct {
	Postgres PostgresConfig  `toml:"postgres"`
	Store    StoreConfig     `toml:"store"`
	Log      LogConfig       `toml:"log"`
	Admin    AdminConfig     `toml:"admin"`
	SMTP     SMTPConfig      `toml:"smtp"`
	Delivery DeliveryConfig  `toml:"delivery"`
	Entities []EntityConfig  `toml:"entity"`
	Webhooks []WebhookConfig `toml:"webhook"`
}

// PostgresConfig is [postgres].
type PostgresConfig struct {
	DSN               string `toml:"dsn"`
	Slot              string `toml:"slot"`
	Publication       string `toml:"publication"`
	ManagePublication *bool  `toml:"manage_publication"`
	MaxLagMB          int    `toml:"max_lag_mb"`
}

// StoreConfig is [store].
type StoreConfig struct {
	Kind      string `toml:"kind"` // "bbolt" (default) or "postgres"
	Dir       string `toml:"dir"`
	Retention int    `toml:"retention"`
	DSN       string `toml:"dsn"`    // kind = "postgres": the store's database
	Schema    string `toml:"schema"` // kind = "postgres": its schema, default "walhook"
}

// LogConfig is [log].
type LogConfig struct {
	Dir        string `toml:"dir"`
	MaxSizeMB  int    `toml:"max_size_mb"`
	MaxBackups int    `toml:"max_backups"`
	MaxAgeDays int    `toml:"max_age_days"`
	Compress   bool   `toml:"compress"`
}

// AdminConfig is [admin].
type AdminConfig struct {
	Listen  *string `toml:"listen"`
	Token   string  `toml:"token"`
	TLSCert string  `toml:"tls_cert"` // PEM files: the admin serves HTTPS with them
	TLSKey  string  `toml:"tls_key"`
}

// DeliveryConfig is [delivery]: what every webhook's requests are held to.
type DeliveryConfig struct {
	MaxBodyBytes   int      `toml:"max_body_bytes"`   // the largest body a template renders; default 1 MiB
	AllowNetworks  []string `toml:"allow_networks"`   // CIDRs always allowed
	DenyNetworks   []string `toml:"deny_networks"`    // CIDRs refused for every webhook
	APIDenyPrivate bool     `toml:"api_deny_private"` // loopback and private ranges refused for API webhooks
}

// SMTPConfig is [smtp].
type SMTPConfig struct {
	Host     string `toml:"host"`
	Port     int    `toml:"port"`
	Username string `toml:"username"`
	Password string `toml:"password"`
	From     string `toml:"from"`
	StartTLS bool   `toml:"starttls"`
}

// EntityConfig is one [[entity]].
type EntityConfig struct {
	Name  string   `toml:"name"`
	Table string   `toml:"table"`
	ID    []string `toml:"id"`
	URL   string   `toml:"url"`
}

// BasicAuth is a webhook's basic_auth table.
type BasicAuth struct {
	Username string `toml:"username"`
	Password string `toml:"password"`
}

// WebhookConfig is one [[webhook]].
type WebhookConfig struct {
	Name            string            `toml:"name"`
	URL             string            `toml:"url"`
	Active          *bool             `toml:"active"`
	Events          []string          `toml:"events"`
	Actions         []string          `toml:"actions"`
	Method          string            `toml:"method"`
	ContentType     string            `toml:"content_type"`
	IncludeEntity   *bool             `toml:"include_entity"`
	Template        string            `toml:"template"`
	When            string            `toml:"when"`
	Columns         []string          `toml:"columns"`
	ExcludeColumns  []string          `toml:"exclude_columns"`
	HeaderPrefix    string            `toml:"header_prefix"`
	Secret          string            `toml:"secret"`
	SecretEnv       string            `toml:"secret_env"`
	Secrets         []string          `toml:"secrets"`
	Signature       *string           `toml:"signature"`
	SignatureHeader string            `toml:"signature_header"`
	Headers         map[string]string `toml:"headers"`
	BasicAuth       *BasicAuth        `toml:"basic_auth"`
	TimeoutMS       *int              `toml:"timeout_ms"`
	MaxAttempts     *int              `toml:"max_attempts"`
	RetryMode       string            `toml:"retry_mode"`
	NotifyEmail     string            `toml:"notify_email"`
	NotifyOnFailure bool              `toml:"notify_on_failure"`

	BatchSize   *int `toml:"batch_size"`    // events per request; default 1
	BatchWaitMS *int `toml:"batch_wait_ms"` // how long a partial batch waits for more; default 0

	RateLimit    *float64 `toml:"rate_limit"`    // requests per second; default no limit
	MaxInFlight  *int     `toml:"max_in_flight"` // concurrent requests; default one per worker
	DisableAfter string   `toml:"disable_after"` // switch off after this long of failures, e.g. "72h"; default never
}

// LoadConfig reads and validates the file at path; relative directories in
// it are made relative to the file.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	base := filepath.Dir(abs)
	for _, d := range []*string{&cfg.Store.Dir, &cfg.Log.Dir, &cfg.Admin.TLSCert, &cfg.Admin.TLSKey} {
		if *d != "" && !filepath.IsAbs(*d) {
			*d = filepath.Join(base, *d)
		}
	}
	return cfg, nil
}

// ParseConfig decodes config.toml, applies defaults and the environment
// ($WALHOOK_POSTGRES_DSN, $WALHOOK_ADMIN_TOKEN, secret_env) and validates.
func ParseConfig(r io.Reader) (*Config, error) {
	var cfg Config
	md, err := toml.NewDecoder(r).Decode(&cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("config: %s", perr.Error())
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("config: unknown key %s", strings.Join(keys, ", "))
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &cfg, nil
}

func (c *Config) applyDefaults() {
	p := &c.Postgres
	if dsn := os.Getenv("WALHOOK_POSTGRES_DSN"); dsn != "" {
		p.DSN = dsn
	}
	if p.Slot == "" {
		p.Slot = "walhook"
	}
	if p.Publication == "" {
		p.Publication = "walhook"
	}
	if p.ManagePublication == nil {
		t := true
		p.ManagePublication = &t
	}
	if p.MaxLagMB == 0 {
		p.MaxLagMB = 1024
	}
	if c.Store.Dir == "" {
		c.Store.Dir = "data"
	}
	if c.Store.Retention == 0 {
		c.Store.Retention = 100
	}
	if c.Store.Kind == "" {
		c.Store.Kind = storeBolt
	}
	if dsn := os.Getenv("WALHOOK_STORE_DSN"); dsn != "" {
		c.Store.DSN = dsn
	}
	if c.Store.Schema == "" {
		c.Store.Schema = "walhook"
	}
	l := &c.Log
	if l.Dir == "" {
		l.Dir = "logs"
	}
	if l.MaxSizeMB == 0 {
		l.MaxSizeMB = 10
	}
	if l.MaxBackups == 0 {
		l.MaxBackups = 5
	}
	if l.MaxAgeDays == 0 {
		l.MaxAgeDays = 30
	}
	if c.Admin.Listen == nil {
		s := "127.0.0.1:8080"
		c.Admin.Listen = &s
	}
	if tok := os.Getenv("WALHOOK_ADMIN_TOKEN"); tok != "" {
		c.Admin.Token = tok
	}
	if c.SMTP.Port == 0 {
		c.SMTP.Port = 25
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// Validate checks every key; the error names the key and the bad value.
func (c *Config) Validate() error {
	if c.Postgres.Slot != "" && !regexp.MustCompile(`^[a-z0-9_]+$`).MatchString(c.Postgres.Slot) {
		return fmt.Errorf("postgres.slot: must be lower-case letters, digits and _ (got %q)", c.Postgres.Slot)
	}
	if c.Postgres.MaxLagMB < 0 {
		return fmt.Errorf("postgres.max_lag_mb: must be positive (got %d)", c.Postgres.MaxLagMB)
	}
	if c.Store.Retention < 0 {
		return fmt.Errorf("store.retention: must be positive (got %d)", c.Store.Retention)
	}
	if err := c.Store.validate(); err != nil {
		return err
	}
	if listen := *c.Admin.Listen; listen != "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return fmt.Errorf("admin.listen: %q is not host:port", listen)
		}
		if !isLoopback(host) && c.Admin.Token == "" {
			return fmt.Errorf("admin.token: required when admin.listen (%q) is not a loopback address (or set $WALHOOK_ADMIN_TOKEN)", listen)
		}
	}
	if (c.Admin.TLSCert == "") != (c.Admin.TLSKey == "") {
		return errors.New("admin.tls_cert, admin.tls_key: give both or neither")
	}
	if err := c.Delivery.validate(); err != nil {
		return err
	}
	if c.SMTP.From != "" {
		if err := notify.CheckAddress(c.SMTP.From); err != nil {
			return fmt.Errorf("smtp.from: %w", err)
		}
	}
	entities := map[string]bool{}
	for i, e := range c.Entities {
		switch {
		case e.Name == "":
			return fmt.Errorf("entity[%d].name: missing", i)
		case entities[e.Name]:
			return fmt.Errorf("entity %q: name: duplicate", e.Name)
		case e.Table == "":
			return fmt.Errorf("entity %q: table: missing", e.Name)
		}
		entities[e.Name] = true
	}
	names := map[string]bool{}
	for i, w := range c.Webhooks {
		if w.Name == "" {
			return fmt.Errorf("webhook[%d].name: missing", i)
		}
		if len(w.Name) > deliver.MaxNameLen {
			return fmt.Errorf("webhook[%d].name: at most %d bytes, it names the webhook's .log file (got %d)", i, deliver.MaxNameLen, len(w.Name))
		}
		if !nameRE.MatchString(w.Name) {
			return fmt.Errorf("webhook %q: name: only letters, digits, _ . - allowed", w.Name)
		}
		if names[w.Name] {
			return fmt.Errorf("webhook %q: name: duplicate", w.Name)
		}
		names[w.Name] = true
		if len(w.Events) == 0 {
			return fmt.Errorf("webhook %q: events: missing (entity names, schema.table or \"*\")", w.Name)
		}
		if w.Secret != "" && len(w.Secrets) > 0 {
			return fmt.Errorf("webhook %q: secret: give secret or secrets, not both", w.Name)
		}
		if w.SecretEnv != "" && os.Getenv(w.SecretEnv) == "" {
			return fmt.Errorf("webhook %q: secret_env: $%s is not set", w.Name, w.SecretEnv)
		}
		if w.MaxAttempts != nil && (*w.MaxAttempts < 1 || *w.MaxAttempts > 8) {
			return fmt.Errorf("webhook %q: max_attempts: must be 1..8 (got %d)", w.Name, *w.MaxAttempts)
		}
		if w.BatchSize != nil && (*w.BatchSize < 1 || *w.BatchSize > deliver.MaxBatchSize) {
			return fmt.Errorf("webhook %q: batch_size: must be 1..%d (got %d)", w.Name, deliver.MaxBatchSize, *w.BatchSize)
		}
		if w.MaxInFlight != nil && *w.MaxInFlight < 1 {
			return fmt.Errorf("webhook %q: max_in_flight: must be 1..%d (got %d)", w.Name, deliver.MaxInFlight, *w.MaxInFlight)
		}
		if _, err := deliver.ParseDisableAfter(w.DisableAfter); err != nil {
			return fmt.Errorf("webhook %q: %w", w.Name, err)
		}
		if w.TimeoutMS != nil && *w.TimeoutMS <= 0 {
			return fmt.Errorf("webhook %q: timeout_ms: must be positive (got %d)", w.Name, *w.TimeoutMS)
		}
		hook := w.Webhook()
		if err := hook.Validate(); err != nil {
			return fmt.Errorf("webhook %q: %w", w.Name, err)
		}
	}
	if _, err := matcher.New(c.MatcherEntities(), c.rules()); err != nil {
		return err
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// MatcherEntities converts [[entity]] for the matcher.
func (c *Config) MatcherEntities() []matcher.Entity {
	out := make([]matcher.Entity, 0, len(c.Entities))
	for _, e := range c.Entities {
		schema, table := "public", e.Table
		if s, t, ok := strings.Cut(e.Table, "."); ok {
			schema, table = s, t
		}
		out = append(out, matcher.Entity{Name: e.Name, Schema: schema, Table: table, ID: e.ID, URL: e.URL})
	}
	return out
}

func (c *Config) rules() []matcher.Rule {
	out := make([]matcher.Rule, 0, len(c.Webhooks))
	for _, w := range c.Webhooks {
		out = append(out, matcher.Rule{Webhook: w.Name, Events: w.Events, Actions: w.Actions})
	}
	return out
}

func (d DeliveryConfig) validate() error {
	if d.MaxBodyBytes < 0 || d.MaxBodyBytes > 64<<20 {
		return fmt.Errorf("delivery.max_body_bytes: must be 0..%d (got %d)", 64<<20, d.MaxBodyBytes)
	}
	for key, nets := range map[string][]string{"allow_networks": d.AllowNetworks, "deny_networks": d.DenyNetworks} {
		if _, err := parsePrefixes(nets); err != nil {
			return fmt.Errorf("delivery.%s: %w", key, err)
		}
	}
	return nil
}

// parsePrefixes reads CIDRs; a bare address is the network of itself.
func parsePrefixes(nets []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR (e.g. 10.0.0.0/8, fd00::/8) or an address", n)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// AddressPolicy is [delivery]'s outbound address policy as deliver takes it.
func (c *Config) AddressPolicy() deliver.AddressPolicy {
	allow, _ := parsePrefixes(c.Delivery.AllowNetworks) // checked by Validate
	deny, _ := parsePrefixes(c.Delivery.DenyNetworks)
	return deliver.AddressPolicy{Allow: allow, Deny: deny, APIDenyPrivate: c.Delivery.APIDenyPrivate}
}

// SMTPOptions are the [smtp] settings as the Notifier takes them.
func (c *Config) SMTPOptions() notify.Options {
	s := c.SMTP
	return notify.Options{Host: s.Host, Port: s.Port, Username: s.Username, Password: s.Password, From: s.From, StartTLS: s.StartTLS}
}

// DeliverWebhooks converts every [[webhook]] into deliver.Webhook.
func (c *Config) DeliverWebhooks() []deliver.Webhook {
	out := make([]deliver.Webhook, 0, len(c.Webhooks))
	for _, w := range c.Webhooks {
		out = append(out, w.Webhook())
	}
	return out
}

// Webhook converts one [[webhook]], with defaults.
func (w WebhookConfig) Webhook() deliver.Webhook {
	h := deliver.Webhook{
		Name: w.Name, URL: w.URL, Events: w.Events, Actions: w.Actions,
		Method: strings.ToUpper(w.Method), ContentType: w.ContentType, Template: w.Template,
		When: w.When, Columns: w.Columns, ExcludeColumns: w.ExcludeColumns,
		HeaderPrefix: w.HeaderPrefix, SignatureHeader: w.SignatureHeader, Headers: w.Headers,
		RetryMode: w.RetryMode, NotifyEmail: w.NotifyEmail, NotifyOnFailure: w.NotifyOnFailure,
		Source: "config", Active: true, IncludeEntity: true,
	}
	switch {
	case w.SecretEnv != "":
		h.Secrets = []string{os.Getenv(w.SecretEnv)}
	case w.Secret != "":
		h.Secrets = []string{w.Secret}
	default:
		h.Secrets = w.Secrets
	}
	if w.BasicAuth != nil {
		h.BasicAuthUser, h.BasicAuthPassword = w.BasicAuth.Username, w.BasicAuth.Password
	}
	if w.TimeoutMS != nil {
		h.Timeout = time.Duration(*w.TimeoutMS) * time.Millisecond
	}
	if w.MaxAttempts != nil {
		h.MaxAttempts = *w.MaxAttempts
	}
	if w.BatchSize != nil {
		h.BatchSize = *w.BatchSize
	}
	if w.BatchWaitMS != nil {
		h.BatchWait = time.Duration(*w.BatchWaitMS) * time.Millisecond
	}
	if w.RateLimit != nil {
		h.RateLimit = *w.RateLimit
	}
	if w.MaxInFlight != nil {
		h.MaxInFlight = *w.MaxInFlight
	}
	h.DisableAfter, _ = deliver.ParseDisableAfter(w.DisableAfter) // checked by Validate
	deliver.ApplyDefaults(&h)
	// After ApplyDefaults, which switches both on.
	if w.Active != nil {
		h.Active = *w.Active
	}
	if w.IncludeEntity != nil {
		h.IncludeEntity = *w.IncludeEntity
	}
	if w.Signature != nil {
		h.Signature = *w.Signature
	}
	return h
}

// The kinds of store.
const (
	storeBolt     = "bbolt"
	storePostgres = "postgres"
)

// validate checks [store]'s kind and what that kind needs.
func (s *StoreConfig) validate() error {
	switch s.Kind {
	case storeBolt:
		if s.DSN != "" {
			return fmt.Errorf(`store.dsn: set, but store.kind is "bbolt" (write kind = "postgres" to keep the queue in PostgreSQL)`)
		}
	case storePostgres:
		if s.DSN == "" {
			return fmt.Errorf(`store.dsn: required when store.kind is "postgres" (or set $WALHOOK_STORE_DSN)`)
		}
		if !regexp.MustCompile(`^[a-z_][a-z0-9_]*$`).MatchString(s.Schema) {
			return fmt.Errorf("store.schema: must be a lower-case identifier (got %q)", s.Schema)
		}
	default:
		return fmt.Errorf(`store.kind: must be "bbolt" or "postgres" (got %q)`, s.Kind)
	}
	return nil
}
