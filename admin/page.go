package admin

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"walhook/cdc"
	"walhook/deliver"
)

//go:embed templates static
var files embed.FS

// pages are parsed once: each page is the layout plus its own file.
var pages = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, p := range []string{"index", "form", "history", "delivery"} {
		out[p] = template.Must(template.New("").Funcs(funcs).ParseFS(files,
			"templates/layout.html", "templates/row.html", "templates/"+p+".html"))
	}
	return out
}()

var funcs = template.FuncMap{
	"time": func(v any) string {
		var t time.Time
		switch v := v.(type) {
		case time.Time:
			t = v
		case *time.Time:
			if v != nil {
				t = *v
			}
		}
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": strings.Join,
}

// The page's Content-Security-Policy: nothing but this server's own files.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func (s *Server) routePage() {
	static, _ := fs.Sub(files, "static")
	s.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.handleFunc("GET /{$}", s.indexPage)
	s.handleFunc("GET /webhooks/new", s.newPage)
	s.handleFunc("GET /webhooks/{name}/deliveries", s.historyPage)
	s.handleFunc("GET /webhooks/{name}/edit", s.editPage)
	s.handleFunc("GET /webhooks/{name}/row", s.rowFragment)
}

// render writes a page, or the named template of it.
func render(w http.ResponseWriter, page, name string, data any) {
	var buf bytes.Buffer
	if err := pages[page].ExecuteTemplate(&buf, name, data); err != nil {
		writeError(w, http.StatusInternalServerError, "render %s: %v", page, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", csp)
	w.Header().Set("Cache-Control", "no-store")
	buf.WriteTo(w)
}

// rowView is one line of the webhook table.
type rowView struct {
	webhookJSON
	Latest      string        // the latest response's status, "error" or "N/A"
	LatestClass string        // ok, bad or na: green, red or grey
	Spark       template.HTML // the last hour's deliveries per minute (see sparkline)
}

func newRowView(w deliver.Webhook, st deliver.Stats) rowView {
	r := rowView{webhookJSON: showWebhook(w, st), Latest: "N/A", LatestClass: "na"}
	switch {
	case st.TotalCalls == 0:
	case st.LatestStatus >= 200 && st.LatestStatus < 300:
		r.Latest, r.LatestClass = strconv.Itoa(st.LatestStatus), "ok"
	case st.LatestStatus == 0:
		r.Latest, r.LatestClass = "error", "bad"
	default:
		r.Latest, r.LatestClass = strconv.Itoa(st.LatestStatus), "bad"
	}
	return r
}

func (s *Server) row(name string) (rowView, bool) {
	w, ok := s.opts.Queue.Webhook(name)
	if !ok {
		return rowView{}, false
	}
	return s.withSpark(newRowView(w, s.opts.Queue.Stats(name))), true
}

// withSpark draws the row's sparkline.
func (s *Server) withSpark(r rowView) rowView {
	if c, ok := s.opts.Queue.Chart(r.Name, deliver.ChartHour, time.Now()); ok {
		r.Spark = sparkline(c)
	}
	return r
}

func (s *Server) indexPage(w http.ResponseWriter, r *http.Request) {
	var rows []rowView
	for _, h := range s.opts.Queue.Webhooks() {
		rows = append(rows, s.withSpark(newRowView(h, s.opts.Queue.Stats(h.Name))))
	}
	var problems []string
	if s.opts.Problems != nil {
		problems = s.opts.Problems()
	}
	render(w, "index", "layout", map[string]any{"Title": "Webhooks", "Rows": rows, "Problems": problems, "Overview": s.overview(time.Now())})
}

// rowFragment is one table row, for the page's refresh button.
func (s *Server) rowFragment(w http.ResponseWriter, r *http.Request) {
	row, ok := s.row(r.PathValue("name"))
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", r.PathValue("name"))
		return
	}
	render(w, "index", "row", row)
}

// formView is the create / edit form.
type formView struct {
	Title         string
	New           bool
	ReadOnly      bool // a config webhook: shown, not editable
	W             webhookJSON
	Events        []option
	OtherEvents   string // events not offered in the list
	EntitiesError string
	Actions       []option
	Headers       string // one "Name: value" per line
	Signatures    []option
	MaxInFlight   int // max_in_flight's bound
}

type option struct {
	Value, Label string
	Checked      bool
}

func (s *Server) newPage(w http.ResponseWriter, r *http.Request) {
	var hook deliver.Webhook
	deliver.ApplyDefaults(&hook)
	hook.Signature = deliver.SignatureStandard // a secret is generated unless the user picks "none"
	render(w, "form", "layout", s.form(r, "New webhook", hook, true))
}

func (s *Server) editPage(w http.ResponseWriter, r *http.Request) {
	hook, ok := s.opts.Queue.Webhook(r.PathValue("name"))
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", r.PathValue("name"))
		return
	}
	render(w, "form", "layout", s.form(r, "Edit "+hook.Name, hook, false))
}

