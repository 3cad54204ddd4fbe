package deliver

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"walhook/cdc"
)

// Webhook is one delivery target, converted from config.toml or created
// through the admin API.
type Webhook struct {
	Name              string            `json:"name"`
	URL               string            `json:"url"`
	Active            bool              `json:"active"`
	Events            []string          `json:"events"`       // entity names or schema.table; "*" = all
	Actions           []string          `json:"actions"`      // create, modify, delete, truncate
	Method            string            `json:"method"`       // POST or GET
	ContentType       string            `json:"content_type"` // json or form
	IncludeEntity     bool              `json:"include_entity"`
	Template          string            `json:"template,omitempty"`
	When              string            `json:"when,omitempty"`            // CEL condition over the event (see Filter); "" = every event
	Columns           []string          `json:"columns,omitempty"`         // only these columns in data, old and changed
	ExcludeColumns    []string          `json:"exclude_columns,omitempty"` // or all but these
	HeaderPrefix      string            `json:"header_prefix"`
	Secrets           []string          `json:"secrets,omitempty"` // newest first; never shown after creation
	Signature         string            `json:"signature"`         // standard, sha256, sha256-base64, sha1
	SignatureHeader   string            `json:"signature_header"`
	Headers           map[string]string `json:"headers,omitempty"`
	BasicAuthUser     string            `json:"basic_auth_username,omitempty"`
	BasicAuthPassword string            `json:"basic_auth_password,omitempty"`
	Timeout           time.Duration     `json:"timeout"`
	MaxAttempts       int               `json:"max_attempts"` // 1..8
	RetryMode         string            `json:"retry_mode"`   // production or test
	NotifyEmail       string            `json:"notify_email,omitempty"`
	NotifyOnFailure   bool              `json:"notify_on_failure"`
	Source            string            `json:"source"` // config or api
	// BatchSize is how many events one request may carry (issue 18); 0
	// and 1 send each event alone.
	BatchSize int `json:"batch_size,omitempty"`
	// BatchWait is how long a partial batch may wait for more events,
	// counted from its oldest event's commit; 0 sends what is ready.
	BatchWait time.Duration `json:"batch_wait,omitempty"`

	// RateLimit is the most requests per second the webhook sends, a
	// token bucket its workers share (burst 1: never more than RateLimit in any second); 0: no
	// limit. Deliveries that wait for it wait in the window or on disk.
	RateLimit float64 `json:"rate_limit,omitempty"`
	// MaxInFlight is the most requests of the webhook under way at once,
	// 1..MaxInFlight; 0: one per worker.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// DisableAfter switches the webhook off, as a 410 does, once every
	// attempt has failed for this long; 0: never.
	DisableAfter time.Duration `json:"disable_after,omitempty"`
}

// Bounds of the endpoint control keys.
const (
	MaxRateLimit    = 100000             // rate_limit, requests per second
	MaxInFlight     = defaultConcurrency // max_in_flight: a webhook's workers
	minDisableAfter = time.Second
)

// ParseDisableAfter reads disable_after as config.toml and the API give
// it: a duration such as "72h"; "" and "0" mean never.
func ParseDisableAfter(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf(`disable_after: must be a duration such as "72h" or "30m" (got %q)`, s)
	}
	return d, nil
}

// FormatDuration writes d as ParseDisableAfter reads it, without the
// zero minutes and seconds of time.Duration.String: "72h", "1h30m".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// inFlightLimit is how many requests the webhook may have under way with
// workers workers.
func (w *Webhook) inFlightLimit(workers int) int {
	if w.MaxInFlight > 0 {
		return min(w.MaxInFlight, workers)
	}
	return workers
}

// MaxBatchSize is the largest batch_size.
const MaxBatchSize = 1000

// maxBatchWait is the longest batch_wait_ms.
const maxBatchWait = time.Minute

// batchSize is the number of events a request may carry, at least 1.
func (w *Webhook) batchSize() int { return max(w.BatchSize, 1) }

// Sources of a Webhook.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
)

// Signature schemes.
const (
	SignatureStandard     = "standard"
	SignatureSHA256       = "sha256"
	SignatureSHA256Base64 = "sha256-base64"
	SignatureSHA1         = "sha1"
)

// Retry modes.
const (
	RetryProduction = "production"
	RetryTest       = "test"
)

