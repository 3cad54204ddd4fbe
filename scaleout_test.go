package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"walhook/admin"
	"walhook/deliver/store"
	"walhook/internal/testkit"
)

// TestSharedStore: two walhooks share a store in PostgreSQL. Both deliver
// (each its share of the partitions, the non-leader's requests counted in
// its own metrics); a webhook created through one's admin API appears on
// the other; the stats of a webhook read the same on both; and when the
// walhook that does not lead is SIGKILLed with deliveries pending in its
// partitions, the leader takes them once their leases run out: every
// change arrives, in order per row, a repeat only under the same id.
func TestSharedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 6,000 changes through two walhooks")
	}
	ctx := context.Background()
	dsn := itemsDatabase(t)
	storeDSN := newDatabase(t)
	rc := newKeyRecorder(nil)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // a backlog builds up in every partition
		rc.serve(w, r)
	}))
	t.Cleanup(slow.Close)
	var procs []*process
	var admins []string
	for i := range 2 {
		admin := freeAddr(t)
		cfg := crashConfig(t, dsn, slow.URL, admin)
		appendFile(t, cfg, pgStoreSection(storeDSN, "walhook"))
		procs = append(procs, startProcess(t, filepath.Join(t.TempDir(), fmt.Sprint("walhook", i, ".log")), "run", "-config", cfg))
		admins = append(admins, admin)
	}
	leader, other := -1, -1
	var otherID string
	waitFor(t, "two walhooks, 16 partitions each, one leading", time.Minute, func() bool {
		leader, other = -1, -1
		for i, a := range admins {
			o, ok := overviewOf(a)
			if !ok || len(o.Instances) != 2 || o.Instances[0].Parts != 16 || o.Instances[1].Parts != 16 || httpStatus("http://"+a+"/readyz") != 200 {
				return false
			}
			if *o.Leader {
				leader = i
			} else {
				other = i
				for _, in := range o.Instances {
					if !in.Leader {
						otherID = in.ID
					}
				}
			}
		}
		return leader >= 0 && other >= 0 && otherID != ""
	})

	// An API webhook made on one is on the other.
	made := time.Now()
	body := `{"name":"api-made","url":"` + slow.URL + `/api","events":["public.items"]}`
	resp, err := http.Post("http://"+admins[other]+"/api/webhooks", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/webhooks on the walhook that does not lead: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, "the API webhook on the leader", 30*time.Second, func() bool {
		return httpStatus("http://"+admins[leader]+"/api/webhooks/api-made") == 200
	})
	t.Logf("a webhook made through one walhook's API appeared on the other %.2f s later", time.Since(made).Seconds())
	req, _ := http.NewRequest("DELETE", "http://"+admins[leader]+"/api/webhooks/api-made", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE on the leader: %v %v", resp, err)
	}
	waitFor(t, "the API webhook gone from the other", 30*time.Second, func() bool {
		return httpStatus("http://"+admins[other]+"/api/webhooks/api-made") == 404
	})

	// A backfill runs on the leader: the other says so, naming it.
	resp, err = http.Post("http://"+admins[other]+"/api/webhooks/items/backfill", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var refusal struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&refusal)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(refusal.Error, "the walhook at "+admins[leader]) {
		t.Errorf("a backfill asked of the walhook that does not lead: %d %q, want 409 naming the leader at %s", resp.StatusCode, refusal.Error, admins[leader])
	}

	db, c, _ := seededChurn(t, dsn, 2000)
	if err := c.run(ctx, db, 3000); err != nil {
		t.Fatal(err)
	}
	rc.awaitAll(t, c.keys, 2*time.Minute)
	for i, a := range admins {
		if n := successes(t, a); n == 0 {
			t.Errorf("walhook %d (leader %v) made no successful delivery: only one of them delivers", i, i == leader)
		} else {
			t.Logf("walhook %d (leader %v): %d successful deliveries", i, i == leader, n)
		}
	}
	var stats [2]map[string]any
	waitFor(t, "the same stats on both walhooks", 30*time.Second, func() bool {
		for i, a := range admins {
			stats[i] = webhookStats(t, a, "items")
		}
		return fmt.Sprint(stats[0]) == fmt.Sprint(stats[1]) && stats[0]["queued"] == 0.0
	})
	if calls, _ := stats[0]["successful_calls"].(float64); int(calls) < len(c.keys) {
		t.Errorf("stats %v: successful calls below the %d changes sent", stats[0], len(c.keys))
	}

	// The walhook that does not lead is killed with deliveries pending in
	// its partitions.
	written := make(chan error, 1)
	go func() { written <- c.run(ctx, db, 6000) }()
	waitFor(t, "deliveries pending in the other walhook's partitions", time.Minute, func() bool {
		return pendingOf(t, storeDSN, otherID) >= 200
	})
	pending := pendingOf(t, storeDSN, otherID)
	procs[other].kill()
	killed := time.Now()
	t.Logf("killed the walhook that does not lead with %d deliveries pending in its partitions", pending)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the leader holding every partition", time.Minute, func() bool {
		o, ok := overviewOf(admins[leader])
		for _, in := range o.Instances {
			if in.Leader && in.Parts == store.Partitions {
				return ok
			}
		}
		return false
	})
	t.Logf("the leader holds every partition %.1f s after the kill (the leases run %s)", time.Since(killed).Seconds(), store.Lease)
	rc.awaitAll(t, c.keys, 2*time.Minute)
	if t.Failed() {
		logMetrics(t, admins[leader])
	}
}