func (s *Server) form(r *http.Request, title string, hook deliver.Webhook, isNew bool) formView {
	v := formView{
		Title: title, New: isNew, ReadOnly: hook.Source == deliver.SourceConfig,
		W: showWebhook(hook, deliver.Stats{}), MaxInFlight: deliver.MaxInFlight,
	}
	var entities []Entity
	if s.opts.Entities != nil {
		var err error
		if entities, err = s.opts.Entities(r.Context()); err != nil {
			v.EntitiesError = err.Error()
		}
	}
	listed := map[string]bool{"*": true}
	v.Events = append(v.Events, option{Value: "*", Label: "every table in the publication", Checked: slices.Contains(hook.Events, "*")})
	for _, e := range entities {
		listed[e.Name] = true
		label := e.Table
		switch {
		case e.ReplicaIdentity == "":
			label += ", table not found"
		case e.Unpublished != "":
			label += ", " + e.Unpublished
		default:
			label += ", replica identity " + e.ReplicaIdentity
		}
		v.Events = append(v.Events, option{Value: e.Name, Label: label, Checked: slices.Contains(hook.Events, e.Name)})
	}
	var other []string
	for _, e := range hook.Events {
		if !listed[e] {
			other = append(other, e)
		}
	}
	v.OtherEvents = strings.Join(other, ", ")
	for _, a := range []string{cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate} {
		v.Actions = append(v.Actions, option{Value: a, Label: a, Checked: slices.Contains(hook.Actions, a)})
	}
	for _, sig := range []struct{ value, label string }{
		{"", "none (unsigned)"},
		{deliver.SignatureStandard, "standard (Standard Webhooks, Webhook-Signature)"},
		{deliver.SignatureSHA256, "sha256 (sha256=<hex>, GitHub, PeopleForce)"},
		{deliver.SignatureSHA256Base64, "sha256-base64 (Akuiteo)"},
		{deliver.SignatureSHA1, "sha1 (sha1=<hex>, Etlworks)"},
	} {
		v.Signatures = append(v.Signatures, option{Value: sig.value, Label: sig.label, Checked: hook.Signature == sig.value})
	}
	names := make([]string, 0, len(v.W.Headers))
	for k := range v.W.Headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v.Headers += k + ": " + v.W.Headers[k] + "\n"
	}
	return v
}

// historyView is a webhook's delivery history: its charts and a search.
type historyView struct {
	Title      string
	Row        rowView
	Status     string // the filter, "" for all
	Statuses   []string
	Actions    []string
	Filter     map[string]string // the search form's values
	Deliveries []historyRow
	Next       string // the next page's URL; "" on the last
	Since      string // the recover form's default
	Error      string
	Charts     []chartView
}

// historyRow is one compact line of the history; its payload and attempts
// are on the delivery's own page.
type historyRow struct {
	deliveryJSON
	LastStatus  string // of the latest attempt: its code, "error" or "—"
	StatusClass string
	DurationMS  float64 // of the latest attempt
}

func newHistoryRow(d deliver.Delivery) historyRow {
	row := historyRow{deliveryJSON: showDelivery(d), LastStatus: "—", StatusClass: "na"}
	if n := len(d.Attempts); n > 0 {
		a := d.Attempts[n-1]
		row.DurationMS = float64(a.Duration.Microseconds()) / 1000
		row.LastStatus, row.StatusClass = "error", "bad"
		if a.Status != 0 {
			row.LastStatus = strconv.Itoa(a.Status)
		}
		if a.Status >= 200 && a.Status < 300 {
			row.StatusClass = "ok"
		}
	}
	return row
}

