package admin

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"walhook/deliver"
)

// redacted stands for a value the API never shows. Sent back unchanged in
// a PATCH (as the edit form does) it keeps the stored value.
const redacted = "[redacted]"

// webhookJSON is a webhook as the API shows it: the keys of config.toml's
// [[webhook]], never a secret, with its source and stats.
type webhookJSON struct {
	Name            string            `json:"name"`
	URL             string            `json:"url"` // a password in it is redacted
	Active          bool              `json:"active"`
	Events          []string          `json:"events"`
	Actions         []string          `json:"actions"`
	Method          string            `json:"method"`
	ContentType     string            `json:"content_type"`
	IncludeEntity   bool              `json:"include_entity"`
	Template        string            `json:"template,omitempty"`
	When            string            `json:"when,omitempty"`
	Columns         []string          `json:"columns,omitempty"`
	ExcludeColumns  []string          `json:"exclude_columns,omitempty"`
	HeaderPrefix    string            `json:"header_prefix"`
	Signature       string            `json:"signature"` // "" when unsigned; set means a secret is set
	SignatureHeader string            `json:"signature_header"`
	Secret          string            `json:"secret,omitempty"`  // only in the answer that generated it
	Headers         map[string]string `json:"headers,omitempty"` // values redacted
	BasicAuth       *basicAuthJSON    `json:"basic_auth,omitempty"`
	TimeoutMS       int64             `json:"timeout_ms"`
	MaxAttempts     int               `json:"max_attempts"`
	RetryMode       string            `json:"retry_mode"`
	NotifyEmail     string            `json:"notify_email,omitempty"`
	NotifyOnFailure bool              `json:"notify_on_failure"`
	Source          string            `json:"source"`
	Stats           statsJSON         `json:"stats"`

	BatchSize   int   `json:"batch_size"`
	BatchWaitMS int64 `json:"batch_wait_ms"`

	RateLimit    float64 `json:"rate_limit"`    // requests per second; 0: no limit
	MaxInFlight  int     `json:"max_in_flight"` // concurrent requests; the default is deliver.MaxInFlight
	DisableAfter string  `json:"disable_after"` // e.g. "72h"; "": never
}

// statsJSON are a webhook's counters; last_attempt_at is null before the
// first attempt.
type statsJSON struct {
	LatestStatus    int        `json:"latest_status"` // 0: no attempt yet, or no response
	SuccessfulCalls int64      `json:"successful_calls"`
	TotalCalls      int64      `json:"total_calls"`
	LastAttemptAt   *time.Time `json:"last_attempt_at"`
	Queued          int        `json:"queued"`
	Failed          int        `json:"failed"`
	// FilterErrors counts the events the webhook's when failed on since
	// walhook started (not sent); LastFilterError is the latest.
	FilterErrors    int64                `json:"filter_errors"`
	LastFilterError *deliver.FilterError `json:"last_filter_error,omitempty"`
	// SwitchedOff says why the webhook switched itself off (a 410, or
	// disable_after), until it is switched on again.
	SwitchedOff string `json:"switched_off,omitempty"`
	// FailingSince is the first failed attempt since the latest 2xx, while
	// the latest attempts fail: disable_after counts from it.
	FailingSince *time.Time `json:"failing_since,omitempty"`
}

type basicAuthJSON struct {
	Username string `json:"username"`
}

