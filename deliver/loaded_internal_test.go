package deliver

import (
	"io"
	"log/slog"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"walhook/cdc"
)

// Webhooks that read the same stored event back share one decoded copy.
func TestLoadEventSharesDecodedEvents(t *testing.T) {
	q, err := Open(Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ev := &cdc.Event{ID: cdc.EventID(7, 0), Schema: "public", Table: "t", Action: cdc.ActionCreate,
		CommitTime: time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC), Data: map[string]any{"id": int64(7)}}
	err = q.db.Update(func(tx *bolt.Tx) error {
		v, err := encodeEvent(ev, 2)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketEvents).Put([]byte(ev.ID), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	var first, second *event
	err = q.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		var err error
		if first, err = q.loadEvent(events, ev.ID); err != nil {
			return err
		}
		if second, err = q.loadEvent(events, ev.ID); err != nil {
			return err
		}
		if _, err := q.loadEvent(events, "missing"); err == nil {
			t.Error("loading a missing event gave no error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Error("the second load decoded the event again")
	}
	if first.ID != ev.ID || first.Data["id"] != int64(7) || !first.CommitTime.Equal(ev.CommitTime) {
		t.Errorf("loaded %+v, stored %+v", first, ev)
	}
}
