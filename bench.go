package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"walhook/internal/bench"
)

// benchCommand is walhook bench: its flags; internal/bench does the rest.
func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := bench.Options{}
	fs.IntVar(&o.Changes, "changes", 20000, "rows inserted for the throughput phases")
	fs.IntVar(&o.TxSize, "tx-size", 10, "rows per transaction")
	fs.IntVar(&o.Webhooks, "webhooks", 4, "webhooks on the same table in the second end-to-end phase")
	fs.IntVar(&o.RowWidth, "row-width", 300, "bytes of payload text per row")
	fs.DurationVar(&o.Latency, "latency", 0, "the receiver's delay per request")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "workers per webhook")
	fs.IntVar(&o.Rate, "rate", 2000, "changes/s offered in the latency phase")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "length of the latency phase")
	fs.IntVar(&o.Backlog, "backlog", 10000, "deliveries queued with the receiver down, then drained after a restart (0: skip)")
	fs.IntVar(&o.BigTx, "big-tx", 0, "rows of one big transaction (0: skip)")
	fs.IntVar(&o.Backfill, "backfill", 0, "rows added to the table before a backfill of it runs under the latency load (0: skip)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write walhook's CPU profile of each phase to FILE.<phase>")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write walhook's heap profile at the peak of each phase to FILE.<phase>")
	fs.StringVar(&o.Store, "store", "", "postgres: also run the end-to-end, latency and backlog phases with walhook's queue in PostgreSQL (another database of the bench's cluster), beside bbolt's")
	fs.IntVar(&o.Instances, "instances", 0, "with -store postgres: deliveries/s of 1 to N walhooks on one store, the receiver taking 50ms (0: skip)")
	fs.BoolVar(&o.When, "when", false, "CPU per event with no when filter, one that passes and one that rejects")
	fs.Func("batch", "also 1 webhook with each batch_size of `SIZES` (a list: 10,100) on the same changes (events/s, CPU per event, against the decode ceiling and the unbatched run), and the latency load with the largest and batch_wait_ms 20", func(v string) error {
		o.Batch = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return fmt.Errorf("a size %q: %w", f, err)
			}
			o.Batch = append(o.Batch, n)
		}
		return nil
	})
	fs.StringVar(&o.Exe, "exe", "", "the walhook binary to measure (default: this one), to compare builds under the same harness")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return errUsage
	}
	res, err := bench.Run(ctx, o, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	bench.Print(stdout, o, res)
	return nil
}

// benchHelperCommand is the hidden walhook bench-helper that walhook
// bench runs its subprocesses with. Its serve is `walhook run` with the
// bench's worker count and warnings only.
func benchHelperCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Helper(ctx, args, stdout, stderr, func(ctx context.Context, path string, concurrency int) error {
		cfg, err := LoadConfig(path)
		if err != nil {
			return err
		}
		logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		return serve(ctx, path, cfg, logger, concurrency)
	})
}
