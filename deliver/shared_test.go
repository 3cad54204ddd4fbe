package deliver_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/deliver"
	"walhook/deliver/store"
)

// TestOwnPartitions: a Queue on a store it shares (Options.Shared) sends
// nothing until it is given partitions, then the deliveries of those only;
// given them all, it sends the rest; taking some away again while
// requests are under way loses none. Every entity's deliveries arrive in
// commit order throughout.
func TestOwnPartitions(t *testing.T) {
	rc := newReceiver(t, func(received, int) (int, http.Header, string) {
		time.Sleep(2 * time.Millisecond) // requests under way when the partitions change
		return 200, nil, "ok"
	})
	e := newEnv(t, []string{"h"}, func(o *deliver.Options) { o.Shared = true })
	e.setHooks(t, hook("h", rc.URL))
	const entities, rounds = 40, 5
	half := store.Parts(1<<(store.Partitions/2) - 1)
	inHalf := 0
	for id := range entities {
		if half.Has(store.PartOf(itoa(int64(id)))) {
			inHalf++
		}
	}
	if inHalf == 0 || inHalf == entities {
		t.Fatalf("%d of %d entity ids in the first half of the partitions: the test needs both halves", inHalf, entities)
	}
	lsn := uint64(0x1000)
	write := func(round int) {
		var evs []cdc.Event
		for id := range entities {
			evs = append(evs, event(lsn, uint32(id), int64(id), fmt.Sprint("v", round)))
		}
		e.write(t, txOf(lsn, evs...))
		lsn += 0x100
	}
	for round := range rounds {
		write(round)
	}
	waitFor(t, 10*time.Second, "the changes stored", func() bool { return e.q.Durable() >= lsn-0x100+1 })
	if n := rc.count(); n != 0 {
		t.Fatalf("%d requests before the Queue was given any partition", n)
	}

	e.q.Own(half)
	waitFor(t, 10*time.Second, "the first half's deliveries", func() bool { return rc.count() >= inHalf*rounds })
	e.q.Own(half) // no change: nothing restarts
	for _, r := range rc.requests() {
		if id := entityOf(t, r); !half.Has(store.PartOf(id)) {
			t.Errorf("entity %s (partition %d) was sent while the Queue held the first half only", id, store.PartOf(id))
		}
	}

	e.q.Own(store.AllParts)
	for round := rounds; round < 2*rounds; round++ {
		write(round)
		if round == rounds+2 {
			e.q.Own(half) // while the second half's requests are under way
			e.q.Own(store.AllParts)
		}
	}
	want := entities * 2 * rounds
	waitFor(t, 20*time.Second, "every delivery", func() bool { return distinct(rc) == want })
	last := map[string]int{}
	for _, r := range rc.requests() {
		id, v := entityOf(t, r), versionOf(t, r)
		if v < last[id] {
			t.Errorf("entity %s: v%d arrived after v%d", id, v, last[id])
		}
		last[id] = max(last[id], v)
	}
}

// distinct counts the distinct events received (a request aborted by a
// change of partitions goes out again under the same id).
func distinct(rc *receiver) int {
	seen := map[string]bool{}
	for _, r := range rc.requests() {
		seen[r.Header.Get("Webhook-Id")] = true
	}
	return len(seen)
}

func entityOf(t *testing.T, r received) string {
	t.Helper()
	var p struct {
		EntityID string `json:"entity_id"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	return p.EntityID
}

func versionOf(t *testing.T, r received) int {
	t.Helper()
	var p struct {
		Data struct{ Email string } `json:"data"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	var v int
	fmt.Sscanf(p.Data.Email, "v%d", &v)
	return v
}
