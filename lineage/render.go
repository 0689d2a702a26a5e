package lineage

import (
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Graph is an object's lineage as GetLineage returns it, indexed for
// rendering.
type Graph struct {
	Root    ids.ObjectID
	records map[ids.TaskID]*pb.TaskRecord
	evicted map[ids.TaskID]bool
}

// NewGraph indexes a GetLineage answer for object root.
func NewGraph(root ids.ObjectID, resp *pb.GetLineageResponse) *Graph {
	g := &Graph{Root: root, records: map[ids.TaskID]*pb.TaskRecord{}, evicted: map[ids.TaskID]bool{}}
	for _, r := range resp.GetRecords() {
		if id, err := ids.TaskFromBytes(r.TaskId); err == nil {
			g.records[id] = r
		}
	}
	for _, b := range resp.GetEvictedTaskIds() {
		if id, err := ids.TaskFromBytes(b); err == nil {
			g.evicted[id] = true
		}
	}
	return g
}

// Objects lists every object the graph names: the root, each record's
// returns and its reference arguments, sorted.
func (g *Graph) Objects() []ids.ObjectID {
	seen := map[ids.ObjectID]bool{g.Root: true}
	for id, r := range g.records {
		for i := int32(1); i <= r.NumReturns; i++ {
			seen[ids.ReturnID(id, uint32(i))] = true
		}
		for _, a := range r.Args {
			if o, err := ids.ObjectFromBytes(a.ObjectId); err == nil {
				seen[o] = true
			}
		}
	}
	out := make([]ids.ObjectID, 0, len(seen))
	for o := range seen {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Locator says where an object is now ("node n1 (memory)", "lost",
// "unknown"); nil means not asked.
type Locator func(ids.ObjectID) string

// WriteText prints the tree of tasks that made the root object: each task
// with function, state, node and attempts, its arguments (values
// summarised, references expanded recursively) and where objects are. A
// task met again is printed once and referred to after.
func (g *Graph) WriteText(w io.Writer, loc Locator) error {
	ew := &errWriter{w: w}
	printed := map[ids.TaskID]bool{}
	g.writeObject(ew, g.Root, "", loc, printed)
	return ew.err
}

func (g *Graph) writeObject(w *errWriter, o ids.ObjectID, indent string, loc Locator, printed map[ids.TaskID]bool) {
	where := ""
	if loc != nil {
		where = "  [" + loc(o) + "]"
	}
	w.printf("%sobject %s%s\n", indent, o, where)
	indent += "  "
	if o.IsPut() {
		w.printf("%smade by Put: no lineage\n", indent)
		return
	}
	id := o.Task()
	r, ok := g.records[id]
	switch {
	case ok && printed[id]:
		w.printf("%s<- task %s (shown above)\n", indent, id)
		return
	case ok:
	case g.evicted[id]:
		w.printf("%s<- task %s: lineage evicted\n", indent, id)
		return
	default:
		w.printf("%s<- task %s: no lineage (released, not recorded, or beyond --depth)\n", indent, id)
		return
	}
	printed[id] = true
	w.printf("%s<- task %s %s  %s", indent, id, r.Function, r.State)
	if r.NodeId != "" {
		w.printf("  node=%s", r.NodeId)
	}
	w.printf("  attempts=%d", r.Attempts)
	if r.AdoptedUnixNano != 0 {
		w.printf("  owner=control-plane (adopted from %s)", r.OwnerAddress)
	} else if r.OwnerAddress != "" {
		w.printf("  owner=%s", r.OwnerAddress)
	}
	w.printf("\n")
	if r.LastError != "" {
		w.printf("%s   last error: %s\n", indent, oneLine(r.LastError, 120))
	}
	for i, a := range r.Args {
		if len(a.ObjectId) == 0 {
			w.printf("%s   arg %d: %s\n", indent, i, SummariseValue(a.Value, a.Format))
			continue
		}
		ref, err := ids.ObjectFromBytes(a.ObjectId)
		if err != nil {
			w.printf("%s   arg %d: bad reference %x\n", indent, i, a.ObjectId)
			continue
		}
		w.printf("%s   arg %d: ref\n", indent, i)
		g.writeObject(w, ref, indent+"     ", loc, printed)
	}
}

// WriteDot prints the graph in Graphviz dot: tasks are boxes, objects
// ellipses, edges follow data (argument -> task -> return).
func (g *Graph) WriteDot(w io.Writer, loc Locator) error {
	ew := &errWriter{w: w}
	ew.printf("digraph lineage {\n  rankdir=BT;\n  node [fontname=\"monospace\"];\n")
	objs := g.Objects()
	for _, o := range objs {
		label := short(o.String())
		if loc != nil {
			label += "\\n" + loc(o)
		}
		style := ""
		if o == g.Root {
			style = ", style=bold"
		}
		ew.printf("  %q [shape=ellipse, label=%q%s];\n", "o"+o.String(), label, style)
	}
	tasks := make([]ids.TaskID, 0, len(g.records))
	for id := range g.records {
		tasks = append(tasks, id)
	}
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].String() < tasks[j].String() })
	for _, id := range tasks {
		r := g.records[id]
		label := fmt.Sprintf("%s\\n%s %s\\nattempts=%d", r.Function, short(id.String()), r.State, r.Attempts)
		if r.NodeId != "" {
			label += "\\nnode=" + r.NodeId
		}
		ew.printf("  %q [shape=box, label=%q];\n", "t"+id.String(), label)
		for i := int32(1); i <= r.NumReturns; i++ {
			ew.printf("  %q -> %q;\n", "t"+id.String(), "o"+ids.ReturnID(id, uint32(i)).String())
		}
		for i, a := range r.Args {
			if o, err := ids.ObjectFromBytes(a.ObjectId); err == nil {
				ew.printf("  %q -> %q [label=\"arg %d\"];\n", "o"+o.String(), "t"+id.String(), i)
			}
		}
	}
	for id := range g.evicted {
		ew.printf("  %q [shape=box, style=dashed, label=%q];\n", "t"+id.String(), short(id.String())+"\\nlineage evicted")
	}
	ew.printf("}\n")
	return ew.err
}

// WriteTask prints one record in full.
func WriteTask(w io.Writer, r *pb.TaskRecord) error {
	ew := &errWriter{w: w}
	id, _ := ids.TaskFromBytes(r.TaskId)
	ew.printf("task:      %s\n", id)
	ew.printf("job:       %s\n", r.JobId)
	ew.printf("function:  %s\n", r.Function)
	ew.printf("state:     %s\n", r.State)
	ew.printf("attempts:  %d (max retries %d)\n", r.Attempts, r.MaxRetries)
	ew.printf("node:      %s\n", dash(r.NodeId))
	ew.printf("owner:     %s\n", dash(r.OwnerAddress))
	if r.AdoptedUnixNano != 0 {
		ew.printf("adopted:   %s (the owner died; the control plane answers for its objects)\n", stamp(r.AdoptedUnixNano))
	}
	if r.Rebuilder != "" {
		ew.printf("rebuilder: %s (since %s)\n", r.Rebuilder, stamp(r.RebuildUnixNano))
	}
	ew.printf("submitted: %s\n", stamp(r.SubmittedUnixNano))
	if r.FinishedUnixNano != 0 {
		ew.printf("finished:  %s\n", stamp(r.FinishedUnixNano))
	}
	if r.LastError != "" {
		ew.printf("error:     %s\n", oneLine(r.LastError, 400))
	}
	if len(r.Resources) > 0 {
		keys := make([]string, 0, len(r.Resources))
		for k := range r.Resources {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%g", k, r.Resources[k])
		}
		ew.printf("resources: %s\n", strings.Join(parts, " "))
	}
	ew.printf("returns:\n")
	for i := int32(1); i <= r.NumReturns; i++ {
		o := ids.ReturnID(id, uint32(i))
		rel := ""
		for _, x := range r.Released {
			if x == uint32(i) {
				rel = " (released)"
			}
		}
		ew.printf("  %s%s\n", o, rel)
	}
	ew.printf("args:\n")
	for i, a := range r.Args {
		if len(a.ObjectId) == 0 {
			ew.printf("  %d: %s\n", i, SummariseValue(a.Value, a.Format))
		} else {
			ew.printf("  %d: ref %s (owner %s)\n", i, hex.EncodeToString(a.ObjectId), dash(a.OwnerAddress))
		}
	}
	return ew.err
}

// SummariseValue describes an inline value: its size and a short preview
// (text as text, anything else as hex).
func SummariseValue(data []byte, format int32) string {
	const max = 24
	kind := "msgpack"
	if format == 1 {
		kind = "raw"
	}
	preview := data
	more := ""
	if len(preview) > max {
		preview, more = preview[:max], "…"
	}
	var p string
	if utf8.Valid(preview) && printable(preview) {
		p = fmt.Sprintf("%q%s", preview, more)
	} else {
		p = hex.EncodeToString(preview) + more
	}
	return fmt.Sprintf("value %d B %s %s", len(data), kind, p)
}

func printable(b []byte) bool {
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\t' {
			return false
		}
	}
	return true
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

func oneLine(s string, max int) string {
	s = strings.ReplaceAll(s, "\n", " | ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// errWriter keeps the first write error so renderers can print freely.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
