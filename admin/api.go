package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

// maxBody is the largest request body the API reads.
const maxBody = 1 << 20

func (s *Server) routeAPI() {
	s.handleFunc("GET /api/webhooks", s.listWebhooks)
	s.handleFunc("POST /api/webhooks", s.createWebhook)
	s.handleFunc("GET /api/webhooks/{name}", s.getWebhook)
	s.handleFunc("PATCH /api/webhooks/{name}", s.patchWebhook)
	s.handleFunc("DELETE /api/webhooks/{name}", s.deleteWebhook)
	s.handleFunc("POST /api/webhooks/{name}/activate", s.setActive(true))
	s.handleFunc("POST /api/webhooks/{name}/deactivate", s.setActive(false))
	s.handleFunc("POST /api/webhooks/{name}/test", s.testWebhook)
	s.handleFunc("POST /api/webhooks/{name}/when/test", s.tryWhen)
	s.handleFunc("GET /api/webhooks/{name}/deliveries", s.listDeliveries)
	s.handleFunc("POST /api/webhooks/{name}/recover", s.recoverDeliveries)
	s.handleFunc("GET /api/webhooks/{name}/log", s.webhookLog)
	s.handleFunc("POST /api/webhooks/{name}/backfill", s.startBackfill)
	s.handleFunc("GET /api/webhooks/{name}/backfill", s.getBackfill)
	s.handleFunc("POST /api/deliveries/{id}/redeliver", s.redeliver)
	s.handleFunc("GET /api/entities", s.listEntities)
	s.routeOverview()
	s.handleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: %s %s", r.Method, r.URL.Path)
	})
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	hooks := s.opts.Queue.Webhooks()
	out := make([]webhookJSON, len(hooks))
	for i, h := range hooks {
		out[i] = showWebhook(h, s.opts.Queue.Stats(h.Name))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	h, ok := s.opts.Queue.Webhook(name)
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", name)
		return
	}
	writeJSON(w, http.StatusOK, showWebhook(h, s.opts.Queue.Stats(name)))
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var in webhookInput
	if !decodeBody(w, r, &in) {
		return
	}
	var hook deliver.Webhook
	deliver.ApplyDefaults(&hook)
	generated, err := in.apply(&hook)
	if err == nil {
		hook.Source = deliver.SourceAPI
		err = s.validate(hook)
	}
	if err == nil {
		hook, err = s.opts.Queue.CreateWebhook(hook)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("webhook created through the API", "webhook", hook.Name, "url", deliver.RedactURL(hook.URL))
	out := showWebhook(hook, s.opts.Queue.Stats(hook.Name))
	out.Secret = generated
	w.Header().Set("Location", "/api/webhooks/"+hook.Name)
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) patchWebhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var in webhookInput
	if !decodeBody(w, r, &in) {
		return
	}
	var generated string
	hook, err := s.opts.Queue.UpdateWebhook(name, func(hook *deliver.Webhook) error {
		var err error
		if generated, err = in.apply(hook); err != nil {
			return err
		}
		return s.validate(*hook)
	})
	if err != nil {
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("webhook changed through the API", "webhook", name)
	out := showWebhook(hook, s.opts.Queue.Stats(name))
	out.Secret = generated
	writeJSON(w, http.StatusOK, out)
}

// setActive switches a webhook on or off, config-defined ones included:
// the switch an operator reaches for when a receiver misbehaves, and the
// way back for a config webhook a 410 Gone switched off.
func (s *Server) setActive(active bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		hook, err := s.opts.Queue.SetActive(name, active)
		if err != nil {
			writeErr(w, err)
			return
		}
		s.opts.Logger.Info("webhook switched through the API", "webhook", name, "active", active)
		writeJSON(w, http.StatusOK, showWebhook(hook, s.opts.Queue.Stats(name)))
	}
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.opts.Queue.DeleteWebhook(name); err != nil {
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("webhook deleted through the API", "webhook", name)
	w.WriteHeader(http.StatusNoContent)
}

// testResult is the answer to a test ping.
type testResult struct {
	OK bool `json:"ok"`
	attemptJSON
}

func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) {
	// The ping may take the webhook's timeout, longer than the server's
	// write timeout allows a route.
	if h, ok := s.opts.Queue.Webhook(r.PathValue("name")); ok {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.Timeout + 10*time.Second))
	}
	att, err := s.opts.Queue.Test(r.Context(), r.PathValue("name"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, testResult{OK: att.Status >= 200 && att.Status < 300, attemptJSON: showAttempt(att)})
}

