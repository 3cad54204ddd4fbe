package bench

import (
	"math"
	"testing"
)

// TestBatchFloor: CPU per event made of 20 µs per event and 40 µs per
// request is split back into them from the largest size's mean batch,
// whatever order the sizes ran in; figures that do not allow it give none.
func TestBatchFloor(t *testing.T) {
	cpu := func(perRequest float64) float64 { return 20 + 40/perRequest }
	res := &Result{
		BatchUnbatchedMeanSteadyCPU: cpu(1),
		BatchRuns: []BatchRun{
			{Size: 1000, SteadyCPU: cpu(800), EventsPerRequest: 800},
			{Size: 10, SteadyCPU: cpu(10), EventsPerRequest: 10},
		},
	}
	perEvent, perRequest, size := batchFloor(res)
	if math.Abs(perEvent-20) > 1e-9 || math.Abs(perRequest-40) > 1e-9 || size != 1000 {
		t.Errorf("batchFloor = %v µs per event, %v per request, from size %d; want 20, 40, 1000", perEvent, perRequest, size)
	}
	res.BatchRuns[0].SteadyCPU = 70 // more than unbatched: no split
	if perEvent, perRequest, _ := batchFloor(res); perEvent != 0 || perRequest != 0 {
		t.Errorf("batchFloor of a batch dearer than unbatched = %v, %v; want none", perEvent, perRequest)
	}
	if perEvent, _, _ := batchFloor(&Result{BatchUnbatchedMeanSteadyCPU: 60}); perEvent != 0 {
		t.Errorf("batchFloor without batch runs = %v; want none", perEvent)
	}
}
