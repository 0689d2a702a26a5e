// Package workerlog defines the marker lines a worker prints into its own
// output so that whoever reads the output can tell which task or actor
// printed the lines that follow, as Ray's :task_name:/:actor_name: lines
// do. Tasks are pushed from owner to worker without passing the raylet, so
// the worker itself is the only party that knows; its output file is the
// channel it already has. The SDK's executor writes a marker before it
// runs a task and when it becomes an actor; the raylet's log reader parses
// markers, strips them, and attributes the lines after them.
//
// A marker is one line: a fixed prefix and a JSON object. A worker's stdout
// and stderr share one pipe, so a marker written to either orders with
// lines written to both.
package workerlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Prefixes of the two marker lines. They start with a byte no ordinary
// output line starts with, so user output is never mistaken for a marker.
const (
	TaskPrefix  = "\x1e:manta_task:"
	ActorPrefix = "\x1e:manta_actor:"
)

// Kind is what a marker announces.
type Kind int

const (
	// KindTask: the worker starts running a task (or an actor method).
	KindTask Kind = iota + 1
	// KindActor: the worker became an actor's; it stays one until it exits.
	KindActor
)

// Marker is one parsed marker line.
type Marker struct {
	Kind    Kind   `json:"-"`
	TaskID  string `json:"task_id,omitempty"`
	Attempt int    `json:"attempt,omitempty"`
	// Name is the task's function, or "Class.method" for an actor method.
	Name    string `json:"name,omitempty"`
	ActorID string `json:"actor_id,omitempty"`
	// Class is the actor's class (KindActor).
	Class string `json:"class,omitempty"`
}

// WriteTaskMarker writes the line that announces a task attempt: lines the
// worker prints after it are the task's until the next marker. actorID is
// the actor's for an actor method, else empty.
func WriteTaskMarker(w io.Writer, taskID string, attempt int, name, actorID string) error {
	return write(w, TaskPrefix, Marker{TaskID: taskID, Attempt: attempt, Name: name, ActorID: actorID})
}

// WriteActorMarker writes the line that announces the worker is now the
// actor actorID of class class.
func WriteActorMarker(w io.Writer, actorID, class string) error {
	return write(w, ActorPrefix, Marker{ActorID: actorID, Class: class})
}

// write emits the marker in one Write call, so that on a pipe (atomic up to
// PIPE_BUF) it cannot interleave with another goroutine's line.
func write(w io.Writer, prefix string, m Marker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	line := make([]byte, 0, len(prefix)+len(b)+1)
	line = append(append(append(line, prefix...), b...), '\n')
	_, err = w.Write(line)
	return err
}

// Parse reports whether line (without or with its newline) is a marker,
// and which.
func Parse(line []byte) (Marker, bool) {
	var m Marker
	var body []byte
	switch {
	case bytes.HasPrefix(line, []byte(TaskPrefix)):
		m.Kind, body = KindTask, line[len(TaskPrefix):]
	case bytes.HasPrefix(line, []byte(ActorPrefix)):
		m.Kind, body = KindActor, line[len(ActorPrefix):]
	default:
		return Marker{}, false
	}
	kind := m.Kind
	if err := json.Unmarshal(bytes.TrimRight(body, "\r\n"), &m); err != nil {
		return Marker{}, false
	}
	m.Kind = kind
	return m, true
}

// Attribution is what a worker runs at some point of its output: the last
// task marker seen and the actor it belongs to, if any.
type Attribution struct {
	TaskID  string
	Attempt int
	Name    string // the task's function or actor method
	ActorID string
	Class   string
}

// Apply moves the attribution past marker m.
func (a *Attribution) Apply(m Marker) {
	switch m.Kind {
	case KindActor:
		a.ActorID, a.Class = m.ActorID, m.Class
		a.TaskID, a.Attempt, a.Name = "", 0, ""
	case KindTask:
		a.TaskID, a.Attempt, a.Name = m.TaskID, m.Attempt, m.Name
		if m.ActorID != "" {
			a.ActorID = m.ActorID
		}
	}
}

// Label is the name Ray puts in front of a line: the actor's class for an
// actor's worker, else the running task's function ("" before any task).
func (a Attribution) Label() string {
	if a.Class != "" {
		return a.Class
	}
	return a.Name
}

// Prefix is Ray's line prefix: "(label pid=123, node=n1) ", or without the
// label when the worker has run nothing yet.
func Prefix(label string, pid int, node string) string {
	if label == "" {
		return fmt.Sprintf("(pid=%d, node=%s) ", pid, node)
	}
	return fmt.Sprintf("(%s pid=%d, node=%s) ", label, pid, node)
}
