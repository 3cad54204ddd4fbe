package store

// SetFindScan changes the bound of the deliveries one Find reads, for a
// test; restore puts it back.
func SetFindScan(n int) (restore func()) {
	was := findScan
	findScan = n
	return func() { findScan = was }
}

// SetFillChunk changes the rows a migration fills per statement, for a
// test; restore puts it back.
func SetFillChunk(n int) (restore func()) {
	was := fillChunk
	fillChunk = n
	return func() { fillChunk = was }
}

// SetPruneSweep changes how often a prune reads all of a webhook's
// successes, for a test; restore puts it back.
func SetPruneSweep(n int) (restore func()) {
	was := pruneSweep
	pruneSweep = n
	return func() { pruneSweep = was }
}
