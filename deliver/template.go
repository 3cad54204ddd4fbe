package deliver

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"text/template"
	"text/template/parse"
	"time"
)

// A template is text an API user may write, run by a delivery worker on
// every event: its run is bounded in output, time and what it may loop
// over, so a hostile or careless one fails its own deliveries and nothing
// else (issue 19).
const (
	// DefaultMaxBodyBytes is the largest body a template renders unless
	// Options.MaxBodyBytes says otherwise ([delivery] max_body_bytes).
	DefaultMaxBodyBytes = 1 << 20
	// templateTimeout bounds one rendering.
	templateTimeout = time.Second

	// The functions bound inserts into a template's tree: the first runs
	// at every iteration of a range and every call of a template, the
	// second takes what a range ranges over.
	tickFunc  = "walhookTick"
	rangeFunc = "walhookRange"
)

// ErrTemplateLimit is the error of a rendering that went past a limit: a
// body too large, too long a run, a range over a number.
var ErrTemplateLimit = errors.New("template limit")

// bodyTemplate is a parsed template and its limits. Executions take a
// clone from the pool: the guard functions of a clone check the limits of
// the one execution using it.
type bodyTemplate struct {
	root    *template.Template
	maxBody int
	timeout time.Duration
	pool    sync.Pool // of *execution
}

// execution is a clone of the template with its own guard functions.
type execution struct {
	t        *template.Template
	deadline time.Time
	timeout  time.Duration
}

func (e *execution) tick() (string, error) {
	if time.Now().After(e.deadline) {
		return "", fmt.Errorf("%w: rendering took longer than %s", ErrTemplateLimit, e.timeout)
	}
	return "", nil
}

// checkRange lets a range go over a list or a map, whose size the event
// bounds, and refuses a number: {{range .Data.qty}} on a row whose qty is
// 9223372036854775807 would otherwise loop for ever.
func checkRange(v any) (any, error) {
	switch reflect.ValueOf(v).Kind() {
	case reflect.Invalid, reflect.Slice, reflect.Array, reflect.Map, reflect.String:
		return v, nil
	}
	return nil, fmt.Errorf("%w: range over a %T: only a list or a map can be ranged over", ErrTemplateLimit, v)
}

// guards are the nodes bound inserts, parsed once.
var guards = sync.OnceValues(func() (tick parse.Node, rng *parse.CommandNode) {
	fs := template.FuncMap{tickFunc: func() string { return "" }, rangeFunc: checkRange}
	t := template.Must(template.New("body").Funcs(fs).Parse("{{" + tickFunc + "}}{{. | " + rangeFunc + "}}"))
	nodes := t.Tree.Root.Nodes
	return nodes[0], nodes[1].(*parse.ActionNode).Pipe.Cmds[1]
})

// bound refuses a template that ranges over a number or len's result,
// and rewrites the others so that each range checks what it ranges over
// and each iteration and template call checks the deadline.
func bound(t *template.Template) error {
	tick, rng := guards()
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		tree := tt.Tree
		var walk func(l *parse.ListNode) error
		walk = func(l *parse.ListNode) error {
			if l == nil {
				return nil
			}
			for _, n := range l.Nodes {
				var b *parse.BranchNode
				switch n := n.(type) {
				case *parse.IfNode:
					b = &n.BranchNode
				case *parse.WithNode:
					b = &n.BranchNode
				case *parse.RangeNode:
					b = &n.BranchNode
					if numeric(n.Pipe) {
						loc, _ := tree.ErrorContext(n)
						return fmt.Errorf("%s: range over a number: a body must come from the event, whose size is bounded", loc)
					}
					n.Pipe.Cmds = append(n.Pipe.Cmds, rng)
					n.List.Nodes = append([]parse.Node{tick}, n.List.Nodes...)
				}
				if b != nil {
					if err := walk(b.List); err != nil {
						return err
					}
					if err := walk(b.ElseList); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if err := walk(tree.Root); err != nil {
			return err
		}
		tree.Root.Nodes = append([]parse.Node{tick}, tree.Root.Nodes...)
	}
	return nil
}

// numeric reports whether a pipeline is a number: a constant, len, or a
// parenthesized pipeline that is one.
func numeric(p *parse.PipeNode) bool {
	if p == nil || len(p.Cmds) == 0 {
		return false
	}
	args := p.Cmds[len(p.Cmds)-1].Args
	if len(args) == 0 {
		return false
	}
	switch a := args[0].(type) {
	case *parse.NumberNode:
		return true
	case *parse.IdentifierNode:
		return a.Ident == "len"
	case *parse.PipeNode:
		return numeric(a)
	}
	return false
}

// execute renders data into at most maxBody bytes within the timeout.
func (b *bodyTemplate) execute(data any) ([]byte, error) {
	e, _ := b.pool.Get().(*execution)
	if e == nil {
		t, err := b.root.Clone()
		if err != nil {
			return nil, err
		}
		e = &execution{timeout: b.timeout}
		e.t = t.Funcs(template.FuncMap{tickFunc: e.tick})
	}
	defer b.pool.Put(e)
	e.deadline = time.Now().Add(b.timeout)
	w := &limitWriter{max: b.maxBody}
	err := e.t.Execute(w, data)
	return w.b, err
}

// limitWriter keeps what is written up to max bytes and fails the write
// that would pass it, which ends the template's execution.
type limitWriter struct {
	b   []byte
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > w.max {
		return 0, fmt.Errorf("%w: body larger than %d bytes (max_body_bytes)", ErrTemplateLimit, w.max)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}
