package store_test

import (
	"io"
	"log/slog"
	"testing"

	"walhook/deliver"
	"walhook/deliver/store"
	"walhook/deliver/store/storetest"
)

// TestBolt runs the suite every store must pass against the bbolt store.
func TestBolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention int) storetest.Opener {
		dir := t.TempDir()
		return func(t *testing.T) deliver.Store {
			s, err := store.OpenBolt(dir, store.BoltOptions{Retention: retention, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}
