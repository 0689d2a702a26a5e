package dashboard

import (
	"fmt"
	"html"
	"strings"

	"github.com/manta-ray/manta/internal/ids"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// An object's lineage drawn as SVG, laid out here so the page needs no
// graph library: objects (rounded) and tasks (boxes) in columns by their
// longest distance from the root object, data flowing left to right
// (argument -> task -> return), the root object rightmost.

const (
	colWidth  = 230
	rowHeight = 74
	boxWidth  = 190
	boxHeight = 52
	margin    = 16
)

type gnode struct {
	key   string // "o<hex>" or "t<hex>"
	task  bool
	label []string
	href  string
	class string // CSS class: state of a task, kind of an object
	layer int
	row   int
}

type graph struct {
	nodes map[string]*gnode
	order []string // discovery order: rows follow it
	edges [][2]string
}

// buildGraph lays out GetLineage's answer for root.
func buildGraph(root ids.ObjectID, resp *pb.GetLineageResponse) *graph {
	g := &graph{nodes: map[string]*gnode{}}
	records := map[ids.TaskID]*pb.TaskRecord{}
	for _, r := range resp.GetRecords() {
		if id, err := ids.TaskFromBytes(r.TaskId); err == nil {
			records[id] = r
		}
	}
	evicted := map[ids.TaskID]bool{}
	for _, b := range resp.GetEvictedTaskIds() {
		if id, err := ids.TaskFromBytes(b); err == nil {
			evicted[id] = true
		}
	}
	seenEdge := map[[2]string]bool{}
	edge := func(from, to string) {
		e := [2]string{from, to}
		if !seenEdge[e] {
			seenEdge[e] = true
			g.edges = append(g.edges, e)
		}
	}
	// Longest-path layering: a node met again at a deeper layer moves
	// there (the lineage is a DAG, so this ends), and so do its inputs.
	var visitObject func(o ids.ObjectID, layer int)
	var visitTask func(t ids.TaskID, layer int)
	visitObject = func(o ids.ObjectID, layer int) {
		key := "o" + o.String()
		n, ok := g.nodes[key]
		if ok && n.layer >= layer {
			return
		}
		if !ok {
			n = &gnode{key: key, label: []string{"object " + short(o.String())}, href: "/lineage?object=" + o.String(), class: "obj"}
			switch {
			case o == root:
				n.class = "obj root"
			case o.IsPut():
				n.label = append(n.label, "made by Put")
				n.class = "obj put"
			}
			g.nodes[key] = n
			g.order = append(g.order, key)
		}
		n.layer = layer
		if o.IsPut() {
			return
		}
		edge("t"+o.Task().String(), key)
		visitTask(o.Task(), layer+1)
	}
	visitTask = func(t ids.TaskID, layer int) {
		key := "t" + t.String()
		n, ok := g.nodes[key]
		if ok && n.layer >= layer {
			return
		}
		r := records[t]
		if !ok {
			n = &gnode{key: key, task: true, href: "/tasks/" + t.String()}
			switch {
			case r != nil:
				state := strings.TrimPrefix(r.State.String(), "TASK_")
				n.label = []string{r.Function, short(t.String()) + " " + state}
				where := fmt.Sprintf("attempts %d", r.Attempts)
				if r.NodeId != "" {
					where = r.NodeId + " · " + where
				}
				n.label = append(n.label, where)
				n.class = "task " + strings.ToLower(state)
			case evicted[t]:
				n.label = []string{"task " + short(t.String()), "lineage evicted"}
				n.class = "task gone"
			default:
				n.label = []string{"task " + short(t.String()), "no lineage record"}
				n.class = "task gone"
			}
			g.nodes[key] = n
			g.order = append(g.order, key)
		}
		n.layer = layer
		if r == nil {
			return
		}
		for _, a := range r.Args {
			if o, err := ids.ObjectFromBytes(a.ObjectId); err == nil {
				edge("o"+o.String(), key)
				visitObject(o, layer+1)
			}
		}
	}
	visitObject(root, 0)
	rows := map[int]int{}
	for _, k := range g.order {
		n := g.nodes[k]
		n.row = rows[n.layer]
		rows[n.layer]++
	}
	return g
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}

func (g *graph) size() (layers, rows int) {
	for _, n := range g.nodes {
		layers = max(layers, n.layer+1)
		rows = max(rows, n.row+1)
	}
	return layers, rows
}

// pos is a node's top-left corner: layer 0 (the root) rightmost.
func (g *graph) pos(n *gnode) (x, y int) {
	layers, _ := g.size()
	return margin + (layers-1-n.layer)*colWidth, margin + n.row*rowHeight
}

// svg renders the graph; every text is escaped.
func (g *graph) svg() string {
	layers, rows := g.size()
	w := 2*margin + (layers-1)*colWidth + boxWidth
	h := 2*margin + (rows-1)*rowHeight + boxHeight
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="lineage" width="%d" height="%d" viewBox="0 0 %d %d">`, w, h, w, h)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#7a8794"/></marker></defs>`)
	for _, e := range g.edges {
		from, to := g.nodes[e[0]], g.nodes[e[1]]
		if from == nil || to == nil {
			continue
		}
		fx, fy := g.pos(from)
		tx, ty := g.pos(to)
		x1, y1 := fx+boxWidth, fy+boxHeight/2
		x2, y2 := tx, ty+boxHeight/2
		mid := (x1 + x2) / 2
		fmt.Fprintf(&b, `<path class="edge" d="M%d,%d C%d,%d %d,%d %d,%d" marker-end="url(#arrow)"/>`, x1, y1, mid, y1, mid, y2, x2, y2)
	}
	for _, k := range g.order {
		n := g.nodes[k]
		x, y := g.pos(n)
		rx := 4
		if !n.task {
			rx = 18
		}
		fmt.Fprintf(&b, `<a href="%s"><g class="gnode %s" data-key="%s">`, html.EscapeString(n.href), html.EscapeString(n.class), html.EscapeString(n.key))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="%d"/>`, x, y, boxWidth, boxHeight, rx)
		for i, line := range n.label {
			cls := ""
			if i == 0 {
				cls = ` class="title"`
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d"%s>%s</text>`, x+10, y+17+i*14, cls, html.EscapeString(clip(line, 28)))
		}
		b.WriteString(`</g></a>`)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
