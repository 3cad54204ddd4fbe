package deliver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

const (
	keepResponse  = 4 << 10  // response body bytes kept
	drainResponse = 64 << 10 // further bytes read so the connection can be reused
	keepRequest   = 64 << 10 // request body bytes kept in an attempt
	redacted      = "[redacted]"

	// What a receiver sends is bounded before it is read, and bounded
	// again before it is stored: a failed delivery keeps every attempt on
	// disk until it is redelivered, so a receiver answering with megabytes
	// of headers would otherwise fill the store's disk (issue 19).
	maxResponseHeader = 64 << 10 // response header bytes read; more fails the attempt
	keepHeaders       = 4 << 10  // response header bytes kept in an attempt
	keepError         = 1 << 10  // error text bytes kept in an attempt
	keepLocation      = 512      // bytes of a redirect's Location quoted in the error

	// DroppedHeaders is the header an attempt stores in place of the
	// response headers it left out; no receiver's header can be named so,
	// since a space is not allowed in a header name.
	DroppedHeaders = "Walhook Dropped"
)

// request is what one attempt sends.
type request struct {
	id, event, entityID, entityURL string
	body                           body
	attempt                        int
	count                          int           // of a batch: its events (id is the batch's, event "batch"); 0 for one event
	client                         *http.Client  // nil: the queue's
	names                          *headerNames  // nil: made from the webhook's prefix
	tmpl                           *http.Request // nil: made from the webhook's method and URL (requestTemplate)
}

// headerNames are the canonical names of a webhook's prefixed headers,
// made once per definition rather than concatenated per request.
type headerNames struct {
	event, eventID, webhook, entityID, entityURL, attempt, count string
}

func newHeaderNames(prefix string) *headerNames {
	c := textproto.CanonicalMIMEHeaderKey
	return &headerNames{
		event: c(prefix + "Event"), eventID: c(prefix + "Event-Id"), webhook: c(prefix + "Webhook"),
		entityID: c(prefix + "Entity-Id"), entityURL: c(prefix + "Entity-Url"), attempt: c(prefix + "Attempt"),
		count: c(prefix + "Event-Count"),
	}
}

// requestTemplate is a request with the webhook's method and URL, parsed
// once: each attempt copies it (WithContext) instead of parsing the URL.
func requestTemplate(w *Webhook) (*http.Request, error) {
	return http.NewRequest(w.Method, w.URL, nil)
}

// hookClient gives a webhook its own keep-alive pool, as many idle
// connections as it has workers: one transport shared by all webhooks keeps
// only Concurrency idle connections per host, so webhooks posting to the
// same host would close and reopen connections all the time.
//
// Its dialer checks the outbound address policy for a webhook of source.
func (q *Queue) hookClient(source string) *http.Client {
	t, ok := q.client.Transport.(*http.Transport)
	if q.opts.Client != nil || !ok {
		return q.client
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = q.opts.Concurrency
	t.DialContext = policyDialer(q.opts.Policy, source).DialContext
	return &http.Client{Transport: t, CheckRedirect: q.client.CheckRedirect}
}

// policyDialer is the dialer of http.DefaultTransport with the address
// policy's check on every address it dials.
func policyDialer(p AddressPolicy, source string) *net.Dialer {
	return &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: p.control(source)}
}

// result is an attempt and what the response asked of the next one.
type result struct {
	att        Attempt
	retryAfter time.Duration
}

// attempt sends one request with the webhook's headers and signature.
func (q *Queue) attempt(ctx context.Context, w *Webhook, signer *Signer, r request) result {
	start := time.Now()
	att := Attempt{N: r.attempt, At: start.UTC()}
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	req, err := q.newRequest(ctx, w, signer, r, start, &att)
	if err != nil {
		att.Error = err.Error()
		return result{att: att}
	}
	client := r.client
	if client == nil {
		client = q.client
	}
	resp, err := roundTrip(client, req)
	if err != nil {
		att.Duration = time.Since(start)
		att.Error = truncate([]byte(describe(err, w.Timeout)), keepError)
		return result{att: att}
	}
	return readResponse(resp, start, att)
}

