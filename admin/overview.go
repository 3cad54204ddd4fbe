package admin

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"walhook/deliver"
	"walhook/deliver/store"
)

// SlotState is the replication slot as the overview strip shows it.
type SlotState struct {
	Reading     bool    // connected and streaming
	Waiting     string  // why not, when not reading
	LagBytes    uint64  // WAL the database keeps for the slot
	LagSeconds  float64 // how far the slot's confirmed position trails, in time
	MaxLagBytes uint64  // [postgres] max_lag_mb; 0: no limit

	// A store in PostgreSQL that several walhooks share.
	Shared    bool
	Leads     bool             // this walhook reads the slot
	Instances []store.Instance // the walhooks alive that share the store
	Differing []string         // those whose config's webhooks differ from this one's
}

// overviewJSON is GET /api/overview: walhook at a glance.
type overviewJSON struct {
	Reading         bool       `json:"reading"`
	State           string     `json:"state"` // "reading the slot" or "waiting: <why>"
	SlotLagBytes    uint64     `json:"slot_lag_bytes"`
	SlotLagSeconds  float64    `json:"slot_lag_seconds"`
	MaxLagBytes     uint64     `json:"max_lag_bytes"`
	LagExceeded     bool       `json:"lag_exceeded"`
	EventsPerSecond float64    `json:"events_per_second"` // over the last minute
	Queued          int        `json:"queued"`
	Failed          int        `json:"failed"`
	OldestPending   *time.Time `json:"oldest_pending,omitempty"` // commit time of the oldest undelivered event
	OldestAgeSecs   float64    `json:"oldest_pending_age_seconds"`

	// Of a store shared by several walhooks: whether this one leads (reads
	// the slot), the walhooks alive and those whose config differs.
	Leader           *bool            `json:"leader,omitempty"`
	Instances        []store.Instance `json:"instances,omitempty"`
	DifferingConfigs []string         `json:"differing_configs,omitempty"`

	// Text is each figure as the page's strip prints it.
	Text map[string]string `json:"text"`
}

func (s *Server) routeOverview() {
	s.handleFunc("GET /api/overview", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.overview(time.Now()))
	})
	s.handleFunc("GET /api/webhooks/{name}/chart", s.chartJSON)
	s.handleFunc("GET /api/deliveries/{id}", s.getDelivery)
	s.handleFunc("GET /deliveries/{id}", s.deliveryPage)
}

func (s *Server) overview(now time.Time) overviewJSON {
	o := s.opts.Queue.Overview(now)
	v := overviewJSON{Reading: true, State: "reading the slot", EventsPerSecond: o.EventsPerSecond, Queued: o.Queued, Failed: o.Failed}
	if s.opts.Slot != nil {
		st := s.opts.Slot()
		v.Reading, v.SlotLagBytes, v.SlotLagSeconds, v.MaxLagBytes = st.Reading, st.LagBytes, st.LagSeconds, st.MaxLagBytes
		v.LagExceeded = st.MaxLagBytes > 0 && st.LagBytes > st.MaxLagBytes
		if !st.Reading {
			v.State = "waiting: " + st.Waiting
		}
		if st.Shared {
			v.Leader, v.Instances, v.DifferingConfigs = &st.Leads, st.Instances, st.Differing
		}
	}
	if !o.OldestPending.IsZero() {
		t := o.OldestPending.UTC()
		v.OldestPending = &t
		v.OldestAgeSecs = max(now.Sub(t).Seconds(), 0)
	}
	limit := "no limit"
	if v.MaxLagBytes > 0 {
		limit = "max " + bytesText(v.MaxLagBytes)
	}
	oldest := "none"
	if v.OldestPending != nil {
		oldest = ageText(time.Duration(v.OldestAgeSecs * float64(time.Second)))
	}
	v.Text = map[string]string{
		"state":  v.State,
		"lag":    fmt.Sprintf("%s · %.1f s (%s)", bytesText(v.SlotLagBytes), v.SlotLagSeconds, limit),
		"rate":   fmt.Sprintf("%.2f/s", v.EventsPerSecond),
		"queued": fmt.Sprint(v.Queued),
		"failed": fmt.Sprint(v.Failed),
		"oldest": oldest,
	}
	if v.Leader != nil {
		v.Text["instances"] = instancesText(v)
	}
	return v
}

// instancesText is the strip's line on the walhooks sharing the store.
func instancesText(v overviewJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d sharing the store", len(v.Instances))
	for _, in := range v.Instances {
		if in.Leader {
			fmt.Fprintf(&b, " · leader: %s", in.Name)
		}
	}
	if *v.Leader {
		b.WriteString(" (this one)")
	}
	if len(v.DifferingConfigs) > 0 {
		fmt.Fprintf(&b, " · CONFIGS DIFFER: %s", strings.Join(v.DifferingConfigs, ", "))
	}
	return b.String()
}

