package bench

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"walhook/cdc"
)

// receiver is the local webhook endpoint: it counts distinct
// deliveries and, when asked, their commit → receipt latency.
type receiver struct {
	srv   *http.Server
	url   string
	delay time.Duration

	mu          sync.Mutex
	seen        map[string]struct{}
	first, last time.Time
	recordLat   bool
	lat         []time.Duration
	latBy       map[string][]time.Duration // by webhook
	sample      []byte
	hold        chan struct{} // requests to /hold wait until it is closed
}

// newReceiver listens on a free local port; delay is its wait per request.
func newReceiver(delay time.Duration) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &receiver{url: "http://" + ln.Addr().String(), delay: delay, seen: map[string]struct{}{}}
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
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if _, ok := rc.seen[key]; ok {
		return
	}
	rc.seen[key] = struct{}{}
	if rc.first.IsZero() {
		rc.first = now
	}
	rc.last = now
	if rc.sample == nil {
		rc.sample = body
	}
	if rc.recordLat {
		var v struct {
			ID         string    `json:"id"`
			OccurredAt time.Time `json:"occurred_at"`
		}
		// Changes only: a backfill's rows occurred when its snapshot was
		// taken.
		if json.Unmarshal(body, &v) == nil && !cdc.FromSnapshot(v.ID) {
			d := now.Sub(v.OccurredAt)
			rc.lat = append(rc.lat, d)
			hook := r.Header.Get("X-Walhook-Webhook")
			rc.latBy[hook] = append(rc.latBy[hook], d)
		}
	}
}

// reset forgets what came so far; recordLat makes it record latencies.
func (rc *receiver) reset(recordLat bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.seen = map[string]struct{}{}
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

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
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

// countOf is the distinct deliveries to one webhook.
func (rc *receiver) countOf(hook string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for k := range rc.seen {
		if strings.HasPrefix(k, hook+"/") {
			n++
		}
	}
	return n
}

func (rc *receiver) sampleBody() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.sample
}
