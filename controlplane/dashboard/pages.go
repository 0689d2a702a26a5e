package dashboard

import (
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"go.uber.org/zap"
)

//go:embed assets/static assets/pages
var assets embed.FS

// page is one of the dashboard's pages: a template under assets/pages
// and the nav entry it lights.
type page struct {
	Name  string // the template file (without .html) and the script's page name
	Title string
	Nav   string
}

var pageList = []page{
	{"overview", "Cluster", "overview"},
	{"nodes", "Nodes", "nodes"},
	{"actors", "Actors", "actors"},
	{"tasks", "Tasks", "tasks"},
	{"task", "Task", "tasks"},
	{"objects", "Objects", "objects"},
	{"workers", "Workers", "workers"},
	{"jobs", "Jobs", "jobs"},
	{"job", "Job", "jobs"},
	{"placement_groups", "Placement groups", "placement_groups"},
	{"lineage", "Lineage", "objects"},
	{"serve", "Serve", "serve"},
}

// navItems are the links in every page's header.
var navItems = []struct{ Key, Href, Label string }{
	{"overview", "/", "Cluster"},
	{"nodes", "/nodes", "Nodes"},
	{"actors", "/actors", "Actors"},
	{"tasks", "/tasks", "Tasks"},
	{"objects", "/objects", "Objects"},
	{"workers", "/workers", "Workers"},
	{"jobs", "/jobs", "Jobs"},
	{"placement_groups", "/placement-groups", "Placement groups"},
	{"serve", "/serve", "Serve"},
}

var templates = func() map[string]*template.Template {
	layout := template.Must(template.ParseFS(assets, "assets/pages/layout.html"))
	out := map[string]*template.Template{}
	for _, p := range pageList {
		out[p.Name] = template.Must(template.Must(layout.Clone()).ParseFS(assets, "assets/pages/"+p.Name+".html"))
	}
	return out
}()

type pageData struct {
	Page  page
	Param string
	Nav   any
}

// Register adds the pages, the assets and the JSON and event endpoints to
// mux (jobsapi.Config.Mount).
func (d *Dashboard) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(assets, "assets/static")
	files := http.StripPrefix(StaticPrefix, http.FileServerFS(static))
	mux.Handle("GET "+StaticPrefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	routes := map[string]string{
		"GET /{$}":              "overview",
		"GET /nodes":            "nodes",
		"GET /actors":           "actors",
		"GET /tasks":            "tasks",
		"GET /tasks/{id}":       "task",
		"GET /objects":          "objects",
		"GET /workers":          "workers",
		"GET /jobs":             "jobs",
		"GET /jobs/{id}":        "job",
		"GET /placement-groups": "placement_groups",
		"GET /lineage":          "lineage",
		"GET /serve":            "serve",
	}
	for pattern, name := range routes {
		mux.HandleFunc(pattern, d.servePage(name))
	}
	mux.HandleFunc("GET /api/manta/heads", d.serveHeads)
	mux.HandleFunc("GET /api/manta/nodes", d.serveNodes)
	mux.HandleFunc("GET /api/manta/autoscaler", d.serveAutoscaler)
	mux.HandleFunc("GET /api/manta/serve", d.serveServe)
	mux.HandleFunc("GET /api/manta/actors", d.serveActors)
	mux.HandleFunc("GET /api/manta/jobs", d.serveJobs)
	mux.HandleFunc("GET /api/manta/tasks/{id}", d.serveTaskRecord)
	mux.HandleFunc("GET /api/manta/lineage/{id}", d.serveLineage)
	mux.HandleFunc("GET /api/manta/events", d.serveEvents)
}

func (d *Dashboard) servePage(name string) http.HandlerFunc {
	var p page
	for _, q := range pageList {
		if q.Name == name {
			p = q
		}
	}
	t := templates[name]
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// Only this server's own scripts and styles: an injected string
		// cannot run.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		if err := t.ExecuteTemplate(w, "layout", pageData{Page: p, Param: r.PathValue("id"), Nav: navItems}); err != nil {
			d.log.Warn("render page", zap.String("page", name), zap.Error(err))
		}
	}
}

// serveEvents is the server-sent event stream every page opens: "change"
// when the control-plane watch moves, "heads" with the heads' Raft state
// each StatusInterval.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	ch, cancel := d.hub.subscribe()
	defer cancel()
	// A page whose head went away retries after a second.
	if _, err := w.Write([]byte("retry: 1000\n\n")); err != nil {
		return
	}
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case f, ok := <-ch:
			if !ok {
				return
			}
			if _, err := w.Write(f); err != nil {
				return
			}
		case <-ping.C:
			if _, err := w.Write([]byte(": ping\n\n")); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-d.ctx.Done():
			return
		}
		fl.Flush()
	}
}
