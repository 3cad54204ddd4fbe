package deliver

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"text/template"
	"time"

	"walhook/cdc"
)

// jsonBody is the JSON request body; the field order is the contract's.
type jsonBody struct {
	ID         string         `json:"id"`
	Event      string         `json:"event"`
	Entity     string         `json:"entity"`
	Action     string         `json:"action"`
	EntityID   string         `json:"entity_id"`
	EntityURL  string         `json:"entity_url,omitempty"`
	Table      string         `json:"table"`
	OccurredAt string         `json:"occurred_at"`
	Webhook    string         `json:"webhook"`
	Data       map[string]any `json:"data,omitempty"`
	Old        map[string]any `json:"old,omitempty"`
	Changed    []string       `json:"changed,omitempty"`
}

// pingBody is the body of a test request.
type pingBody struct {
	ID         string `json:"id"`
	Event      string `json:"event"`
	Webhook    string `json:"webhook"`
	OccurredAt string `json:"occurred_at"`
}

// TemplateData is what a webhook's template renders.
type TemplateData struct {
	ID, Event, Entity, Action, Op string
	EntityID, EntityURL, Table    string
	OccurredAt                    string
	OccurredAtMs                  int64 // the commit time in Unix milliseconds (Etlworks' "timestamp")
	Webhook                       string
	Data, Old                     map[string]any
	Changed                       []string
}

var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
}

// parseTemplate parses a body template and bounds it (see bound); it
// renders at most maxBody bytes, DefaultMaxBodyBytes when 0.
func parseTemplate(text string, maxBody int) (*bodyTemplate, error) {
	fs := template.FuncMap{tickFunc: func() string { return "" }, rangeFunc: checkRange}
	t, err := template.New("body").Funcs(templateFuncs).Funcs(fs).Option("missingkey=zero").Parse(text)
	if err != nil {
		return nil, err
	}
	if err := bound(t); err != nil {
		return nil, err
	}
	if maxBody <= 0 {
		maxBody = DefaultMaxBodyBytes
	}
	return &bodyTemplate{root: t, maxBody: maxBody, timeout: templateTimeout}, nil
}

func renderTemplate(t *bodyTemplate, webhook string, ev *cdc.Event) ([]byte, error) {
	return t.execute(templateData(webhook, ev))
}

// templateData is what a template sees of ev, alone or in a batch.
func templateData(webhook string, ev *cdc.Event) TemplateData {
	op := map[string]string{cdc.ActionCreate: "INSERT", cdc.ActionModify: "UPDATE", cdc.ActionDelete: "DELETE", cdc.ActionTruncate: "TRUNCATE"}[ev.Action]
	return TemplateData{
		ID: ev.ID, Event: eventName(ev), Entity: ev.Entity, Action: ev.Action, Op: op,
		EntityID: ev.EntityID, EntityURL: ev.EntityURL, Table: ev.QualifiedTable(),
		OccurredAt: ev.CommitTime.UTC().Format(time.RFC3339), OccurredAtMs: ev.CommitTime.UnixMilli(), Webhook: webhook,
		Data: ev.Data, Old: ev.Old, Changed: ev.Changed,
	}
}

// eventName is <entity>.<action>.
func eventName(ev *cdc.Event) string {
	entity := ev.Entity
	if entity == "" {
		entity = ev.Table
		if ev.Schema != "public" && ev.Schema != "" {
			entity = ev.QualifiedTable()
		}
	}
	return entity + "." + ev.Action
}

// sampleEvent is what a template is tried on when a webhook is validated.
func sampleEvent() cdc.Event {
	return cdc.Event{
		ID: cdc.EventID(0x16B3A80, 3), CommitTime: time.Date(2026, 11, 29, 1, 2, 3, 456789000, time.UTC),
		Schema: "public", Table: "employees", Action: cdc.ActionModify,
		Data:    map[string]any{"id": int64(130333), "email": "john.doe@example.com"},
		Old:     map[string]any{"id": int64(130333), "email": "john@example.com"},
		Changed: []string{"email"}, Key: []string{"id"},
		Entity: "employee", EntityID: "130333", EntityURL: "https://hr.example.com/api/employees/130333",
	}
}

// body is an encoded request body and its Content-Type.
type body struct {
	data        []byte
	contentType string
}

// event is a stored event as webhooks deliver it. The webhooks of one
// event share it, so its JSON body is built once (see spliced).
type event struct {
	*cdc.Event
	json [2]atomic.Pointer[spliced] // by include_entity
}

// spliced is a JSON body and where the webhook's name sits in it: webhooks
// with the plain JSON body send the same bytes but for their name.
type spliced struct {
	b       []byte // never changed: requests and attempts share it
	at, end int
}

// encoder renders the request bodies of one webhook.
type encoder struct {
	name          string
	quotedName    []byte // the name as a JSON string
	method        string
	contentType   string
	includeEntity bool
	tmpl          *bodyTemplate
	cols          *columnRule // nil: every column
}

// newEncoder makes w's encoder; a template renders at most maxBody bytes
// (0: DefaultMaxBodyBytes).
func newEncoder(w *Webhook, maxBody int) (*encoder, error) {
	e := &encoder{name: w.Name, quotedName: appendJSONString(nil, w.Name), method: w.Method, contentType: w.ContentType, includeEntity: w.IncludeEntity, cols: newColumnRule(w)}
	if w.Template != "" {
		t, err := parseTemplate(w.Template, maxBody)
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		e.tmpl = t
	}
	return e, nil
}

