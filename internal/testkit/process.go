package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// build is walhook's binary, built once per test binary.
var build struct {
	sync.Once
	path string
	err  error
}

// Walhook builds walhook's binary (the module's root package) once per test
// binary and returns its path; a package's tests anywhere in the module may
// run it.
func Walhook(t testing.TB) string {
	t.Helper()
	build.Do(func() {
		dir, err := os.MkdirTemp("", "walhook-bin-")
		if err != nil {
			build.err = err
			return
		}
		build.path = filepath.Join(dir, "walhook")
		out, err := exec.Command("go", "build", "-o", build.path, "walhook").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// Process is a program the test runs as a child process, its output
// appended to a log file. It may be killed and started again; the test's
// end kills it and, when the test failed, logs the tail of the file.
type Process struct {
	t    testing.TB
	path string
	args []string
	env  []string // added to the test's environment
	log  *os.File
	cmd  *exec.Cmd
}

// StartProcess starts path with args and env added to the test's
// environment, its output appended to logPath.
func StartProcess(t testing.TB, logPath string, env []string, path string, args ...string) *Process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, path: path, args: args, env: env, log: f}
	p.Start()
	t.Cleanup(func() {
		p.Kill()
		f.Close()
		if t.Failed() {
			raw, _ := os.ReadFile(logPath)
			if len(raw) > 6000 {
				raw = raw[len(raw)-6000:]
			}
			t.Logf("%s's log (tail):\n%s", filepath.Base(path), raw)
		}
	})
	return p
}

// Start starts the program again, after Kill or its exit.
func (p *Process) Start() {
	p.t.Helper()
	p.cmd = exec.Command(p.path, p.args...)
	if p.env != nil {
		p.cmd.Env = append(os.Environ(), p.env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

// Kill kills the program with SIGKILL, unless it has ended, and waits for
// its end.
func (p *Process) Kill() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// Signal sends sig to the program.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the program to end and returns how it ended.
func (p *Process) Wait() error { return p.cmd.Wait() }

// Pid is the program's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// ProcessCPU is this process's user and system CPU time so far: what a
// benchmark measures on a shared machine, where wall time says little.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
