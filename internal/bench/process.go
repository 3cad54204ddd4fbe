package bench

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The walhook under test: its config, its process, what it reports on
// its admin port and what /proc says of its memory and CPU.

// webhook is one webhook of a walhook under test.
type webhook struct {
	name, path string
	timeoutMS  int
	retryMode  string
	when       string // a CEL filter, none when empty
	batchSize  int    // events per request; 0 or 1: one
	batchWait  int    // batch_wait_ms, with batchSize > 1
}

// process is a walhook subprocess.
type process struct {
	cmd   *exec.Cmd
	dir   string
	admin string
	token string
	done  chan struct{}
	anon  atomic.Int64 // peak RssAnon in kB, sampled every 50 ms
}

// writeConfig writes the config of a walhook on slot with hooks to a
// folder of its own, with a free admin port and a new token, and its
// queue in a bbolt file there.
func (h *harness) writeConfig(name, slot string, hooks []webhook) (dir, admin, token string, err error) {
	return h.writeConfigOn(name, slot, "", hooks)
}

// writeConfigOn is writeConfig with the queue in schema of the bench's
// store database when schema is set (-store postgres).
func (h *harness) writeConfigOn(name, slot, schema string, hooks []webhook) (dir, admin, token string, err error) {
	dir = filepath.Join(h.tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", "", err
	}
	admin = ln.Addr().String()
	ln.Close()
	token = randomText(24)
	var sb strings.Builder
	fmt.Fprintf(&sb, "[postgres]\ndsn = %q\nslot = %q\npublication = \"bench\"\nmanage_publication = false\n", h.dsn, slot)
	fmt.Fprintf(&sb, "[store]\ndir = \"data\"\n")
	if schema != "" {
		fmt.Fprintf(&sb, "kind = \"postgres\"\ndsn = %q\nschema = %q\n", h.storeDSN, schema)
	}
	fmt.Fprintf(&sb, "[log]\ndir = \"logs\"\n[admin]\nlisten = %q\ntoken = %q\n", admin, token)
	for _, wh := range hooks {
		fmt.Fprintf(&sb, "[[webhook]]\nname = %q\nurl = %q\nevents = [\"public.bench\"]\nsecret = \"whsec_%s\"\ntimeout_ms = %d\nretry_mode = %q\nmax_attempts = 8\n",
			wh.name, h.rc.url+wh.path, base64.StdEncoding.EncodeToString([]byte("bench-secret-bench-secret")), wh.timeoutMS, wh.retryMode)
		if wh.when != "" {
			fmt.Fprintf(&sb, "when = %q\n", wh.when)
		}
		if wh.batchSize > 1 {
			fmt.Fprintf(&sb, "batch_size = %d\nbatch_wait_ms = %d\n", wh.batchSize, wh.batchWait)
		}
	}
	return dir, admin, token, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(sb.String()), 0o600)
}

// startWalhook runs walhook with its config in dir and waits until it is
// ready; phase names the CPU profile.
func (h *harness) startWalhook(ctx context.Context, dir, admin, token, phase string) (*process, error) {
	return h.startWalhookUntil(ctx, dir, admin, token, phase, "/readyz")
}

