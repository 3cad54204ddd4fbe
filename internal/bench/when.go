package bench

import (
	"context"
	"fmt"
	"time"
)

// -when: what a webhook's `when` filter costs. The same workload is sent
// to walhook with no filter, with a three-clause filter every row passes
// and with one every row fails at its last clause, in the order none,
// pass, reject, reject, pass, none, so that a drift of the machine's
// speed within the run weighs on each the same.

// whenMarker is the payload of the last row of each run, which both
// filters pass: its delivery says walhook has read every row before it.
const whenMarker = "walhook bench: the last row"

// The filters -when measures: three clauses each, all three evaluated
// for every row of the workload.
const (
	WhenPass   = `action == 'create' && new.id > 0 && new.payload != ''`
	WhenReject = `action == 'create' && new.id > 0 && new.payload == '` + whenMarker + `'`
)

// whenPhase runs walhook once per filter and order and records its CPU
// per event read.
func (h *harness) whenPhase(ctx context.Context, res *Result) error {
	filters := map[string]string{"none": "", "pass": WhenPass, "reject": WhenReject}
	sum := map[string]float64{}
	for _, name := range []string{"none", "pass", "reject", "reject", "pass", "none"} {
		h.logf("when: %s", name)
		cpu, err := h.whenRun(ctx, name, filters[name])
		if err != nil {
			return fmt.Errorf("when %s: %w", name, err)
		}
		res.WhenRunsCPU = append(res.WhenRunsCPU, cpu)
		sum[name] += cpu / 2
	}
	res.WhenEvents = h.o.Changes + 1
	res.WhenNoneCPU, res.WhenPassCPU, res.WhenRejectCPU = sum["none"], sum["pass"], sum["reject"]
	res.WhenFilterShare = (res.WhenPassCPU - res.WhenNoneCPU) / res.WhenNoneCPU
	res.WhenRejectRatio = res.WhenRejectCPU / res.WhenNoneCPU
	return nil
}

// whenRun starts walhook with one webhook filtered by when (none when
// empty) on a new slot, writes -changes rows and the marker once it is
// ready, and returns its CPU µs per event from ready to the marker's
// delivery, its start left out.
func (h *harness) whenRun(ctx context.Context, name, when string) (float64, error) {
	slot := h.slotName()
	if err := h.createSlot(ctx, slot); err != nil {
		return 0, err
	}
	defer h.dropSlot(ctx, slot)
	hooks := []webhook{{name: "hw", path: "/hw", timeoutMS: 10000, retryMode: "production", when: when}}
	p, err := h.launch(ctx, "when-"+name+"-"+slot, slot, hooks, false)
	if err != nil {
		return 0, err
	}
	defer p.stop()
	cpu0 := p.cpuSeconds()
	n := h.o.Changes
	if _, err := h.insert(ctx, n, h.o.TxSize, 8, 0); err != nil {
		return 0, err
	}
	if err := h.insertMarker(ctx); err != nil {
		return 0, err
	}
	want := n + 1
	if when == WhenReject {
		want = 1
	}
	if err := h.waitReceived(ctx, p, want, time.Duration(n/200+60)*time.Second); err != nil {
		return 0, err
	}
	return (p.cpuSeconds() - cpu0) * 1e6 / float64(n+1), nil
}

// insertMarker writes one row with the marker payload.
func (h *harness) insertMarker(ctx context.Context) error {
	id := h.nextID
	h.nextID++
	return h.exec(ctx, fmt.Sprintf(`INSERT INTO bench (id, payload) VALUES (%d, '%s')`, id, whenMarker))
}
