package deliver

import (
	"io"
	"log/slog"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// Webhooks that read the same stored event back share one decoded copy;
// an event with one reference left is not kept.
func TestLoadEventSharesDecodedEvents(t *testing.T) {
	q, err := Open(Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	at := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	shared := &cdc.Event{ID: cdc.EventID(7, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, CommitTime: at, Data: map[string]any{"id": int64(7)}}
	single := &cdc.Event{ID: cdc.EventID(8, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate, CommitTime: at, Data: map[string]any{"id": int64(8)}}
	err = q.db.Update(func(tx *bolt.Tx) error {
		for ev, refs := range map[*cdc.Event]uint32{shared: 2, single: 1} {
			v, err := encodeEvent(ev, refs)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketEvents).Put([]byte(ev.ID), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	loads := map[string][2]*event{}
	err = q.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents).Cursor()
		for _, id := range []string{shared.ID, single.ID} {
			var pair [2]*event
			for i := range pair {
				ev, err := q.loadEvent(events, id)
				if err != nil {
					return err
				}
				pair[i] = ev
			}
			loads[id] = pair
		}
		if _, err := q.loadEvent(events, "missing"); err == nil {
			t.Error("loading a missing event gave no error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if l := loads[shared.ID]; l[0] != l[1] {
		t.Error("the second load of a shared event decoded it again")
	}
	if l := loads[single.ID]; l[0] == l[1] {
		t.Error("an event with one reference was kept for sharing")
	}
	for _, ev := range []*cdc.Event{shared, single} {
		if got := loads[ev.ID][0]; got.ID != ev.ID || got.Data["id"] != ev.Data["id"] || !got.CommitTime.Equal(at) {
			t.Errorf("loaded %+v, stored %+v", got, ev)
		}
	}
}