type deliveryView struct {
	deliveryJSON
	PrettyPayload string
	Attempts      []attemptView
}

type attemptView struct {
	attemptJSON
	Open        bool // shown unfolded: the latest attempt of a delivery that did not succeed
	StatusClass string
	Request     string // the request as sent: request line, headers, body
	Response    string // status line, headers, first 4 KiB of the body
}

func (s *Server) historyPage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	hook, ok := s.opts.Queue.Webhook(name)
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", name)
		return
	}
	v := historyView{
		Title: name + ": deliveries", Row: newRowView(hook, s.opts.Queue.Stats(name)),
		Status:   r.URL.Query().Get("status"),
		Statuses: []string{deliver.StatusPending, deliver.StatusSuccess, deliver.StatusFailed},
		Actions:  []string{cdc.ActionCreate, cdc.ActionModify, cdc.ActionDelete, cdc.ActionTruncate},
		Filter:   map[string]string{},
		Since:    time.Now().UTC().Add(-24 * time.Hour).Truncate(time.Minute).Format(time.RFC3339),
	}
	for _, k := range []string{"status", "action", "entity_id", "event_id", "since", "until"} {
		v.Filter[k] = r.URL.Query().Get(k)
	}
	if c, ok := s.opts.Queue.Chart(name, deliver.ChartDay, time.Now()); ok {
		v.Charts = dayCharts(c)
	}
	page, err := s.deliveries(r, false)
	if err != nil {
		v.Error = err.Error()
	}
	for _, d := range page.Deliveries {
		v.Deliveries = append(v.Deliveries, newHistoryRow(d))
	}
	if page.Next != "" {
		next := r.URL.Query()
		next.Set("before", page.Next)
		v.Next = r.URL.Path + "?" + next.Encode()
	}
	render(w, "history", "layout", v)
}

// deliveryPage is one delivery: its payload and every attempt.
func (s *Server) deliveryPage(w http.ResponseWriter, r *http.Request) {
	d, err := s.opts.Queue.Delivery(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	hook, ok := s.opts.Queue.Webhook(d.Webhook)
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", d.Webhook)
		return
	}
	render(w, "delivery", "layout", map[string]any{
		"Title": d.Webhook + ": " + d.Event + " " + d.EntityID, "Row": newRowView(hook, s.opts.Queue.Stats(d.Webhook)),
		"D": newDeliveryView(hook, d),
	})
}

func newDeliveryView(hook deliver.Webhook, d deliver.Delivery) deliveryView {
	v := deliveryView{deliveryJSON: showDelivery(d), PrettyPayload: pretty(d.Payload)}
	for i := len(d.Attempts) - 1; i >= 0; i-- { // the latest first
		a := d.Attempts[i]
		av := attemptView{attemptJSON: showAttempt(a), StatusClass: "bad", Open: i == len(d.Attempts)-1 && d.Status != deliver.StatusSuccess}
		if a.Status >= 200 && a.Status < 300 {
			av.StatusClass = "ok"
		}
		av.Request = fmt.Sprintf("%s %s\n%s\n%s", hook.Method, deliver.RedactURL(hook.URL), headerLines(a.RequestHeaders), a.RequestBody)
		if a.Status == 0 {
			av.Response = "no response: " + a.Error
		} else {
			av.Response = fmt.Sprintf("HTTP %d %s\n%s\n%s", a.Status, http.StatusText(a.Status), headerLines(a.ResponseHeaders), a.ResponseBody)
		}
		v.Attempts = append(v.Attempts, av)
	}
	return v
}

// pretty indents a JSON body; anything else is returned as it is.
func pretty(body []byte) string {
	var buf bytes.Buffer
	if json.Indent(&buf, body, "", "  ") == nil {
		return buf.String()
	}
	return string(body)
}

func headerLines(h http.Header) string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	return b.String()
}
