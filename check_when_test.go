package main

import (
	"strings"
	"testing"
)

// TestCheckFilters: walhook check warns when a when reads old or changed
// on a table without REPLICA IDENTITY FULL, and when columns or
// exclude_columns name a column the tables lack; not for a FULL table or
// known columns.
func TestCheckFilters(t *testing.T) {
	dsn := newDatabase(t)
	execSQL(t, dsn, whenSchema)
	out, _ := runCheck(t, writeConfig(t, dsn, `
[[webhook]]
name = "paid"
url = "https://example.com/paid"
events = ["public.pay_default", "public.pay_full"]
when = "action == 'modify' && 'status' in changed && old.status != 'paid'"
columns = ["id", "status", "staus"]

[[webhook]]
name = "big"
url = "https://example.com/big"
events = ["public.pay_default"]
when = "new.amount > 1000"
exclude_columns = ["amount"]
`))
	for _, want := range []string{
		`warn  webhook paid: its when reads old and changed, but table public.pay_default has REPLICA IDENTITY DEFAULT: an UPDATE carries no old row (so no changed) and a DELETE only the key, so the expression sees them empty or fails; ALTER TABLE "public"."pay_default" REPLICA IDENTITY FULL;`,
		`warn  webhook paid: columns names "staus", which public.pay_default, public.pay_full does not have`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks\n%s\n%s", want, out)
		}
	}
	for _, not := range []string{"table public.pay_full has REPLICA IDENTITY", "webhook big:"} {
		if strings.Contains(out, not) {
			t.Errorf("output has %q:\n%s", not, out)
		}
	}
}