func bytesText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func ageText(d time.Duration) string {
	switch {
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%.0f s", d.Seconds())
}

// chartJSON is GET /api/webhooks/{name}/chart?span=1h|24h: the series the
// page draws.
func (s *Server) chartJSON(w http.ResponseWriter, r *http.Request) {
	span := r.URL.Query().Get("span")
	switch span {
	case "":
		span = deliver.ChartHour
	case deliver.ChartHour, deliver.ChartDay:
	default:
		writeError(w, http.StatusBadRequest, "span: must be 1h or 24h (got %q)", span)
		return
	}
	c, ok := s.opts.Queue.Chart(r.PathValue("name"), span, time.Now())
	if !ok {
		writeError(w, http.StatusNotFound, "webhook %q: not found", r.PathValue("name"))
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) {
	d, err := s.opts.Queue.Delivery(r.PathValue("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, showDelivery(d))
}

// sparkline draws a webhook's last hour: a bar per minute, its
// deliveries, with its failures in red on top.
func sparkline(c deliver.Chart) template.HTML {
	const w, h, bar = 120, 24, 2
	peak := uint32(1)
	for _, p := range c.Points {
		peak = max(peak, p.Delivered+p.Failed)
	}
	var b strings.Builder
	var delivered, failed uint32
	fmt.Fprintf(&b, `<svg class="spark" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, w, h, w, h)
	for i, p := range c.Points {
		delivered, failed = delivered+p.Delivered, failed+p.Failed
		x := i * bar
		okH := float64(p.Delivered) * h / float64(peak)
		badH := float64(p.Failed) * h / float64(peak)
		if p.Delivered > 0 {
			fmt.Fprintf(&b, `<rect class="ok" x="%d" y="%.1f" width="%d" height="%.1f"/>`, x, h-okH, bar, okH)
		}
		if p.Failed > 0 {
			fmt.Fprintf(&b, `<rect class="bad" x="%d" y="%.1f" width="%d" height="%.1f"/>`, x, h-okH-badH, bar, badH)
		}
	}
	fmt.Fprintf(&b, `<title>last hour: %d delivered, %d failed attempts (peak %d a minute)</title></svg>`, delivered, failed, peak)
	return template.HTML(b.String())
}

// dayCharts draws the webhook page's charts of the last 24 hours.
func dayCharts(c deliver.Chart) []chartView {
	const w, h = 960, 90
	n := len(c.Points)
	if n == 0 {
		return nil
	}
	step := float64(w) / float64(n)
	x := func(i int) float64 { return float64(i) * step }
	frame := func(b *strings.Builder, peak float64, unit string) {
		fmt.Fprintf(b, `<svg class="chart" width="%d" height="%d" viewBox="0 -12 %d %d" role="img">`, w, h+24, w, h+24)
		fmt.Fprintf(b, `<line class="axis" x1="0" y1="%d" x2="%d" y2="%d"/>`, h, w, h)
		fmt.Fprintf(b, `<text x="2" y="-2">%g %s</text>`, peak, unit)
		for i := 0; i < n; i += n / 8 {
			fmt.Fprintf(b, `<text x="%.0f" y="%d">%s</text>`, x(i), h+11, c.Points[i].Start.Format("15:04"))
		}
	}
	line := func(b *strings.Builder, class string, v func(deliver.ChartPoint) float64, peak float64) {
		fmt.Fprintf(b, `<polyline class="%s" points="`, class)
		for i, p := range c.Points {
			fmt.Fprintf(b, "%.1f,%.1f ", x(i)+step/2, h-v(p)*h/peak)
		}
		b.WriteString(`"/>`)
	}
	var peakCalls, peakMS, peakDepth float64 = 1, 1, 1
	var calls, fails uint32
	for _, p := range c.Points {
		peakCalls = max(peakCalls, float64(p.Delivered+p.Failed))
		peakMS = max(peakMS, p.P99MS)
		peakDepth = max(peakDepth, float64(p.QueueDepth))
		calls, fails = calls+p.Delivered, fails+p.Failed
	}
	var out []chartView

	var b strings.Builder
	frame(&b, peakCalls, "attempts")
	for i, p := range c.Points {
		okH := float64(p.Delivered) * h / peakCalls
		badH := float64(p.Failed) * h / peakCalls
		if p.Delivered > 0 {
			fmt.Fprintf(&b, `<rect class="ok" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d delivered</title></rect>`, x(i), h-okH, step-1, okH, p.Start.Format("15:04"), p.Delivered)
		}
		if p.Failed > 0 {
			fmt.Fprintf(&b, `<rect class="bad" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %d failed</title></rect>`, x(i), h-okH-badH, step-1, badH, p.Start.Format("15:04"), p.Failed)
		}
	}
	b.WriteString(`</svg>`)
	out = append(out, chartView{Title: fmt.Sprintf("Deliveries and failures per 15 minutes (%d delivered, %d failed attempts)", calls, fails), SVG: template.HTML(b.String())})

	b.Reset()
	frame(&b, peakMS, "ms")
	line(&b, "p50", func(p deliver.ChartPoint) float64 { return p.P50MS }, peakMS)
	line(&b, "p99", func(p deliver.ChartPoint) float64 { return p.P99MS }, peakMS)
	b.WriteString(`</svg>`)
	out = append(out, chartView{Title: "Attempt duration, p50 and p99 (power-of-two bins)", SVG: template.HTML(b.String())})

	b.Reset()
	frame(&b, peakDepth, "queued")
	line(&b, "depth", func(p deliver.ChartPoint) float64 { return float64(p.QueueDepth) }, peakDepth)
	b.WriteString(`</svg>`)
	out = append(out, chartView{Title: "Queue depth", SVG: template.HTML(b.String())})
	return out
}

// chartView is one drawn chart and its title.
type chartView struct {
	Title string
	SVG   template.HTML
}