func (e *encoder) ctype() string {
	if e.contentType == "form" {
		return "application/x-www-form-urlencoded"
	}
	return "application/json"
}

// encode renders the body of ev; GET requests have none.
func (e *encoder) encode(sev *event) (body, error) {
	if e.method == "GET" {
		return body{}, nil
	}
	if e.tmpl == nil && e.contentType != "form" {
		b, err := e.appendJSON(nil, sev)
		return body{b, e.ctype()}, err
	}
	ev := sev.Event
	if e.cols != nil {
		ev = e.cols.apply(ev)
	}
	if e.tmpl != nil {
		b, err := renderTemplate(e.tmpl, e.name, ev)
		return body{b, e.ctype()}, err
	}
	return e.encodeForm(ev)
}

// appendJSON appends sev's plain JSON body to dst: one event's request
// body, or one of a batch's events written where the batch's body has it
// (not built apart and copied there).
func (e *encoder) appendJSON(dst []byte, sev *event) ([]byte, error) {
	ev := sev.Event
	if e.cols != nil {
		ev = e.cols.apply(ev)
	}
	if dst == nil {
		dst = make([]byte, 0, e.sizeHint(sev))
	}
	// The webhooks of an event share its plain JSON body; one that picks
	// columns has a body of its own.
	shared := e.shared(sev)
	if shared != nil {
		if s := shared.Load(); s != nil {
			return append(append(append(dst, s.b[:s.at]...), e.quotedName...), s.b[s.end:]...), nil
		}
	}
	jb := e.jsonBody(ev)
	start := len(dst)
	if b, at, end, ok := appendJSONBody(dst, &jb); ok {
		if shared != nil {
			// Capped: what is appended to b after it cannot reach the
			// bytes shared, which nothing writes again.
			shared.Store(&spliced{b[start:len(b):len(b)], at - start, end - start})
		}
		return b, nil
	}
	js, err := json.Marshal(jb)
	if err != nil {
		return nil, err
	}
	return append(dst, js...), nil
}

// sizeHint guesses the bytes of sev's plain JSON body: exact when it is
// shared already.
func (e *encoder) sizeHint(sev *event) int {
	if shared := e.shared(sev); shared != nil {
		if s := shared.Load(); s != nil {
			return len(s.b) - (s.end - s.at) + len(e.quotedName)
		}
	}
	return 256 + sev.SizeHint()
}

// shared is where the webhooks of sev with the plain JSON body keep it;
// nil for a webhook whose body is its own.
func (e *encoder) shared(sev *event) *atomic.Pointer[spliced] {
	switch {
	case e.cols != nil, e.contentType == "form":
		return nil
	case e.includeEntity:
		return &sev.json[1]
	default:
		return &sev.json[0]
	}
}

// jsonBody is the body of ev (columns picked already) before encoding.
func (e *encoder) jsonBody(ev *cdc.Event) jsonBody {
	jb := jsonBody{
		ID: ev.ID, Event: eventName(ev), Entity: ev.Entity, Action: ev.Action,
		EntityID: ev.EntityID, EntityURL: ev.EntityURL, Table: ev.QualifiedTable(),
		OccurredAt: ev.CommitTime.UTC().Format(time.RFC3339Nano), Webhook: e.name,
	}
	if e.includeEntity {
		jb.Data, jb.Old, jb.Changed = ev.Data, ev.Old, ev.Changed
	}
	return jb
}

// encodeForm renders ev (columns picked already) as a form.
func (e *encoder) encodeForm(ev *cdc.Event) (body, error) {
	jb := e.jsonBody(ev)
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("id", jb.ID)
	set("event", jb.Event)
	set("entity", jb.Entity)
	set("action", jb.Action)
	v.Set("entity_id", jb.EntityID)
	set("entity_url", jb.EntityURL)
	set("table", jb.Table)
	set("occurred_at", jb.OccurredAt)
	set("webhook", jb.Webhook)
	for _, part := range []struct {
		prefix string
		m      map[string]any
	}{{"data.", jb.Data}, {"old.", jb.Old}} {
		for col, val := range part.m {
			s, err := formValue(val)
			if err != nil {
				return body{}, fmt.Errorf("encode %s%s: %w", part.prefix, col, err)
			}
			v.Set(part.prefix+col, s)
		}
	}
	if len(jb.Changed) > 0 {
		v.Set("changed", strings.Join(jb.Changed, ","))
	}
	return body{[]byte(v.Encode()), e.ctype()}, nil
}

// encodePing renders the body of a test request.
func (e *encoder) encodePing(id string, now time.Time) body {
	if e.method == "GET" {
		return body{}
	}
	p := pingBody{ID: id, Event: "ping", Webhook: e.name, OccurredAt: now.UTC().Format(time.RFC3339)}
	if e.contentType == "form" {
		v := url.Values{"id": {p.ID}, "event": {p.Event}, "webhook": {p.Webhook}, "occurred_at": {p.OccurredAt}}
		return body{[]byte(v.Encode()), e.ctype()}
	}
	b, _ := json.Marshal(p)
	return body{b, e.ctype()}
}

// formValue is a value's JSON text, strings without their quotes.
func formValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	}
	b, err := json.Marshal(v)
	return string(b), err
}
