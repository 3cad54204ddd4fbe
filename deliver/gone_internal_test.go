package deliver

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"walhook/cdc"
	"walhook/internal/testkit"
)

// TestGoneMeetsReloadOrActivate: between a 410 switching a config webhook
// off and that being persisted, a reload of the same config keeps it off,
// and an activate wins over the 410: after both, what the API shows, what
// the workers do and what the store keeps after a restart agree.
func TestGoneMeetsReloadOrActivate(t *testing.T) {
	for _, meanwhile := range []string{"reload", "activate"} {
		t.Run(meanwhile, func(t *testing.T) {
			srv := testkit.NewReceiver(t, func(n int, _ testkit.Request) testkit.Response {
				if n == 1 {
					return testkit.Response{Status: http.StatusGone}
				}
				return testkit.Response{}
			})
			dir := t.TempDir()
			q := openWith(t, dir, srv.URL, []string{"h"}, nil)
			def := hookDef(srv.URL, "h")
			var once sync.Once
			ran := make(chan struct{}) // closed once the reload or activate came between
			q.beforeSwitchOff = func() {
				once.Do(func() {
					defer close(ran)
					if q.dispatcherOf("h").webhook().Active {
						t.Error("the 410 did not switch the webhook off at once")
					}
					var err error
					if meanwhile == "reload" {
						err = q.SetConfigWebhooks([]Webhook{def})
					} else {
						_, err = q.SetActive("h", true)
					}
					if err != nil {
						t.Error(err)
					}
				})
			}
			write := func(lsn uint64) {
				tx := &cdc.Tx{CommitLSN: lsn, EndLSN: lsn + 1, CommitTime: time.Now(), Events: []cdc.Event{{
					ID: cdc.EventID(lsn, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, Entity: "t", EntityID: "1"}}}
				if err := q.Write(t.Context(), tx); err != nil {
					t.Fatal(err)
				}
			}
			write(100)
			if !eventually(10*time.Second, func() bool { return q.Stats("h").TotalCalls == 1 }) {
				t.Fatal("no attempt")
			}
			select { // else the Close below may come first, and the reload would meet a closed queue
			case <-ran:
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s between the 410 and its persisting", meanwhile)
			}
			// What the API shows, read under switchMu: not halfway through a
			// switch-off. (Whether it persisted is checked after the restart
			// below: closing waits for the worker, and so for its switchOff.)
			wantActive := meanwhile == "activate"
			if !eventually(10*time.Second, func() bool {
				q.switchMu.Lock()
				defer q.switchMu.Unlock()
				w, _ := q.Webhook("h")
				return w.Active == wantActive
			}) {
				w, _ := q.Webhook("h")
				t.Fatalf("after the 410 and a %s: active = %v, want %v", meanwhile, w.Active, wantActive)
			}
			if got := q.dispatcherOf("h").active.Load(); got != wantActive {
				t.Errorf("the workers' switch is %v, want %v", got, wantActive)
			}
			write(200)
			if wantActive && !eventually(10*time.Second, func() bool { return q.Stats("h").SuccessfulCalls == 1 }) {
				t.Errorf("the delivery after the activate was not sent: %+v", q.Stats("h"))
			}

			// The store agrees: a restart with the same config.
			q.Close()
			q = openWith(t, dir, srv.URL, []string{"h"}, nil)
			if w, _ := q.Webhook("h"); w.Active != wantActive {
				t.Errorf("after a restart: active = %v, want %v", w.Active, wantActive)
			}
		})
	}
}
