package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"walhook/cdc"
)

// receiver is the local webhook endpoint: it counts distinct
// deliveries and, when asked, their commit → receipt latency. A batch
// (X-Walhook-Event-Count) counts as its events.
type receiver struct {
	srv   *http.Server
	url   string
	delay time.Duration

	mu          sync.Mutex
	seen        map[string]int // events by webhook/Webhook-Id: 1, or a batch's count
	events      int            // the sum of seen
	firstEvents int            // in the first request
	first, last time.Time
	// watched is walhook's pid: its CPU time is read when the first
	// request comes (firstCPU), so that CPU per event can leave its start
	// out.
	watched   int
	firstCPU  float64
	recordLat bool
	lat       []time.Duration
	latBy     map[string][]time.Duration // by webhook
	sample    []byte
	hold      chan struct{} // requests to /hold wait until it is closed
}

// newReceiver listens on a free local port; delay is its wait per request.
func newReceiver(delay time.Duration) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &receiver{url: "http://" + ln.Addr().String(), delay: delay, seen: map[string]int{}}
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
	go rc.srv.Serve(ln)
	return rc, nil
}

func (rc *receiver) close() { rc.srv.Close() }

// serve counts a delivery once, whatever its attempt, and records its
// latency when asked.
func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if r.URL.Path == "/hold" {
		rc.mu.Lock()
		hold := rc.hold
		rc.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
	}
	if rc.delay > 0 {
		time.Sleep(rc.delay)
	}
	now := time.Now()
	key := r.Header.Get("X-Walhook-Webhook") + "/" + r.Header.Get("Webhook-Id")
	// A batch is counted from its header, cheaply: its body is read only
	// for latencies. A batch repeated under its id is the same events.
	events, batched := 1, false
	if c := r.Header.Get("X-Walhook-Event-Count"); c != "" {
		events, err = strconv.Atoi(c)
		if err != nil {
			http.Error(w, "bad X-Walhook-Event-Count", http.StatusBadRequest)
			return
		}
		batched = true
	}
	rc.mu.Lock()
	record := rc.recordLat
	rc.mu.Unlock()
	var occurred []time.Time
	if record {
		// Parsed outside the lock: a batch's body is tens of kB.
		var n int
		occurred, n, err = occurredAt(body, batched)
		if batched && (err != nil || n != events) {
			// Loud: walhook retries and the phase fails for want of events.
			http.Error(w, fmt.Sprintf("a body of %d events, %d in its header: %v", n, events, err), http.StatusBadRequest)
			return
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, ok := rc.seen[key]; ok {
		return
	}
	if rc.recordLat {
		hook := r.Header.Get("X-Walhook-Webhook")
		for _, o := range occurred {
			d := now.Sub(o)
			rc.lat = append(rc.lat, d)
			rc.latBy[hook] = append(rc.latBy[hook], d)
		}
	}
	rc.seen[key] = events
	rc.events += events
	if rc.first.IsZero() {
		rc.first = now
		rc.firstEvents = events
		if rc.watched != 0 {
			rc.firstCPU, _ = procCPUSeconds(rc.watched)
		}
	}
	rc.last = now
	if rc.sample == nil {
		rc.sample = body
	}
}

// bodyEvent is what the receiver reads of an event's body.
type bodyEvent struct {
	ID         string    `json:"id"`
	OccurredAt time.Time `json:"occurred_at"`
}

// occurredAt is the commit time of each change in a body, one event's or
// a batch's ({"webhook", "events": [...]}), and the events it holds. A
// backfill's rows occurred when its snapshot was taken and are left out.
func occurredAt(body []byte, batched bool) (at []time.Time, n int, err error) {
	var evs []bodyEvent
	if batched {
		var b struct {
			Events []bodyEvent `json:"events"`
		}
		err = json.Unmarshal(body, &b)
		evs = b.Events
	} else {
		var v bodyEvent
		if err = json.Unmarshal(body, &v); err == nil {
			evs = []bodyEvent{v}
		}
	}
	for _, v := range evs {
		if !cdc.FromSnapshot(v.ID) {
			at = append(at, v.OccurredAt)
		}
	}
	return at, len(evs), err
}

// reset forgets what came so far; recordLat makes it record latencies.
func (rc *receiver) reset(recordLat bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.seen, rc.events, rc.firstEvents = map[string]int{}, 0, 0
	rc.first, rc.last = time.Time{}, time.Time{}
	rc.recordLat, rc.lat, rc.latBy = recordLat, nil, map[string][]time.Duration{}
}

// holdRequests makes /hold requests wait until release is called.
func (rc *receiver) holdRequests() (release func()) {
	ch := make(chan struct{})
	rc.mu.Lock()
	rc.hold = ch
	rc.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			rc.mu.Lock()
			rc.hold = nil
			rc.mu.Unlock()
			close(ch)
		})
	}
}

// count is the distinct events received: deliveries, or a batch's events.
func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.events
}

// requests is the distinct requests received: deliveries or batches.
func (rc *receiver) requests() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}

// firstCount is the events of the first request: 1, or a batch's.
func (rc *receiver) firstCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.firstEvents
}

// watch makes the first request read the CPU time of process pid.
func (rc *receiver) watch(pid int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.watched, rc.firstCPU = pid, 0
}

// cpuAtFirst is the CPU seconds of the watched process when the first
// request came.
func (rc *receiver) cpuAtFirst() float64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.firstCPU
}

func (rc *receiver) firstAt() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.first
}

func (rc *receiver) lastAt() time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.last
}

func (rc *receiver) latencies() []time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.lat)
}

// latenciesOf are the latencies of one webhook's deliveries.
func (rc *receiver) latenciesOf(hook string) []time.Duration {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.latBy[hook])
}

// countOf is the distinct events delivered to one webhook.
func (rc *receiver) countOf(hook string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for k, events := range rc.seen {
		if strings.HasPrefix(k, hook+"/") {
			n += events
		}
	}
	return n
}

func (rc *receiver) sampleBody() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.sample
}