// ApplyDefaults fills the zero-valued fields of w and sets Active and IncludeEntity; call it before decoding into w.
func ApplyDefaults(w *Webhook) {
	if w.Method == "" {
		w.Method = "POST"
	}
	if w.ContentType == "" {
		w.ContentType = "json"
	}
	if w.HeaderPrefix == "" {
		w.HeaderPrefix = "X-Walhook-"
	}
	if w.Signature == "" && len(w.Secrets) > 0 {
		w.Signature = SignatureStandard
	}
	if w.SignatureHeader == "" {
		w.SignatureHeader = "X-Walhook-Signature"
	}
	if w.Timeout == 0 {
		w.Timeout = 10 * time.Second
	}
	if w.MaxAttempts == 0 {
		w.MaxAttempts = 5
	}
	if w.RetryMode == "" {
		w.RetryMode = RetryProduction
	}
	if len(w.Actions) == 0 {
		w.Actions = []string{cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete}
	}
	w.Active = true
	w.IncludeEntity = true
}

// MaxNameLen is the longest webhook name: <name>.log and its rotated
// copies must fit a file name (255 bytes on most file systems).
const MaxNameLen = 100

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	tokenRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Validate checks every field and returns an error naming the first bad one,
// e.g. `max_attempts: must be 1..8 (got 12)`.
func (w *Webhook) Validate() error {
	if len(w.Name) > MaxNameLen {
		return fmt.Errorf("name: at most %d bytes, it names the webhook's .log file (got %d)", MaxNameLen, len(w.Name))
	}
	if !nameRE.MatchString(w.Name) {
		return fmt.Errorf("name: must match [A-Za-z0-9_.-]+ (got %q)", w.Name)
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url: must be an absolute http or https URL (got %q)", RedactURL(w.URL))
	}
	if len(w.Events) == 0 {
		return errors.New(`events: must name at least one entity or "*"`)
	}
	for _, e := range w.Events {
		if strings.TrimSpace(e) == "" {
			return errors.New("events: empty entry")
		}
	}
	if len(w.Actions) == 0 {
		return errors.New("actions: must list at least one of create, modify, delete, truncate")
	}
	for _, a := range w.Actions {
		switch a {
		case cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate:
		default:
			return fmt.Errorf("actions: unknown action %q (want create, modify, delete or truncate)", a)
		}
	}
	if w.Method != "POST" && w.Method != "GET" {
		return fmt.Errorf("method: must be POST or GET (got %q)", w.Method)
	}
	if w.ContentType != "json" && w.ContentType != "form" {
		return fmt.Errorf("content_type: must be json or form (got %q)", w.ContentType)
	}
	if w.BatchSize < 0 || w.BatchSize > MaxBatchSize {
		return fmt.Errorf("batch_size: must be 1..%d (got %d)", MaxBatchSize, w.BatchSize)
	}
	if w.BatchWait < 0 || w.BatchWait > maxBatchWait {
		return fmt.Errorf("batch_wait_ms: must be 0..%d (got %d)", maxBatchWait.Milliseconds(), w.BatchWait.Milliseconds())
	}
	if w.BatchSize > 1 {
		if w.Method == "GET" {
			return fmt.Errorf(`batch_size: a GET request has no body to carry a batch: method = "GET" needs batch_size = 1 (got %d)`, w.BatchSize)
		}
		if w.ContentType == "form" {
			return fmt.Errorf(`batch_size: a form body holds one event: content_type = "form" needs batch_size = 1 (got %d)`, w.BatchSize)
		}
	}
	if w.RateLimit < 0 || w.RateLimit > MaxRateLimit || math.IsNaN(w.RateLimit) {
		return fmt.Errorf("rate_limit: must be 0 (no limit) or up to %d requests per second (got %v)", MaxRateLimit, w.RateLimit)
	}
	if w.MaxInFlight < 0 || w.MaxInFlight > MaxInFlight {
		return fmt.Errorf("max_in_flight: must be 1..%d (got %d)", MaxInFlight, w.MaxInFlight)
	}
	if w.DisableAfter != 0 && w.DisableAfter < minDisableAfter {
		return fmt.Errorf(`disable_after: must be at least 1s, or "" for never (got %s)`, w.DisableAfter)
	}
	if w.Template != "" {
		if w.Method == "GET" {
			return errors.New("template: a GET request has no body")
		}
		t, err := parseTemplate(w.Template, 0)
		if err != nil {
			return fmt.Errorf("template: %w", err)
		}
		ev := sampleEvent()
		if w.BatchSize > 1 {
			if _, err := renderBatchTemplate(t, w.Name, sampleBatchID, []*cdc.Event{&ev, &ev}); err != nil {
				return fmt.Errorf("template: rendering a sample batch (batch_size > 1: the template renders .Events): %w", err)
			}
		} else if _, err := renderTemplate(t, w.Name, &ev); err != nil {
			return fmt.Errorf("template: rendering a sample event: %w", err)
		}
	}
	if w.When != "" {
		if _, err := CompileWhen(w.When); err != nil {
			return fmt.Errorf("when: %w", err)
		}
	}
	if err := validColumns(w.Columns, w.ExcludeColumns); err != nil {
		return err
	}
	if !tokenRE.MatchString(w.HeaderPrefix) {
		return fmt.Errorf("header_prefix: must be a valid header name prefix (got %q)", w.HeaderPrefix)
	}
	for i, s := range w.Secrets {
		if s == "" {
			return fmt.Errorf("secrets: secret %d is empty", i+1)
		}
		if rest, ok := strings.CutPrefix(s, "whsec_"); ok {
			if _, err := base64.StdEncoding.DecodeString(rest); err != nil {
				return fmt.Errorf("secrets: secret %d starts with whsec_ but the rest is not base64", i+1)
			}
		}
	}
	switch w.Signature {
	case "":
	case SignatureStandard, SignatureSHA256, SignatureSHA256Base64, SignatureSHA1:
		if len(w.Secrets) == 0 {
			return fmt.Errorf("secrets: required with signature %q", w.Signature)
		}
	default:
		return fmt.Errorf("signature: must be standard, sha256, sha256-base64 or sha1 (got %q)", w.Signature)
	}
	if w.effectiveSignature() != "" && w.effectiveSignature() != SignatureStandard && !tokenRE.MatchString(w.SignatureHeader) {
		return fmt.Errorf("signature_header: must be a valid header name (got %q)", w.SignatureHeader)
	}
	for k, v := range w.Headers {
		if !tokenRE.MatchString(k) {
			return fmt.Errorf("headers: invalid header name %q", k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("headers: value of %q contains a control character", k)
		}
	}
	if strings.Contains(w.BasicAuthUser, ":") {
		return errors.New("basic_auth.username: must not contain ':'")
	}
	if w.BasicAuthPassword != "" && w.BasicAuthUser == "" {
		return errors.New("basic_auth.username: required with a password")
	}
	if w.Timeout < time.Millisecond || w.Timeout > 5*time.Minute {
		return fmt.Errorf("timeout_ms: must be 1..300000 (got %d)", w.Timeout.Milliseconds())
	}
	if w.MaxAttempts < 1 || w.MaxAttempts > 8 {
		return fmt.Errorf("max_attempts: must be 1..8 (got %d)", w.MaxAttempts)
	}
	if w.RetryMode != RetryProduction && w.RetryMode != RetryTest {
		return fmt.Errorf("retry_mode: must be production or test (got %q)", w.RetryMode)
	}
	if w.NotifyEmail != "" {
		if hasControl(w.NotifyEmail) {
			return fmt.Errorf("notify_email: contains a control character (got %q)", w.NotifyEmail)
		}
		if _, err := mail.ParseAddress(w.NotifyEmail); err != nil {
			return fmt.Errorf("notify_email: not an e-mail address (got %q)", w.NotifyEmail)
		}
	}
	if w.NotifyOnFailure && w.NotifyEmail == "" {
		return errors.New("notify_email: required with notify_on_failure")
	}
	switch w.Source {
	case "", SourceConfig, SourceAPI:
	default:
		return fmt.Errorf("source: must be config or api (got %q)", w.Source)
	}
	return nil
}

// hasControl reports whether s holds a control character (below 0x20, or
// DEL): mail.ParseAddress accepts CR LF inside a comment, and a header
// written from such a value is two headers.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// effectiveSignature is the scheme used: a secret without a scheme signs
// the Standard Webhooks way.
func (w *Webhook) effectiveSignature() string {
	if len(w.Secrets) == 0 {
		return ""
	}
	if w.Signature == "" {
		return SignatureStandard
	}
	return w.Signature
}

// clone returns a deep copy of w.
func (w Webhook) clone() Webhook {
	w.Events = slices.Clone(w.Events)
	w.Actions = slices.Clone(w.Actions)
	w.Secrets = slices.Clone(w.Secrets)
	w.Headers = maps.Clone(w.Headers)
	w.Columns = slices.Clone(w.Columns)
	w.ExcludeColumns = slices.Clone(w.ExcludeColumns)
	return w
}

// redacted returns a copy of w without secrets or the basic auth password.
func (w Webhook) redacted() Webhook {
	w = w.clone()
	w.Secrets = nil
	if w.BasicAuthPassword != "" {
		w.BasicAuthPassword = ""
	}
	return w
}
