package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// -batch: walhook with one webhook that batches (issue 18), beside the
// unbatched figures of the same run. Each size reads the same changes as
// the end to end above, from a slot of its own, with batch_wait_ms = 0
// (what is ready goes: under this backlog batches are full); then the
// unbatched webhook again and the decode ceiling again, so that a drift
// of the machine's speed weighs on both sides of each ratio; then the
// latency load with the largest size and BatchLatencyWaitMS.

// BatchLatencyWaitMS is the batch_wait_ms of -batch's latency phase, the
// issue's.
const BatchLatencyWaitMS = 20

// batchSlots are -batch's slots, made with the throughput phases' before
// the workload is written: one per size, the unbatched rerun's and the
// second decode ceiling's.
type batchSlots struct {
	sizes           []string
	unbatched, read string
}

// batchHook is -batch's one webhook.
func batchHook(size, waitMS int) []webhook {
	return []webhook{{name: "hb1", path: "/hb1", timeoutMS: 10000, retryMode: "production", batchSize: size, batchWait: waitMS}}
}

// newBatchSlots names -batch's slots, none when o asks for no batches.
func (h *harness) newBatchSlots() batchSlots {
	var s batchSlots
	if len(h.o.Batch) == 0 {
		return s
	}
	for range h.o.Batch {
		s.sizes = append(s.sizes, h.slotName())
	}
	s.unbatched, s.read = h.slotName(), h.slotName()
	return s
}

// names are every slot of s.
func (s batchSlots) names() []string {
	if len(s.sizes) == 0 {
		return nil
	}
	return append(slices.Clone(s.sizes), s.unbatched, s.read)
}

// batchThroughput runs walhook with each batch size, then unbatched again,
// then the decode ceiling again, and the ratios to their means with the
// first runs (res's e2e_cpu_us_per_event, decode_ceiling_eps).
func (h *harness) batchThroughput(ctx context.Context, res *Result, s batchSlots) error {
	o := h.o
	for i, size := range o.Batch {
		h.logf("walhook end to end, 1 webhook, batch_size %d", size)
		r, err := h.endToEndWith(ctx, fmt.Sprintf("e2e1-batch%d", size), s.sizes[i], "", batchHook(size, 0), o.Changes)
		if err != nil {
			return fmt.Errorf("end to end, batch_size %d: %w", size, err)
		}
		res.BatchRuns = append(res.BatchRuns, BatchRun{
			Size: size, EPS: r.rate, CPU: r.cpuUS, SteadyCPU: r.steadyCPUUS,
			EventsPerRequest: float64(o.Changes) / float64(max(1, h.rc.requests())),
		})
		res.BatchPeakRSSMB = max(res.BatchPeakRSSMB, r.rssMB)
	}
	h.logf("walhook end to end, 1 webhook, unbatched again")
	r, err := h.endToEndWith(ctx, "e2e1-unbatched", s.unbatched, "", batchHook(1, 0), o.Changes)
	if err != nil {
		return fmt.Errorf("end to end, unbatched after the batches: %w", err)
	}
	res.BatchUnbatchedEPS, res.BatchUnbatchedCPU, res.BatchUnbatchedSteadyCPU = r.rate, r.cpuUS, r.steadyCPUUS
	h.logf("decode ceiling again")
	if res.BatchDecodeAfterEPS, err = h.decodeCeiling(ctx, s.read, o.Changes); err != nil {
		return fmt.Errorf("decode ceiling after the batches: %w", err)
	}
	h.dropSlot(ctx, s.read)
	res.BatchDecodeMeanEPS = (res.DecodeCeilingEPS + res.BatchDecodeAfterEPS) / 2
	res.BatchUnbatchedMeanCPU = (res.E2ECPU + res.BatchUnbatchedCPU) / 2
	res.BatchUnbatchedMeanSteadyCPU = (res.E2ESteadyCPU + res.BatchUnbatchedSteadyCPU) / 2
	for i := range res.BatchRuns {
		b := &res.BatchRuns[i]
		b.RatioDecode = b.EPS / res.BatchDecodeMeanEPS
		b.RatioCPU = b.CPU / res.BatchUnbatchedMeanCPU
		b.RatioSteadyCPU = b.SteadyCPU / res.BatchUnbatchedMeanSteadyCPU
	}
	res.BatchFloorCPU, res.BatchRequestCPU, res.BatchFloorFrom = batchFloor(res)
	return nil
}

// batchFloor splits CPU per event after the first 2xx into what every
// event costs, batched or not, and what a request costs, from the
// unbatched mean and the largest batch size's run, with the mean batch it
// made: cpu = perEvent + perRequest / events per request. It returns
// zeros when the figures do not allow it.
func batchFloor(res *Result) (perEvent, perRequest float64, size int) {
	if len(res.BatchRuns) == 0 || res.BatchUnbatchedMeanSteadyCPU <= 0 {
		return 0, 0, 0
	}
	big := slices.MaxFunc(res.BatchRuns, func(a, b BatchRun) int { return cmp.Compare(a.Size, b.Size) })
	n := big.EventsPerRequest
	if n <= 1 || big.SteadyCPU <= 0 {
		return 0, 0, 0
	}
	perRequest = (res.BatchUnbatchedMeanSteadyCPU - big.SteadyCPU) / (1 - 1/n)
	perEvent = big.SteadyCPU - perRequest/n
	if perRequest <= 0 || perEvent <= 0 {
		return 0, 0, 0
	}
	return perEvent, perRequest, big.Size
}

// batchLatency is the latency phase with the largest batch size and
// BatchLatencyWaitMS: commit → 2xx of each event in each batch.
func (h *harness) batchLatency(ctx context.Context, res *Result) error {
	size := slices.Max(h.o.Batch)
	h.logf("latency at %d changes/s for %s, batch_size %d, batch_wait_ms %d", h.o.Rate, h.o.Duration, size, BatchLatencyWaitMS)
	r, err := h.latencyWith(ctx, "latency-batch", "", batchHook(size, BatchLatencyWaitMS))
	if err != nil {
		return fmt.Errorf("latency, batch_size %d: %w", size, err)
	}
	res.BatchLatencySize, res.BatchLatencyWaitMS = size, BatchLatencyWaitMS
	res.BatchOfferedEPS, res.BatchP50MS, res.BatchP99MS, res.BatchP999MS = r.offered, r.p50, r.p99, r.p999
	res.BatchLatencyEventsPerRequest = float64(h.rc.count()) / float64(max(1, h.rc.requests()))
	res.BatchPeakRSSMB = max(res.BatchPeakRSSMB, r.rssMB)
	return nil
}
