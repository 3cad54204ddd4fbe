package deliver

import (
	"errors"
	"fmt"
	"strings"

	"walhook/cdc"
)

// columnRule is a webhook's columns or exclude_columns: which columns of
// data, old and changed its bodies carry. The entity id and URL are made
// from the whole row before, so they stay whatever the rule leaves out.
type columnRule struct {
	set     map[string]bool
	exclude bool // set lists the columns left out, not the ones kept
}

// validColumns checks columns and exclude_columns; whether the columns
// exist is for walhook check, since the table may not exist yet.
func validColumns(columns, exclude []string) error {
	if len(columns) > 0 && len(exclude) > 0 {
		return errors.New("columns: give columns or exclude_columns, not both")
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{"columns", columns}, {"exclude_columns", exclude}} {
		seen := map[string]bool{}
		for _, c := range list.names {
			if strings.TrimSpace(c) == "" {
				return fmt.Errorf("%s: empty column name", list.key)
			}
			if seen[c] {
				return fmt.Errorf("%s: %q twice", list.key, c)
			}
			seen[c] = true
		}
	}
	return nil
}

// newColumnRule returns the rule of w; nil when it sends every column.
func newColumnRule(w *Webhook) *columnRule {
	names, exclude := w.Columns, false
	if len(names) == 0 {
		names, exclude = w.ExcludeColumns, true
	}
	if len(names) == 0 {
		return nil
	}
	r := &columnRule{set: make(map[string]bool, len(names)), exclude: exclude}
	for _, c := range names {
		r.set[c] = true
	}
	return r
}

// keeps reports whether the rule lets column col through.
func (r *columnRule) keeps(col string) bool { return r.set[col] != r.exclude }

// apply returns a copy of ev whose Data, Old and Changed hold only the
// columns the rule keeps; ev itself is shared and left alone.
func (r *columnRule) apply(ev *cdc.Event) *cdc.Event {
	out := *ev
	out.Data, out.Old = r.row(ev.Data), r.row(ev.Old)
	if ev.Changed != nil {
		out.Changed = make([]string, 0, len(ev.Changed))
		for _, c := range ev.Changed {
			if r.keeps(c) {
				out.Changed = append(out.Changed, c)
			}
		}
	}
	return &out
}

func (r *columnRule) row(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		if r.keeps(k) {
			out[k] = v
		}
	}
	return out
}