// successes is walhook_deliveries_total{outcome="success"} summed over
// the webhooks of the walhook at admin.
func successes(t *testing.T, admin string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "walhook_deliveries_total{") && strings.Contains(line, `outcome="success"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			n += int(v)
		}
	}
	return n
}

// webhookStats is the stats of GET /api/webhooks/{name}.
func webhookStats(t *testing.T, admin, name string) map[string]any {
	t.Helper()
	code, body := httpGet("http://" + admin + "/api/webhooks/" + name)
	var w struct {
		Stats map[string]any `json:"stats"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &w) != nil {
		t.Fatalf("GET /api/webhooks/%s: %d %s", name, code, body)
	}
	return w.Stats
}

// pendingOf counts the pending deliveries in the partitions a walhook
// holds, as the store says.
func pendingOf(t *testing.T, storeDSN, id string) int {
	t.Helper()
	return testkit.QueryValue[int](t, storeDSN, `SELECT count(*) FROM walhook.deliveries d JOIN walhook.partitions p ON p.part = d.part
		WHERE d.status = 'p' AND p.owner = $1`, id)
}

// TestSharedStoreConfigsDiffer: two walhooks share a store but their
// configs' webhooks differ (another URL): each names the other in its
// overview and its log, as a config to make agree; neither mixes them.
func TestSharedStoreConfigsDiffer(t *testing.T) {
	dsn := itemsDatabase(t)
	storeDSN := newDatabase(t)
	var admins, logs []string
	for i, url := range []string{"http://127.0.0.1:9/a", "http://127.0.0.1:9/b"} {
		admin := freeAddr(t)
		cfg := crashConfig(t, dsn, url, admin)
		appendFile(t, cfg, pgStoreSection(storeDSN, "walhook"))
		log := filepath.Join(t.TempDir(), fmt.Sprint("walhook", i, ".log"))
		startProcess(t, log, "run", "-config", cfg)
		admins, logs = append(admins, admin), append(logs, log)
	}
	waitFor(t, "each walhook naming the other's config as differing", time.Minute, func() bool {
		for _, a := range admins {
			code, body := httpGet("http://" + a + "/api/overview")
			var o struct {
				Differing []string          `json:"differing_configs"`
				Text      map[string]string `json:"text"`
			}
			if code != 200 || json.Unmarshal([]byte(body), &o) != nil || len(o.Differing) != 1 || !strings.Contains(o.Text["instances"], "CONFIGS DIFFER") {
				return false
			}
		}
		return true
	})
	for _, log := range logs {
		waitFor(t, "the difference logged", 30*time.Second, func() bool {
			b, _ := os.ReadFile(log)
			return strings.Contains(string(b), "configs whose webhooks differ")
		})
	}
}