// newRequest builds an attempt's request: the webhook's request template
// with the body, walhook's headers, the webhook's own and its signature.
// It records the headers (secrets redacted) and the body in att.
func (q *Queue) newRequest(ctx context.Context, w *Webhook, signer *Signer, r request, start time.Time, att *Attempt) (*http.Request, error) {
	tmpl := r.tmpl
	if tmpl == nil {
		var err error
		if tmpl, err = requestTemplate(w); err != nil {
			return nil, err
		}
	}
	// What NewRequestWithContext makes of a bytes.Reader. GetBody lets the
	// transport send again on a fresh connection when a reused one died
	// before the request was written.
	req := tmpl.WithContext(ctx)
	if data := r.body.data; w.Method != "GET" {
		req.ContentLength = int64(len(data))
		req.Body = http.NoBody
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		if len(data) > 0 {
			req.Body = io.NopCloser(bytes.NewReader(data))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
		}
	}
	req.Header = q.headers(w, signer, r, start.Unix())
	if w.BasicAuthUser != "" {
		req.SetBasicAuth(w.BasicAuthUser, w.BasicAuthPassword)
	} else if u := req.URL.User; u != nil {
		// What http.Client does for user info in the URL; roundTrip calls
		// the transport itself.
		pw, _ := u.Password()
		req.SetBasicAuth(u.Username(), pw)
	}
	// The transport only reads the request's headers, and nothing writes
	// them once it is sent: the attempt keeps the map itself unless a value
	// must be redacted.
	hd := req.Header
	att.RequestHeaders = hd
	if len(w.Headers) > 0 || hd["Authorization"] != nil {
		att.RequestHeaders = hd.Clone()
		for k := range w.Headers {
			att.RequestHeaders.Set(k, redacted)
		}
		if att.RequestHeaders.Get("Authorization") != "" {
			att.RequestHeaders.Set("Authorization", redacted)
		}
	}
	att.RequestBody = bodyText(r.body.data)
	return req, nil
}

