package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"walhook/deliver"
)

// TestCompactCommand: `walhook compact` finds the store through the
// config or -store, says when there is none, refuses a store in use
// without touching it, and reports the sizes.
func TestCompactCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "walhook.toml")
	text := "[postgres]\ndsn = \"postgres://walhook@127.0.0.1:1/app\"\n[store]\ndir = \"data\"\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "data")
	compact := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append([]string{"compact"}, args...), &out, &errOut)
		return out.String() + errOut.String(), err
	}

	out, err := compact("-config", cfg)
	if err != nil || out != "no store in "+store+": nothing to compact\n" {
		t.Fatalf("without a store: %q, %v", out, err)
	}

	q, err := deliver.Open(deliver.Options{Dir: store})
	if err != nil {
		t.Fatal(err)
	}
	out, err = compact("-config", cfg)
	if err == nil || !strings.Contains(err.Error(), "the store is in use") || !strings.Contains(err.Error(), "stop walhook first") {
		t.Errorf("with the store in use: %q, %v; want it refused", out, err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	out, err = compact("-config", cfg)
	if err != nil || !strings.HasPrefix(out, "compacted the store in "+store+": ") {
		t.Errorf("through the config: %q, %v", out, err)
	}
	out, err = compact("-store", store, "-config", filepath.Join(dir, "missing.toml"))
	if err != nil || !strings.HasPrefix(out, "compacted the store in "+store+": ") {
		t.Errorf("with -store (the config is not read): %q, %v", out, err)
	}
}