// deliveryJSON is a delivery as the API shows it.
type deliveryJSON struct {
	ID            string        `json:"id"`
	Webhook       string        `json:"webhook"`
	EventID       string        `json:"event_id"`
	Event         string        `json:"event"`
	EntityID      string        `json:"entity_id"`
	Status        string        `json:"status"`
	CreatedAt     time.Time     `json:"created_at"`
	NextAttemptAt *time.Time    `json:"next_attempt_at,omitempty"`
	Payload       string        `json:"payload"`
	Attempts      []attemptJSON `json:"attempts"`
}

// attemptJSON is one attempt as the API shows it, durations in ms.
type attemptJSON struct {
	N               int         `json:"n"`
	At              time.Time   `json:"at"`
	RequestHeaders  http.Header `json:"request_headers"`
	RequestBody     string      `json:"request_body"`
	Status          int         `json:"status"`
	ResponseHeaders http.Header `json:"response_headers,omitempty"`
	ResponseBody    string      `json:"response_body,omitempty"`
	DurationMS      float64     `json:"duration_ms"`
	Error           string      `json:"error,omitempty"`
}

func showAttempt(a deliver.Attempt) attemptJSON {
	return attemptJSON{
		N: a.N, At: a.At, RequestHeaders: a.RequestHeaders, RequestBody: a.RequestBody,
		Status: a.Status, ResponseHeaders: a.ResponseHeaders, ResponseBody: a.ResponseBody,
		DurationMS: float64(a.Duration.Microseconds()) / 1000, Error: a.Error,
	}
}

func showDelivery(d deliver.Delivery) deliveryJSON {
	out := deliveryJSON{
		ID: d.ID, Webhook: d.Webhook, EventID: d.EventID, Event: d.Event, EntityID: d.EntityID,
		Status: d.Status, CreatedAt: d.CreatedAt, Payload: string(d.Payload),
		Attempts: make([]attemptJSON, len(d.Attempts)),
	}
	if !d.NextAttemptAt.IsZero() {
		out.NextAttemptAt = &d.NextAttemptAt
	}
	for i, a := range d.Attempts {
		out.Attempts[i] = showAttempt(a)
	}
	return out
}

// maxDeliveries caps ?limit=.
const maxDeliveries = 1000

// deliveryQuery reads a search of the history: ?limit= and ?status= as
// before, and ?action=, ?entity_id=, ?event_id=, ?since= and ?until=
// (RFC 3339, of when the delivery was queued) and ?before= (a page's
// cursor: a delivery id or its hexadecimal sequence).
func deliveryQuery(r *http.Request) (deliver.DeliveryQuery, error) {
	get := r.URL.Query().Get
	q := deliver.DeliveryQuery{Limit: 100, Status: get("status"), Action: get("action"), EntityID: get("entity_id"), EventID: get("event_id")}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDeliveries {
			return q, badRequest("limit: must be 1..%d (got %q)", maxDeliveries, v)
		}
		q.Limit = n
	}
	switch q.Status {
	case "", deliver.StatusPending, deliver.StatusSuccess, deliver.StatusFailed:
	default:
		return q, badRequest("status: must be pending, success or failed (got %q)", q.Status)
	}
	switch q.Action {
	case "", cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate:
	default:
		return q, badRequest("action: must be create, modify, delete or truncate (got %q)", q.Action)
	}
	for _, t := range []struct {
		key string
		to  *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if v := get(t.key); v != "" {
			at, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return q, badRequest("%s: must be an RFC 3339 time such as 2026-12-06T10:00:00Z (got %q)", t.key, v)
			}
			*t.to = at
		}
	}
	if v := get("before"); v != "" {
		seq, err := deliver.ParseCursor(r.PathValue("name"), v)
		if err != nil {
			return q, badRequest("%v", err)
		}
		q.Before = seq
	}
	return q, nil
}

// deliveries searches the webhook's history as the request asks.
func (s *Server) deliveries(r *http.Request, payloads bool) (deliver.DeliveryPage, error) {
	q, err := deliveryQuery(r)
	if err != nil {
		return deliver.DeliveryPage{}, err
	}
	return s.opts.Queue.FindDeliveries(r.PathValue("name"), q, payloads)
}

// listDeliveries answers the page's deliveries as a JSON array, as it
// always has; the next page's cursor is in the X-Walhook-Next-Before
// header and a Link rel="next", absent on the last page.
func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	page, err := s.deliveries(r, true)
	if err != nil {
		writeErr(w, err)
		return
	}
	if page.Next != "" {
		next := r.URL.Query()
		next.Set("before", page.Next)
		w.Header().Set("X-Walhook-Next-Before", page.Next)
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	ds := page.Deliveries
	out := make([]deliveryJSON, len(ds))
	for i, d := range ds {
		out[i] = showDelivery(d)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) redeliver(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.opts.Queue.Redeliver(id); err != nil {
		if !errors.Is(err, deliver.ErrNotFound) {
			// The one refusal the queue has for an existing delivery:
			// it is still pending.
			writeError(w, http.StatusConflict, "%v", err)
			return
		}
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("delivery queued again through the API", "delivery", id)
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "queued", "delivery": id})
}

