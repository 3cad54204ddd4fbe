package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// The ceilings walhook is measured against: a bare reader of the same
// changes, a client sending walhook's requests, and the two together as
// the floor of the pipeline without walhook.

// decodeCeiling is the rows/s of a bare pglogrepl reader: parse every
// message, count the inserts, nothing else.
func (h *harness) decodeCeiling(ctx context.Context, slot string, want int) (float64, error) {
	start := time.Now()
	if err := streamInserts(ctx, h.dsn, slot, want, func(int) {}); err != nil {
		return 0, err
	}
	return float64(want) / time.Since(start).Seconds(), nil
}

// streamInserts is a bare pglogrepl reader: it streams slot, parses every
// message and calls each with the number of every insert, from 0, until
// want came.
func streamInserts(ctx context.Context, dsn, slot string, want int, each func(int)) error {
	conn, err := replicationConn(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'bench'"},
	})
	if err != nil {
		return err
	}
	// One deadline for the whole read, none per message.
	conn.Conn().SetReadDeadline(time.Now().Add(5 * time.Minute))
	n := 0
	for n < want {
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			return err
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if er, ok := msg.(*pgproto3.ErrorResponse); ok {
				return pgconn.ErrorResponseToPgError(er)
			}
			continue
		}
		switch cd.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(cd.Data[1:])
			if err == nil && pkm.ReplyRequested {
				pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pkm.ServerWALEnd})
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
			if err != nil {
				return err
			}
			m, err := pglogrepl.Parse(xld.WALData)
			if err != nil {
				return err
			}
			if _, ok := m.(*pglogrepl.InsertMessage); ok {
				each(n)
				n++
			}
		}
	}
	return nil
}

// httpCeiling is the requests/s of a client set up like walhook's (a
// keep-alive transport with as many idle connections as workers) sending
// walhook's body (or, before walhook ran, one of its shape and size) with
// the same headers and signature to the same receiver, which does for
// each what it does for walhook's.
func (h *harness) httpCeiling(ctx context.Context, workers int, d time.Duration) float64 {
	h.rc.reset(false)
	n, took := ceilingLoad(ctx, h.rc.url+"/ceiling", h.ceilingBody(), workers, d)
	return float64(n) / took.Seconds()
}

// httpCeilingProc is httpCeiling with the client in a process of its own,
// as walhook is: this bench's binary with bench-helper ceiling-client.
func (h *harness) httpCeilingProc(ctx context.Context, workers int, d time.Duration) (float64, error) {
	path, err := h.ceilingBodyFile()
	if err != nil {
		return 0, err
	}
	h.rc.reset(false)
	out, err := exec.CommandContext(ctx, h.o.SelfExe, HelperCommand, "ceiling-client", "-url", h.rc.url+"/ceiling", "-body", path,
		"-concurrency", strconv.Itoa(workers), "-duration", d.String()).Output()
	if err != nil {
		return 0, fmt.Errorf("ceiling client: %w", err)
	}
	var r struct{ Requests, Seconds float64 }
	if err := json.Unmarshal(out, &r); err != nil || r.Seconds <= 0 {
		return 0, fmt.Errorf("ceiling client printed %q: %v", out, err)
	}
	return r.Requests / r.Seconds, nil
}

// ceilingBody is walhook's body or, before walhook ran, one of its shape
// and size.
func (h *harness) ceilingBody() []byte {
	if h.sample != nil {
		return h.sample
	}
	return h.bodyLike()
}

// ceilingBodyFile writes ceilingBody to a file for the client processes.
func (h *harness) ceilingBodyFile() (string, error) {
	path := filepath.Join(h.tmp, "ceiling-body")
	return path, os.WriteFile(path, h.ceilingBody(), 0o600)
}

// ceilingClient is bench-helper ceiling-client: the ceiling's load from this process,
// printed as JSON.
func ceilingClient(ctx context.Context, url, bodyPath string, workers int, d time.Duration, stdout io.Writer) error {
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		return err
	}
	n, took := ceilingLoad(ctx, url, body, workers, d)
	return json.NewEncoder(stdout).Encode(map[string]float64{"requests": float64(n), "seconds": took.Seconds()})
}

