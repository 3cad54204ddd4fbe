package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// HelperCommand is the hidden walhook subcommand the bench runs its
// subprocesses with; no usage text names it.
const HelperCommand = "bench-helper"

// Serve runs walhook with the config file at path and concurrency workers
// per webhook until ctx ends. main passes it to Helper: building a walhook
// from its config is main's job.
type Serve func(ctx context.Context, path string, concurrency int) error

// Helper is `walhook bench-helper KIND [flags]`, as the bench runs it:
// serve is the walhook under test, with its profiles; ceiling-client is
// the HTTP ceiling's client in a process of its own; pipeline-client is
// the no-store floor. Its flags are the bench's, not the user's.
func Helper(ctx context.Context, args []string, stdout, stderr io.Writer, serve Serve) error {
	if len(args) == 0 {
		return errors.New(HelperCommand + ": want serve, ceiling-client or pipeline-client")
	}
	fs := flag.NewFlagSet(HelperCommand+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	concurrency := fs.Int("concurrency", 16, "workers per webhook")
	switch args[0] {
	case "serve":
		config := fs.String("config", "", "the config file of the walhook to run")
		cpuprofile := fs.String("cpuprofile", "", "write the CPU profile to FILE")
		memprofile := fs.String("memprofile", "", "write the heap profile at the peak to FILE, and at the end to FILE.end")
		if err := parseHelperFlags(fs, args[1:]); err != nil {
			return err
		}
		return serveProfiled(ctx, *config, *concurrency, *cpuprofile, *memprofile, serve)
	case "ceiling-client":
		url := fs.String("url", "", "where to send the load")
		body := fs.String("body", "", "the file with the body to send")
		d := fs.Duration("duration", 10*time.Second, "how long to send")
		if err := parseHelperFlags(fs, args[1:]); err != nil {
			return err
		}
		return ceilingClient(ctx, *url, *body, *concurrency, *d, stdout)
	case "pipeline-client":
		url := fs.String("url", "", "where to send the requests")
		body := fs.String("body", "", "the file with the body to send")
		dsn := fs.String("dsn", "", "the database to stream")
		slot := fs.String("slot", "", "the slot to stream")
		changes := fs.Int("changes", 20000, "inserts to read")
		webhooks := fs.Int("webhooks", 4, "requests per insert")
		if err := parseHelperFlags(fs, args[1:]); err != nil {
			return err
		}
		return pipelineClient(ctx, *url, *body, *dsn, *slot, *concurrency, *webhooks, *changes)
	default:
		return fmt.Errorf("%s: unknown helper %q", HelperCommand, args[0])
	}
}

func parseHelperFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// serveProfiled runs serve with the CPU profile and the heap profiles
// asked for.
func serveProfiled(ctx context.Context, path string, concurrency int, cpuprofile, memprofile string, serve Serve) error {
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if memprofile != "" {
		stop := make(chan struct{})
		defer close(stop)
		go peakHeapProfile(memprofile, stop)
		// Allocations are cumulative: the profile at exit covers the phase.
		defer writeHeapProfile(memprofile + ".end")
	}
	return serve(ctx, path, concurrency)
}

// peakHeapProfile rewrites the heap profile at path whenever the heap in
// use grows a tenth past its largest yet, so the file ends up describing
// the peak.
func peakHeapProfile(path string, stop <-chan struct{}) {
	var peak uint64
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse < peak+peak/10 {
			continue
		}
		peak = ms.HeapInuse
		writeHeapProfile(path)
	}
}

// writeHeapProfile writes the heap profile to path, if it can.
func writeHeapProfile(path string) {
	if f, err := os.Create(path); err == nil {
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
}