// startWalhookUntil is startWalhook waiting until ready answers 200: a
// standby on a PostgreSQL store answers /healthz but never /readyz.
func (h *harness) startWalhookUntil(ctx context.Context, dir, admin, token, phase, ready string) (*process, error) {
	args := []string{HelperCommand, "serve", "-config", filepath.Join(dir, "config.toml"), "-concurrency", strconv.Itoa(h.o.Concurrency)}
	if h.o.CPUProfile != "" {
		args = append(args, "-cpuprofile", h.o.CPUProfile+"."+phase)
	}
	if h.o.MemProfile != "" {
		args = append(args, "-memprofile", h.o.MemProfile+"."+phase)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "walhook.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(h.o.Exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	h.rc.watch(cmd.Process.Pid)
	p := &process{cmd: cmd, dir: dir, admin: admin, token: token, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	go p.sampleAnon()
	deadline := time.Now().Add(30 * time.Second)
	for p.get(ready) != http.StatusOK {
		select {
		case <-p.done:
			return nil, fmt.Errorf("walhook exited: %s", p.logTail())
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("walhook not ready after 30s: %s", p.logTail())
		}
	}
	return p, nil
}

func (p *process) request(path string) (*http.Response, error) {
	return p.call("GET", path)
}

func (p *process) call(method, path string) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+p.admin+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	return http.DefaultClient.Do(req)
}

// pendingSample is the start of a webhook's pending deliveries, with their
// attempts: what a stalled drain was waiting for.
func (p *process) pendingSample(hook string) string {
	resp, err := p.request("/api/webhooks/" + hook + "/deliveries?status=pending&limit=3")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return string(b)
}

func (p *process) get(path string) int {
	resp, err := p.request(path)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// queued is walhook_queue_depth of a webhook, -1 when unknown.
func (p *process) queued(hook string) int {
	resp, err := p.request("/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	want := `walhook_queue_depth{webhook="` + hook + `"} `
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return -1
			}
			return int(f)
		}
	}
	return -1
}

// rssMB is the process's peak resident set (VmHWM) in MB. It counts the
// pages of the store's memory map walhook touched, which the kernel can
// drop at will, as well as its heap: anonMB tells them apart.
func (p *process) rssMB() float64 { return float64(p.status("VmHWM")) / 1024 }

// anonMB is the peak of the anonymous resident memory (heap, stacks) seen.
func (p *process) anonMB() float64 {
	return float64(max(p.anon.Load(), p.status("RssAnon"))) / 1024
}

func (p *process) sampleAnon() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			if kb := p.status("RssAnon"); kb > p.anon.Load() {
				p.anon.Store(kb)
			}
		}
	}
}

// status is a kB field of /proc/<pid>/status, 0 when unknown.
func (p *process) status(field string) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// stop ends walhook gracefully (SIGTERM), killing it after a minute.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.kill()
	}
}

func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *process) logTail() string {
	raw, _ := os.ReadFile(filepath.Join(p.dir, "walhook.log"))
	if len(raw) > 2000 {
		raw = raw[len(raw)-2000:]
	}
	return strings.TrimSpace(string(raw))
}

// oneHook is the single webhook of the latency and big-transaction phases.
var oneHook = []webhook{{name: "h1", path: "/h1", timeoutMS: 10000, retryMode: "production"}}

// launch writes a config for phase and starts walhook on slot with a reset
// receiver; keepLatency makes the receiver record commit → receipt times.
func (h *harness) launch(ctx context.Context, phase, slot string, hooks []webhook, keepLatency bool) (*process, error) {
	return h.launchOn(ctx, phase, slot, "", hooks, keepLatency)
}

// launchOn is launch with the queue in schema of the store database when
// schema is set.
func (h *harness) launchOn(ctx context.Context, phase, slot, schema string, hooks []webhook, keepLatency bool) (*process, error) {
	dir, admin, token, err := h.writeConfigOn(phase, slot, schema, hooks)
	if err != nil {
		return nil, err
	}
	h.rc.reset(keepLatency)
	return h.startWalhook(ctx, dir, admin, token, phase)
}

// cpuSeconds is the user and system CPU time walhook used so far.
func (p *process) cpuSeconds() float64 {
	s, _ := procCPUSeconds(p.cmd.Process.Pid)
	return s
}

// waitReceived waits until n distinct deliveries came, a batch counting
// as its events.
func (h *harness) waitReceived(ctx context.Context, p *process, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for h.rc.count() < n {
		select {
		case <-p.done:
			return fmt.Errorf("walhook exited after %d of %d deliveries: %s", h.rc.count(), n, p.logTail())
		case <-ctx.Done():
			p.kill()
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("only %d of %d deliveries after %s: %s", h.rc.count(), n, timeout, p.logTail())
		}
	}
	return nil
}