// showWebhook converts a webhook for the API, leaving out every secret.
func showWebhook(w deliver.Webhook, st deliver.Stats) webhookJSON {
	out := webhookJSON{
		Name: w.Name, URL: deliver.RedactURL(w.URL), Active: w.Active, Events: w.Events, Actions: w.Actions,
		Method: w.Method, ContentType: w.ContentType, IncludeEntity: w.IncludeEntity,
		Template: w.Template, When: w.When, Columns: w.Columns, ExcludeColumns: w.ExcludeColumns,
		HeaderPrefix: w.HeaderPrefix, Signature: w.Signature,
		SignatureHeader: w.SignatureHeader, TimeoutMS: w.Timeout.Milliseconds(),
		MaxAttempts: w.MaxAttempts, RetryMode: w.RetryMode, NotifyEmail: w.NotifyEmail,
		NotifyOnFailure: w.NotifyOnFailure, Source: w.Source,
		BatchSize: max(w.BatchSize, 1), BatchWaitMS: w.BatchWait.Milliseconds(),
		RateLimit: w.RateLimit, MaxInFlight: cmp.Or(w.MaxInFlight, deliver.MaxInFlight), DisableAfter: deliver.FormatDuration(w.DisableAfter),
		Stats: statsJSON{
			LatestStatus: st.LatestStatus, SuccessfulCalls: st.SuccessfulCalls, TotalCalls: st.TotalCalls,
			Queued: st.Queued, Failed: st.Failed,
			FilterErrors: st.FilterErrors, LastFilterError: st.LastFilterError,
			SwitchedOff: st.SwitchedOff,
		},
	}
	if !st.LastAttemptAt.IsZero() {
		out.Stats.LastAttemptAt = &st.LastAttemptAt
	}
	if !st.FailingSince.IsZero() {
		out.Stats.FailingSince = &st.FailingSince
	}
	if len(w.Headers) > 0 {
		out.Headers = make(map[string]string, len(w.Headers))
		for k := range w.Headers {
			out.Headers[k] = redacted
		}
	}
	if w.BasicAuthUser != "" {
		out.BasicAuth = &basicAuthJSON{Username: w.BasicAuthUser}
	}
	return out
}

// webhookInput is the body of POST and PATCH /api/webhooks: the keys of
// [[webhook]]; a missing key keeps its current (or default) value.
type webhookInput struct {
	Name            *string            `json:"name"`
	URL             *string            `json:"url"`
	Active          *bool              `json:"active"`
	Events          *[]string          `json:"events"`
	Actions         *[]string          `json:"actions"`
	Method          *string            `json:"method"`
	ContentType     *string            `json:"content_type"`
	IncludeEntity   *bool              `json:"include_entity"`
	Template        *string            `json:"template"`
	When            *string            `json:"when"`
	Columns         *[]string          `json:"columns"`
	ExcludeColumns  *[]string          `json:"exclude_columns"`
	HeaderPrefix    *string            `json:"header_prefix"`
	Secret          *string            `json:"secret"`
	Secrets         *[]string          `json:"secrets"`
	Signature       *string            `json:"signature"`
	SignatureHeader *string            `json:"signature_header"`
	Headers         *map[string]string `json:"headers"`
	BasicAuth       *basicAuthInput    `json:"basic_auth"`
	TimeoutMS       *int64             `json:"timeout_ms"`
	MaxAttempts     *int               `json:"max_attempts"`
	RetryMode       *string            `json:"retry_mode"`
	NotifyEmail     *string            `json:"notify_email"`
	NotifyOnFailure *bool              `json:"notify_on_failure"`

	BatchSize   *int   `json:"batch_size"`
	BatchWaitMS *int64 `json:"batch_wait_ms"`

	RateLimit    *float64 `json:"rate_limit"`
	MaxInFlight  *int     `json:"max_in_flight"`
	DisableAfter *string  `json:"disable_after"`
}

type basicAuthInput struct {
	Username string  `json:"username"`
	Password *string `json:"password"` // missing: keep the current one
}

// invalidError is a webhook definition the user must fix (422).
type invalidError struct{ err error }

func (e invalidError) Error() string { return e.err.Error() }
func (e invalidError) Unwrap() error { return e.err }

func invalid(format string, a ...any) error { return invalidError{fmt.Errorf(format, a...)} }