// headers are an attempt's headers but for authorization: walhook's, the
// webhook's own and the signature over the id, the timestamp ts and the body.
func (q *Queue) headers(w *Webhook, signer *Signer, r request, ts int64) http.Header {
	names := r.names
	if names == nil {
		names = newHeaderNames(w.HeaderPrefix)
	}
	// One backing array for the values instead of one slice per Set; the
	// names are canonical already.
	hd := make(http.Header, 12+len(w.Headers))
	vals := make([]string, 0, 10)
	set := func(k, v string) {
		vals = append(vals, v)
		hd[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	if r.body.contentType != "" {
		set("Content-Type", r.body.contentType)
	}
	set("User-Agent", q.userAgent)
	set("Webhook-Id", r.id)
	set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	set(names.event, r.event)
	set(names.eventID, r.id)
	set(names.webhook, w.Name)
	if r.count > 0 {
		// A batch's events each have their entity: the body says which.
		set(names.count, strconv.Itoa(r.count))
	} else {
		set(names.entityID, r.entityID)
		if r.entityURL != "" {
			set(names.entityURL, r.entityURL)
		}
	}
	set(names.attempt, strconv.Itoa(r.attempt))
	for k, v := range w.Headers {
		hd.Set(k, v)
	}
	if sig := signer.Sign(r.id, ts, r.body.data); sig != "" {
		if w.effectiveSignature() == SignatureStandard {
			hd.Set("Webhook-Signature", sig)
		} else {
			hd.Set(w.SignatureHeader, sig)
		}
	}
	return hd
}

// readResponse completes att, started at start, with what resp says: its
// status, the part of its headers and body an attempt keeps, and what it
// asks of the next attempt.
func readResponse(resp *http.Response, start time.Time, att Attempt) result {
	kept := readKept(resp)
	if resp.ContentLength != 0 && int64(len(kept)) != resp.ContentLength {
		io.CopyN(io.Discard, resp.Body, drainResponse) // the rest, so the connection is reused
	}
	resp.Body.Close()
	att.Duration = time.Since(start)
	att.Status = resp.StatusCode
	att.ResponseHeaders = keptHeaders(resp.Header)
	att.ResponseBody = strings.ToValidUTF8(string(kept), "\uFFFD")
	res := result{att: att}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		res.att.Error = fmt.Sprintf("HTTP %d", resp.StatusCode)
		if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
			res.att.Error += " redirect to " + truncate([]byte(loc), keepLocation) + " (not followed)"
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return res
}

// keptHeaders is the part of a response's headers an attempt stores:
// whole headers in name order while they fit in keepHeaders bytes, and
// under DroppedHeaders how many were left out and their size.
func keptHeaders(h http.Header) http.Header {
	size := func(k string, vs []string) int {
		n := 0
		for _, v := range vs {
			n += len(k) + len(v) + 4 // "k: v\r\n"
		}
		return n
	}
	total := 0
	for k, vs := range h {
		total += size(k, vs)
	}
	if total <= keepHeaders {
		return h
	}
	out := make(http.Header)
	kept, dropped := 0, 0
	for _, k := range slices.Sorted(maps.Keys(h)) {
		n := size(k, h[k])
		if kept+n > keepHeaders-128 { // room for the note
			dropped++
			continue
		}
		out[k] = h[k]
		kept += n
	}
	out[DroppedHeaders] = []string{fmt.Sprintf("%d headers, %d of %d bytes, not kept: an attempt keeps %d bytes of response headers", dropped, total-kept, total, keepHeaders)}
	return out
}

// roundTrip makes the request. With walhook's own client it calls the
// transport directly: Client.Do copies every request's headers for the
// redirects it might follow, and walhook follows none (a 3xx is an answer).
func roundTrip(c *http.Client, req *http.Request) (*http.Response, error) {
	if t, ok := c.Transport.(*http.Transport); ok && c.Jar == nil && c.Timeout == 0 {
		return t.RoundTrip(req)
	}
	return c.Do(req)
}

// readKept reads the start of a response body that is kept. Most answers
// are empty or say how long they are: those need no growing buffer.
func readKept(resp *http.Response) []byte {
	switch n := resp.ContentLength; {
	case n == 0:
		return nil
	case n > 0 && n <= keepResponse:
		b := make([]byte, n)
		m, _ := io.ReadFull(resp.Body, b)
		return b[:m]
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, keepResponse))
	return b
}

// parseRetryAfter reads seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, 7*24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func describe(err error, timeout time.Duration) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("timeout after %s", timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// bodyText is a request body as the attempt keeps it. A body is built for
// one attempt and never changed after, so the text shares its bytes rather
// than copying each one.
func bodyText(b []byte) string {
	if len(b) == 0 || len(b) > keepRequest {
		return truncate(b, keepRequest)
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return strings.ToValidUTF8(string(b[:n]), "")
}

// logAttempt writes the attempt's line to the webhook's .log file; a
// batch's line (count > 0) says how many events it carried.
func (q *Queue) logAttempt(h *dispatcher, w *Webhook, id, event string, count, n int, res result) {
	if h.log == nil {
		return
	}
	a := res.att
	status := "error"
	if a.Status != 0 {
		status = strconv.Itoa(a.Status)
	}
	// Appended, not Sprintf'd: one line per attempt is on the hot path.
	line := make([]byte, 0, 192)
	line = a.At.AppendFormat(line, time.RFC3339)
	line = append(append(line, " id="...), id...)
	line = append(append(line, " event="...), event...)
	if count > 0 {
		line = strconv.AppendInt(append(line, " events="...), int64(count), 10)
	}
	line = strconv.AppendInt(append(line, " attempt="...), int64(n), 10)
	line = strconv.AppendInt(append(line, '/'), int64(w.MaxAttempts), 10)
	line = append(append(line, " status="...), status...)
	line = strconv.AppendInt(append(line, " duration_ms="...), a.Duration.Milliseconds(), 10)
	line = append(append(line, " url="...), RedactURL(w.URL)...)
	switch {
	case a.Status == 0 && a.Error != "":
		line = strconv.AppendQuote(append(line, " error="...), a.Error)
	case a.Status != 0 && (a.Status < 200 || a.Status > 299):
		// The receiver's answer, else what walhook made of it ("HTTP 503",
		// a redirect not followed), never an empty error="".
		msg := a.ResponseBody
		if strings.TrimSpace(msg) == "" {
			msg = a.Error
		}
		if body := []rune(msg); len(body) > 200 {
			msg = string(body[:200])
		}
		if msg != "" {
			line = strconv.AppendQuote(append(line, " error="...), msg)
		}
	}
	h.log.writeLine(append(line, '\n'))
}

// randomID returns n random bytes in hex.
func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// RedactURL hides a password in the URL's user info and the values of
// its query, where tokens are often passed.
func RedactURL(raw string) string {
	if !strings.ContainsAny(raw, "@?") {
		return raw // no user info or query: spare a parse per logged attempt
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable url]"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			for i := range vs {
				vs[i] = "xxxxx"
			}
			q[k] = vs
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
