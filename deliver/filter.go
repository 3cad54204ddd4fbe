package deliver

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"

	"walhook/cdc"
)

// Filter is a webhook's compiled `when`: a CEL expression over one event
// that says whether the webhook gets it. A Filter is safe for concurrent
// use.
type Filter struct {
	expr string
	prg  cel.Program
	// ReadsOld and ReadsChanged say whether the expression names old or
	// changed, which only REPLICA IDENTITY FULL fills in whole.
	ReadsOld, ReadsChanged bool
}

// filterCostLimit stops an expression that would run away (comprehensions
// over comprehensions) on the committer, which evaluates every filter: a
// few thousand steps are far beyond any sensible condition on one row.
const filterCostLimit = 100_000

// filterEnv declares the variables a `when` reads. It is built once: a
// cel.Env is immutable and safe for concurrent use.
var filterEnv = sync.OnceValues(func() (*cel.Env, error) {
	row := cel.MapType(cel.StringType, cel.DynType)
	return cel.NewEnv(
		cel.Variable("action", cel.StringType),
		cel.Variable("new", row),
		cel.Variable("old", row),
		cel.Variable("changed", cel.ListType(cel.StringType)),
		cel.Variable("table", cel.StringType),
		cel.Variable("entity", cel.StringType),
		cel.CrossTypeNumericComparisons(true),
	)
})

// CompileWhen compiles and type-checks a `when` expression. Its error
// names the position, as `1:17: undeclared reference to 'nwe'`.
func CompileWhen(expr string) (*Filter, error) {
	env, err := filterEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		var msgs []string
		for _, e := range iss.Errors() {
			msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		return nil, fmt.Errorf("must be true or false, not %s", t)
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(filterCostLimit))
	if err != nil {
		return nil, err
	}
	f := &Filter{expr: expr, prg: prg}
	for _, id := range ast.NativeRep().ReferenceMap() {
		switch id.Name {
		case "old":
			f.ReadsOld = true
		case "changed":
			f.ReadsChanged = true
		}
	}
	return f, nil
}

// String is the expression.
func (f *Filter) String() string { return f.expr }

// Match evaluates the filter on ev. An error (a column the row does not
// have, a null compared with a number) means the event is not sent.
func (f *Filter) Match(ev *cdc.Event) (bool, error) {
	out, _, err := f.prg.Eval(&filterVars{ev: ev})
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("result is %s, not true or false", out.Type().TypeName())
	}
	return bool(b), nil
}

// filterVars resolves a `when`'s variables from an event, converting a
// row only when the expression reads it.
type filterVars struct{ ev *cdc.Event }

var (
	emptyRow  = map[string]any{}
	emptyList = []string{}
)

func (a *filterVars) ResolveName(name string) (any, bool) {
	ev := a.ev
	switch name {
	case "action":
		return ev.Action, true
	case "new":
		return filterRow(ev.Data, ev.Types), true
	case "old":
		return filterRow(ev.Old, ev.Types), true
	case "changed":
		if ev.Changed == nil {
			return emptyList, true
		}
		return ev.Changed, true
	case "table":
		return ev.QualifiedTable(), true
	case "entity":
		return eventEntity(ev), true
	}
	return nil, false
}

func (a *filterVars) Parent() interpreter.Activation { return nil }

// filterRow is a row as CEL compares it: numeric columns as numbers,
// timestamptz columns as timestamps, json and jsonb as what they hold. A
// row that needs none of that is handed over as it is.
func filterRow(row map[string]any, colTypes map[string]string) map[string]any {
	if row == nil {
		return emptyRow
	}
	convert := false
	for col, v := range row {
		switch v.(type) {
		case json.RawMessage, json.Number:
			convert = true
		case string:
			convert = convert || colTypes[col] != ""
		}
		if convert {
			break
		}
	}
	if !convert {
		return row
	}
	out := make(map[string]any, len(row))
	for col, v := range row {
		out[col] = filterValue(v, colTypes[col])
	}
	return out
}

// filterValue converts one value for filterRow; one that does not parse
// (a numeric 'NaN', a timestamp 'infinity') stays text.
func filterValue(v any, typ string) any {
	switch x := v.(type) {
	case json.RawMessage:
		var out any
		if json.Unmarshal(x, &out) == nil {
			return out
		}
		return string(x)
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case string:
		switch typ {
		case cdc.TypeNumeric:
			if f, err := strconv.ParseFloat(x, 64); err == nil {
				return f
			}
		case cdc.TypeTimestamptz:
			if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return t
			}
		}
	}
	return v
}

// eventEntity is the event's entity as the body names it.
func eventEntity(ev *cdc.Event) string {
	if ev.Entity != "" {
		return ev.Entity
	}
	name := eventName(ev)
	return name[:len(name)-len(ev.Action)-1]
}

// compileFilter compiles w's when; nil when it has none.
func compileFilter(w *Webhook) (*Filter, error) {
	if w.When == "" {
		return nil, nil
	}
	f, err := CompileWhen(w.When)
	if err != nil {
		return nil, fmt.Errorf("when: %w", err)
	}
	return f, nil
}

// FilterError is the latest event a webhook's when failed on.
type FilterError struct {
	EventID string    `json:"event_id"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// filterErrors are a webhook's when failures since walhook started; the
// dispatcher's mu guards them.
type filterErrors struct {
	n        int64
	last     *FilterError
	loggedAt time.Time
}

// filterLogEvery is how often a webhook's when failures are logged at
// most: a filter that fails on every event of a busy table must not flood
// the log; the metric and the admin page count them all.
const filterLogEvery = time.Minute

// filterFailed notes that the webhook's when failed on ev, which is
// therefore not sent to it. Committer only.
func (h *dispatcher) filterFailed(ev *cdc.Event, err error) {
	h.stat.filterErrs.Inc()
	now := time.Now()
	h.mu.Lock()
	fe := &h.filterErrs
	fe.n++
	fe.last = &FilterError{EventID: ev.ID, Error: err.Error(), At: now}
	logIt := now.Sub(fe.loggedAt) >= filterLogEvery
	if logIt {
		fe.loggedAt = now
	}
	n := fe.n
	h.mu.Unlock()
	if logIt {
		h.q.log.Warn("webhook's when failed on an event; the event is not sent to it (logged at most once a minute)",
			"webhook", h.name, "event_id", ev.ID, "event", eventName(ev), "err", err, "errors_so_far", n)
	}
}
