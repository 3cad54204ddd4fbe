package testkit

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Request is one request a Receiver got, and the status it answered.
type Request struct {
	Method string
	Path   string
	Query  string // the raw query, without "?"
	Header http.Header
	Body   []byte
	At     time.Time // when it arrived, before its body was read
	Status int       // what the Receiver answered
}

// BasicAuth returns the user name and password of the request's basic
// authentication, as http.Request.BasicAuth does.
func (r Request) BasicAuth() (user, password string, ok bool) {
	return (&http.Request{Header: r.Header}).BasicAuth()
}

// Response is what a Receiver answers a request.
type Response struct {
	Status int // 0: 200
	Header http.Header
	Body   string
	// Delay holds the answer back this long, or until the client gives the
	// request up: an endpoint slower than walhook's timeout.
	Delay time.Duration
}

// Respond decides a Receiver's answer to its nth request (n from 1); it
// runs in the server's handler, so it must not fail the test with Fatal.
type Respond func(n int, r Request) Response

// Receiver is a real HTTP server on a loopback port recording every
// request it gets; a Respond hook chooses each answer (nil: 200, empty
// body). Its methods are safe while requests arrive.
type Receiver struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []Request
	respond Respond
}

// NewReceiver starts a Receiver over HTTP; the test's end closes it.
func NewReceiver(t testing.TB, respond Respond) *Receiver {
	t.Helper()
	rc := newReceiver(respond)
	rc.Server = httptest.NewServer(rc)
	t.Cleanup(rc.Close)
	return rc
}

// NewTLSReceiver starts a Receiver over HTTPS with a certificate of its own
// (rc.Certificate()) that no system trusts.
func NewTLSReceiver(t testing.TB, respond Respond) *Receiver {
	t.Helper()
	rc := newReceiver(respond)
	rc.Server = httptest.NewTLSServer(rc)
	t.Cleanup(rc.Close)
	return rc
}

// ListenReceiver starts a Receiver on addr, for an endpoint that comes up
// at an address walhook already sends to.
func ListenReceiver(t testing.TB, addr string, respond Respond) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc := newReceiver(respond)
	rc.Server = httptest.NewUnstartedServer(rc)
	rc.Listener.Close()
	rc.Listener = l
	rc.Start()
	t.Cleanup(rc.Close)
	return rc
}

func newReceiver(respond Respond) *Receiver { return &Receiver{respond: respond} }

// ServeHTTP records r and answers what the Respond hook chooses.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), At: time.Now()}
	got.Body, _ = io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, got)
	n, respond := len(rc.reqs), rc.respond
	rc.mu.Unlock()
	var answer Response
	if respond != nil {
		answer = respond(n, got)
	}
	if answer.Status == 0 {
		answer.Status = http.StatusOK
	}
	rc.mu.Lock()
	rc.reqs[n-1].Status = answer.Status
	rc.mu.Unlock()
	if answer.Delay > 0 {
		select {
		case <-r.Context().Done():
		case <-time.After(answer.Delay):
		}
	}
	for k, v := range answer.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(answer.Status)
	io.WriteString(w, answer.Body)
}

// SetRespond replaces the Respond hook for the requests that come next.
func (rc *Receiver) SetRespond(respond Respond) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.respond = respond
}

// Requests returns a copy of the requests so far, in order of arrival.
func (rc *Receiver) Requests() []Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Request(nil), rc.reqs...)
}

// Count returns how many requests arrived.
func (rc *Receiver) Count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

// Last returns the latest request, failing the test when none came.
func (rc *Receiver) Last(t testing.TB) Request {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.reqs) == 0 {
		t.Fatal("the receiver got no request")
	}
	return rc.reqs[len(rc.reqs)-1]
}

// WaitRequest waits up to timeout for a request that match accepts and
// returns the first such.
func (rc *Receiver) WaitRequest(t testing.TB, timeout time.Duration, match func(Request) bool) Request {
	t.Helper()
	var got Request
	WaitFor(t, timeout, "a matching request at the receiver", func() bool {
		for _, r := range rc.Requests() {
			if match(r) {
				got = r
				return true
			}
		}
		return false
	})
	return got
}