// apply sets the given keys on w. It returns the secret it generated, when
// a signature is asked for without one.
func (in *webhookInput) apply(w *deliver.Webhook) (generated string, err error) {
	if in.Name != nil {
		if w.Name != "" && *in.Name != w.Name {
			return "", invalid("name: cannot be changed (got %q)", *in.Name)
		}
		w.Name = *in.Name
	}
	if in.URL != nil && (w.URL == "" || *in.URL != deliver.RedactURL(w.URL)) {
		w.URL = *in.URL
	}
	set(&w.Active, in.Active)
	set(&w.Events, in.Events)
	set(&w.Actions, in.Actions)
	if in.Method != nil {
		w.Method = strings.ToUpper(*in.Method)
	}
	set(&w.ContentType, in.ContentType)
	set(&w.IncludeEntity, in.IncludeEntity)
	set(&w.Template, in.Template)
	set(&w.When, in.When)
	set(&w.Columns, in.Columns)
	set(&w.ExcludeColumns, in.ExcludeColumns)
	set(&w.HeaderPrefix, in.HeaderPrefix)
	set(&w.SignatureHeader, in.SignatureHeader)
	set(&w.RetryMode, in.RetryMode)
	set(&w.NotifyEmail, in.NotifyEmail)
	set(&w.NotifyOnFailure, in.NotifyOnFailure)
	if in.MaxAttempts != nil {
		w.MaxAttempts = *in.MaxAttempts
	}
	if in.BatchSize != nil {
		if *in.BatchSize < 1 {
			return "", invalid("batch_size: must be 1..%d (got %d)", deliver.MaxBatchSize, *in.BatchSize)
		}
		w.BatchSize = *in.BatchSize
	}
	if in.BatchWaitMS != nil {
		w.BatchWait = time.Duration(*in.BatchWaitMS) * time.Millisecond
	}
	if in.TimeoutMS != nil {
		w.Timeout = time.Duration(*in.TimeoutMS) * time.Millisecond
	}
	set(&w.RateLimit, in.RateLimit)
	if in.MaxInFlight != nil {
		if *in.MaxInFlight < 1 {
			return "", invalid("max_in_flight: must be 1..%d (got %d)", deliver.MaxInFlight, *in.MaxInFlight)
		}
		w.MaxInFlight = *in.MaxInFlight
	}
	if in.DisableAfter != nil {
		d, err := deliver.ParseDisableAfter(*in.DisableAfter)
		if err != nil {
			return "", invalidError{err}
		}
		w.DisableAfter = d
	}
	if in.Headers != nil {
		headers := make(map[string]string, len(*in.Headers))
		for k, v := range *in.Headers {
			if v == redacted {
				old, ok := w.Headers[k]
				if !ok {
					return "", invalid("headers: %q has no stored value to keep; give its value", k)
				}
				v = old
			}
			headers[k] = v
		}
		w.Headers = headers
	}
	if ba := in.BasicAuth; ba != nil {
		switch {
		case ba.Username == "":
			w.BasicAuthUser, w.BasicAuthPassword = "", ""
		case ba.Password != nil:
			w.BasicAuthUser, w.BasicAuthPassword = ba.Username, *ba.Password
		default:
			w.BasicAuthUser = ba.Username
		}
	}
	if err := in.applySecret(w); err != nil {
		return "", err
	}
	// A secret without a scheme signs the Standard Webhooks way; say so,
	// so that "signature" tells whether requests are signed.
	if w.Signature == "" && len(w.Secrets) > 0 {
		w.Signature = deliver.SignatureStandard
	}
	if w.Signature != "" && len(w.Secrets) == 0 {
		generated = newSecret()
		w.Secrets = []string{generated}
	}
	return generated, nil
}

func (in *webhookInput) applySecret(w *deliver.Webhook) error {
	hasSecret := in.Secret != nil && *in.Secret != "" // "" is the form's "keep it"
	if hasSecret && in.Secrets != nil {
		return invalid("secret: give secret or secrets, not both")
	}
	switch {
	case hasSecret:
		w.Secrets = []string{*in.Secret}
	case in.Secrets != nil:
		w.Secrets = *in.Secrets
	}
	if in.Signature != nil {
		w.Signature = *in.Signature
		if w.Signature == "" { // unsigned from now on
			if hasSecret || (in.Secrets != nil && len(*in.Secrets) > 0) {
				return invalid("signature: empty means unsigned, but a secret was given")
			}
			w.Secrets = nil
		}
	}
	return nil
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// newSecret returns a Standard Webhooks secret: whsec_ and 32 random bytes
// in base64.
func newSecret() string {
	key := make([]byte, 32)
	rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// validate runs the webhook's own checks and the server's extra ones.
func (s *Server) validate(w deliver.Webhook) error {
	if err := w.Validate(); err != nil {
		if strings.HasPrefix(err.Error(), "when: ") {
			// As in the config file: the expression is the webhook's.
			err = fmt.Errorf("webhook %q: %w", w.Name, err)
		}
		return invalidError{err}
	}
	if s.opts.Validate != nil {
		if err := s.opts.Validate(w); err != nil {
			return invalidError{err}
		}
	}
	return nil
}