func (s *Server) recoverDeliveries(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	raw := r.URL.Query().Get("since")
	if raw == "" {
		writeError(w, http.StatusBadRequest, "since: missing (an RFC 3339 time, e.g. %s)", time.Now().UTC().Add(-24*time.Hour).Format(time.RFC3339))
		return
	}
	since, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, "since: not an RFC 3339 time (got %q)", raw)
		return
	}
	n, err := s.opts.Queue.Recover(name, since)
	if err != nil {
		writeErr(w, err)
		return
	}
	s.opts.Logger.Info("failed deliveries queued again through the API", "webhook", name, "since", since, "count", n)
	writeJSON(w, http.StatusAccepted, map[string]any{"status": "queued", "requeued": n})
}

func (s *Server) webhookLog(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.opts.Queue.Webhook(name); !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", name)
		return
	}
	s.opts.Queue.FlushLog(name)
	path := s.opts.Queue.LogPath(name)
	if path == "" {
		writeError(w, http.StatusNotFound, "no log files: [log] dir is not set")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return // no attempt yet: an empty log
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read log: %v", err)
		return
	}
	defer f.Close()
	io.Copy(w, f)
}

func (s *Server) listEntities(w http.ResponseWriter, r *http.Request) {
	if s.opts.Entities == nil {
		writeJSON(w, http.StatusOK, []Entity{})
		return
	}
	list, err := s.opts.Entities(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "list tables: %v", err)
		return
	}
	if list == nil {
		list = []Entity{}
	}
	writeJSON(w, http.StatusOK, list)
}

// decodeBody reads a JSON object of at most maxBody bytes into v, refusing
// unknown fields; on failure it answers and returns false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxBody)
		} else {
			writeError(w, http.StatusBadRequest, "read body: %v", err)
		}
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "%s", describeJSONError(err))
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed JSON: more than one value in the body")
		return false
	}
	return true
}

func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "malformed JSON: empty body (send a JSON object)"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: unexpected end of the body"
	case errors.As(err, &syntax):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("%s: must be a JSON %s (got %s)", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
		}
		return fmt.Sprintf("body: must be a JSON object (got %s)", typ.Value)
	default:
		// `json: unknown field "colour"` and the like.
		return strings.TrimPrefix(err.Error(), "json: ")
	}
}

// jsonKind names a Go kind the way a JSON user knows it.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	case "map", "struct":
		return "object"
	case "ptr":
		return "value"
	default:
		return "number"
	}
}

// statusError is an error with its HTTP status.
type statusError struct {
	status int
	err    error
}

func (e statusError) Error() string { return e.err.Error() }

func badRequest(format string, a ...any) error {
	return statusError{http.StatusBadRequest, fmt.Errorf(format, a...)}
}

// writeErr answers err with the status its kind calls for.
func writeErr(w http.ResponseWriter, err error) {
	var se statusError
	var inv invalidError
	status := http.StatusInternalServerError
	switch {
	case errors.As(err, &se):
		status = se.status
	case errors.As(err, &inv), errors.Is(err, ErrBackfillInvalid), errors.Is(err, deliver.ErrWhen), errors.Is(err, deliver.ErrEvent):
		status = http.StatusUnprocessableEntity
	case errors.Is(err, ErrNotLeader):
		status = http.StatusConflict
	case errors.Is(err, deliver.ErrBackfillRunning):
		status = http.StatusConflict
		err = fmt.Errorf("%w: one at a time (GET /api/webhooks/{name}/backfill shows its progress)", err)
	case errors.Is(err, deliver.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, deliver.ErrExists):
		status = http.StatusConflict
	case errors.Is(err, deliver.ErrReadOnly):
		status = http.StatusConflict
		err = fmt.Errorf("%w: change config.toml and send walhook SIGHUP", err)
	case errors.Is(err, deliver.ErrOffInFile):
		status = http.StatusConflict
		err = fmt.Errorf("%w: set active = true there and send walhook SIGHUP", err)
	}
	writeError(w, status, "%v", err)
}

// writeError answers {"error": "..."}.
func writeError(w http.ResponseWriter, status int, format string, a ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, a...)})
}