// TestSharedStoreInProcess runs two walhooks sharing a store in this
// process, so that -race watches the leader's terms, the leases, the notes
// between them and the changes of partitions: both deliver their shares;
// the one that does not lead stops while changes are written, and the
// leader takes its partitions; every change arrives, in order per row.
func TestSharedStoreInProcess(t *testing.T) {
	ctx := context.Background()
	dsn := itemsDatabase(t)
	storeDSN := newDatabase(t)
	rc, url := newKeyReceiver(t, nil)
	apps := startSharedApps(t, 2, dsn, storeDSN, url)
	shares := func(want int) bool {
		ins, err := apps[0].app.pg.Instances()
		if err != nil || len(ins) != want {
			return false
		}
		for _, in := range ins {
			if in.Parts < store.Partitions/want {
				return false
			}
		}
		return true
	}
	waitFor(t, "two walhooks with their shares, one leading and reading", time.Minute, func() bool {
		return shares(2) && apps[0].app.ready() == nil && apps[1].app.ready() == nil && apps[0].app.leads.Load() != apps[1].app.leads.Load()
	})
	other := 0
	if apps[0].app.leads.Load() {
		other = 1
	}
	db, c, _ := seededChurn(t, dsn, 500)
	if err := c.run(ctx, db, 1500); err != nil {
		t.Fatal(err)
	}
	rc.awaitAll(t, c.keys, time.Minute)
	apps[other].stop()
	if err := c.run(ctx, db, 3000); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the leader holding every partition", time.Minute, func() bool { return shares(1) })
	rc.awaitAll(t, c.keys, time.Minute)
}

// TestBackfillFollowsTheLead: two walhooks share a store; the leader's
// lock connection is cut while its backfill reads (the walhook runs on).
// Its backfill stops there, the other walhook takes the lead and resumes
// it from the rows stored, and every row arrives. Then the first walhook
// leads again and can run a backfill of its own: the interrupted one did
// not keep its place.
func TestBackfillFollowsTheLead(t *testing.T) {
	const rows = 100000
	dsn := itemsDatabase(t)
	execSQL(t, dsn, fmt.Sprintf(`INSERT INTO items SELECT i, i, 'note' FROM generate_series(1, %d) i`, rows))
	storeDSN := newDatabase(t)
	url, created := createsTally(t)
	apps := startSharedApps(t, 2, dsn, storeDSN, url)
	waitFor(t, "one walhook leading", time.Minute, func() bool {
		return apps[0].app.leads.Load() != apps[1].app.leads.Load() && apps[0].app.ready() == nil && apps[1].app.ready() == nil
	})
	lead, other := apps[0].app, apps[1].app
	if other.leads.Load() {
		lead, other = other, lead
	}
	if _, err := lead.StartBackfill("items", nil); err != nil {
		t.Fatal(err)
	}
	var st admin.BackfillStatus
	waitFor(t, "the backfill under way", time.Minute, func() bool {
		st, _ = lead.Backfill("items")
		return st.Queued >= 10000 || st.State != "running"
	})
	if st.State != "running" {
		t.Fatalf("the backfill ended before the lock was cut (%+v): nothing to resume", st)
	}
	// The advisory lock's session is the leader's; only it holds one in
	// the store's database.
	execSQL(t, storeDSN, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	waitFor(t, "the other walhook leading", time.Minute, func() bool { return other.leads.Load() })
	waitFor(t, "the first backfill interrupted", time.Minute, func() bool {
		r, ok := lead.backfills.Load("items")
		return ok && r.(*backfillRun).status().State == "interrupted"
	})
	waitFor(t, "the resumed backfill done", 2*time.Minute, func() bool {
		st, _ = other.Backfill("items")
		return st.State != "running" && st.State != ""
	})
	if st.State != "done" || !st.Resumed {
		t.Fatalf("on the new leader: %+v, want done and resumed", st)
	}
	if st.Read >= rows || st.Read == 0 {
		t.Errorf("the resumed backfill read %d rows: it should go on where the stored rows end, not start over", st.Read)
	}
	waitFor(t, "every row", 3*time.Minute, func() bool { return created() == rows })

	// The first walhook leads again (the other's lock cut in turn) and
	// runs a backfill: nothing of the interrupted one is in its way.
	execSQL(t, storeDSN, `SELECT pg_terminate_backend(pid) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	waitFor(t, "the first walhook leading again", time.Minute, func() bool { return lead.leads.Load() })
	if _, err := lead.StartBackfill("items", nil); err != nil {
		t.Fatalf("a backfill on the walhook whose backfill was interrupted: %v", err)
	}
}

// startSharedApps starts n walhooks in the test's process on the items
// database dsn, sending to url, sharing a store in storeDSN.
func startSharedApps(t *testing.T, n int, dsn, storeDSN, url string) []*inProcess {
	t.Helper()
	var apps []*inProcess
	for range n {
		path := crashConfig(t, dsn, url, freeAddr(t))
		appendFile(t, path, pgStoreSection(storeDSN, "walhook"))
		cfg, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		apps = append(apps, startApp(t, cfg, AppOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	}
	return apps
}