// ceilingLoad sends body to url from workers goroutines for d, with
// walhook's headers and signature, and counts the 2xx answers.
func ceilingLoad(ctx context.Context, url string, body []byte, workers int, d time.Duration) (int64, time.Duration) {
	c := newCeilingSender(url, body, workers)
	defer c.close()
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				if c.send(ctx, fmt.Sprintf("%016X-%08X", w, i), i) {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return n.Load(), time.Since(start)
}

// ceilingSender is the ceilings' client: a keep-alive transport with as
// many idle connections as workers, as walhook's.
type ceilingSender struct {
	url       string
	body, key []byte
	t         *http.Transport
	client    *http.Client
}

func newCeilingSender(url string, body []byte, workers int) *ceilingSender {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = workers
	return &ceilingSender{url: url, body: body, key: []byte("bench-secret-bench-secret"), t: t, client: &http.Client{Transport: t}}
}

func (c *ceilingSender) close() { c.t.CloseIdleConnections() }

// send posts the body as delivery id of entity i, with walhook's headers
// and signature, and reports a 2xx answer.
func (c *ceilingSender) send(ctx context.Context, id string, i int) bool {
	req, _ := http.NewRequestWithContext(ctx, "POST", c.url, bytes.NewReader(c.body))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(c.body)
	hd := req.Header
	hd.Set("Content-Type", "application/json")
	hd.Set("User-Agent", "walhook/bench")
	hd.Set("Webhook-Id", id)
	hd.Set("Webhook-Timestamp", ts)
	hd.Set("Webhook-Signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	hd.Set("X-Walhook-Event", "bench.create")
	hd.Set("X-Walhook-Event-Id", id)
	hd.Set("X-Walhook-Webhook", "ceiling")
	hd.Set("X-Walhook-Entity-Id", strconv.Itoa(i))
	hd.Set("X-Walhook-Attempt", "1")
	resp, err := c.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

// pipelineFloor is walhook's work without walhook: a bare pglogrepl
// reader on slot and the ceiling's client, in a process of their own
// (bench-helper pipeline-client), posting each insert once per webhook from
// -concurrency workers per webhook, with no store, no matching and no
// body built. It returns requests/s from the first 2xx to the last, as
// the end to end is measured: the most any walhook could reach on this
// machine.
func (h *harness) pipelineFloor(ctx context.Context, slot string, want, webhooks int) (float64, error) {
	path, err := h.ceilingBodyFile()
	if err != nil {
		return 0, err
	}
	h.rc.reset(false)
	out, err := exec.CommandContext(ctx, h.o.SelfExe, HelperCommand, "pipeline-client", "-url", h.rc.url+"/pipeline", "-body", path,
		"-dsn", h.dsn, "-slot", slot, "-changes", strconv.Itoa(want),
		"-webhooks", strconv.Itoa(webhooks), "-concurrency", strconv.Itoa(h.o.Concurrency)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pipeline client: %w: %s", err, out)
	}
	total := want * webhooks
	if n := h.rc.count(); n < total {
		return 0, fmt.Errorf("pipeline client: %d of %d requests answered 2xx", n, total)
	}
	first, last := h.rc.firstAt(), h.rc.lastAt()
	if !last.After(first) {
		return 0, errors.New("pipeline client: no time between the first and the last request")
	}
	return float64(total-1) / last.Sub(first).Seconds(), nil
}

// pipelineClient is bench-helper pipeline-client: every insert on slot, read by a bare
// pglogrepl reader, is posted once per webhook by workers goroutines per
// webhook.
func pipelineClient(ctx context.Context, url, bodyPath, dsn, slot string, workers, webhooks, want int) error {
	body, err := os.ReadFile(bodyPath)
	if err != nil {
		return err
	}
	c := newCeilingSender(url, body, workers*webhooks)
	defer c.close()
	jobs := make(chan int, 4*workers*webhooks)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range workers * webhooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				i := j / webhooks
				if !c.send(ctx, fmt.Sprintf("%d-%d", j%webhooks, i), i) {
					failed.Add(1)
				}
			}
		}()
	}
	err = streamInserts(ctx, dsn, slot, want, func(i int) {
		for h := range webhooks {
			jobs <- i*webhooks + h
		}
	})
	close(jobs)
	wg.Wait()
	if err != nil {
		return err
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d requests failed", n)
	}
	return nil
}
