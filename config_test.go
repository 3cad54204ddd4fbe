package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrors feeds every broken config in testdata/config/bad and
// expects the exact message written on its first line.
func TestConfigErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/config/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no broken configs found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(raw), "\n")
			want, ok := strings.CutPrefix(first, "# error: ")
			if !ok {
				t.Fatalf("%s: first line must be '# error: <message>'", f)
			}
			_, err = ParseConfig(strings.NewReader(string(raw)))
			if err == nil {
				t.Fatalf("no error, want %q", want)
			}
			if err.Error() != want {
				t.Errorf("error\n got: %s\nwant: %s", err, want)
			}
		})
	}
}

// TestSampleConfig parses the config.toml users copy and checks that every
// key of the contract appears in it.
func TestSampleConfig(t *testing.T) {
	cfg, err := LoadConfig("config.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Webhooks) != 1 || cfg.Webhooks[0].Name != "hr-sync" {
		t.Fatalf("webhooks = %+v", cfg.Webhooks)
	}
	h := cfg.Webhooks[0].Webhook()
	if h.MaxAttempts != 5 || h.Timeout.Milliseconds() != 10000 || h.Signature != "standard" || len(h.Secrets) != 1 {
		t.Errorf("converted webhook = %+v", h)
	}
	if !filepath.IsAbs(cfg.Store.Dir) || !strings.HasSuffix(cfg.Store.Dir, "data") {
		t.Errorf("store.dir %q not made relative to the config file", cfg.Store.Dir)
	}
	raw, _ := os.ReadFile("config.toml")
	keys := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[strings.TrimSpace(k)] = true
		}
	}
	contract := []string{"dsn", "slot", "publication", "manage_publication", "max_lag_mb", "dir",
		"max_size_mb", "max_backups", "max_age_days", "compress", "listen", "token", "host", "port",
		"username", "password", "from", "name", "table", "id", "url", "active", "events", "actions",
		"method", "content_type", "include_entity", "template", "when", "exclude_columns", "header_prefix", "secret", "signature",
		"signature_header", "headers", "basic_auth", "timeout_ms", "max_attempts", "retry_mode",
		"notify_email", "notify_on_failure", "batch_size", "batch_wait_ms",
		"rate_limit", "max_in_flight", "disable_after"}
	for _, k := range contract {
		if !keys[k] {
			t.Errorf("config.toml lacks key %q", k)
		}
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("WALHOOK_POSTGRES_DSN", "postgres://from-env@127.0.0.1/x")
	t.Setenv("HOOK_SECRET", "s3cret")
	cfg, err := ParseConfig(strings.NewReader(`
[postgres]
dsn = "postgres://from-file@127.0.0.1/x"
[[webhook]]
name = "a"
url = "http://127.0.0.1/x"
events = ["public.t"]
secret_env = "HOOK_SECRET"
signature = "sha256"
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Postgres.DSN != "postgres://from-env@127.0.0.1/x" {
		t.Errorf("dsn = %q", cfg.Postgres.DSN)
	}
	if h := cfg.Webhooks[0].Webhook(); len(h.Secrets) != 1 || h.Secrets[0] != "s3cret" || h.Signature != "sha256" {
		t.Errorf("secret_env not applied: %v %q", len(h.Secrets), h.Signature)
	}
}

// TestConfigValidation: each validation of config.go, fed one bad key in
// an otherwise valid config, fails with an error that names the key (and
// the bad value where there is one).
func TestConfigValidation(t *testing.T) {
	config := func(postgres, rest, entities, webhooks string) string {
		return "[postgres]\ndsn = \"postgres://u@127.0.0.1/x\"\n" + postgres + rest +
			"[[entity]]\nname = \"e\"\ntable = \"public.t\"\n" + entities +
			"[[webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1/x\"\nevents = [\"e\"]\n" + webhooks
	}
	if _, err := ParseConfig(strings.NewReader(config("", "", "", ""))); err != nil {
		t.Fatalf("the config the cases change: %v", err)
	}
	for _, tc := range []struct {
		name string
		text string
		want []string // in the error: the key, then the value
	}{
		{"postgres.slot", config("slot = \"Bad-Slot\"\n", "", "", ""), []string{"postgres.slot:", `"Bad-Slot"`}},
		{"postgres.max_lag_mb", config("max_lag_mb = -1\n", "", "", ""), []string{"postgres.max_lag_mb:", "-1"}},
		{"store.retention", config("", "[store]\nretention = -3\n", "", ""), []string{"store.retention:", "-3"}},
		{"admin.listen", config("", "[admin]\nlisten = \"8080\"\n", "", ""), []string{"admin.listen:", `"8080"`}},
		{"entity name missing", config("", "", "[[entity]]\ntable = \"public.u\"\n", ""), []string{"entity[1].name:", "missing"}},
		{"entity name duplicate", config("", "", "[[entity]]\nname = \"e\"\ntable = \"public.u\"\n", ""), []string{`entity "e": name:`, "duplicate"}},
		{"entity table missing", config("", "", "[[entity]]\nname = \"f\"\n", ""), []string{`entity "f": table:`, "missing"}},
		{"webhook name missing", config("", "", "", "[[webhook]]\nurl = \"http://127.0.0.1/y\"\nevents = [\"e\"]\n"), []string{"webhook[1].name:", "missing"}},
		{"webhook events missing", config("", "", "", "[[webhook]]\nname = \"b\"\nurl = \"http://127.0.0.1/y\"\n"), []string{`webhook "b": events:`, "missing"}},
		{"secret with secrets", config("", "", "", "secret = \"s1\"\nsecrets = [\"s2\", \"s3\"]\n"), []string{`webhook "a": secret:`, "secrets"}},
		{"timeout_ms zero", config("", "", "", "timeout_ms = 0\n"), []string{`webhook "a": timeout_ms:`}},
		{"timeout_ms negative", config("", "", "", "timeout_ms = -5\n"), []string{`webhook "a": timeout_ms:`, "-5"}},
		{"rate_limit negative", config("", "", "", "rate_limit = -1\n"), []string{`webhook "a": rate_limit:`, "-1"}},
		{"rate_limit too high", config("", "", "", "rate_limit = 200000\n"), []string{`webhook "a": rate_limit:`, "200000"}},
		{"max_in_flight zero", config("", "", "", "max_in_flight = 0\n"), []string{`webhook "a": max_in_flight: must be 1..16`, "0"}},
		{"max_in_flight too high", config("", "", "", "max_in_flight = 17\n"), []string{`webhook "a": max_in_flight: must be 1..16`, "17"}},
		{"disable_after unparsable", config("", "", "", "disable_after = \"3 days\"\n"), []string{`webhook "a": disable_after:`, `"3 days"`}},
		{"disable_after too short", config("", "", "", "disable_after = \"500ms\"\n"), []string{`webhook "a": disable_after:`, "500ms"}},
		{"disable_after negative", config("", "", "", "disable_after = \"-1h\"\n"), []string{`webhook "a": disable_after:`, "-1h"}},
		{"disable_after a number", config("", "", "", "disable_after = 72\n"), []string{"disable_after"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tc.text))
			if err == nil {
				t.Fatalf("no error for\n%s", tc.text)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}
