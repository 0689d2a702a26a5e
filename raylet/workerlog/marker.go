// Package workerlog defines the marker lines a worker prints into its own
// output so that whoever reads the output can tell which task or actor
// printed the lines that follow, as Ray's :task_name:/:actor_name: lines
// do. Tasks are pushed from owner to worker without passing the raylet, so
// the worker itself is the only party that knows; its output file is the
// channel it already has. The SDK's executor writes a marker before it
// runs a task and when it becomes an actor; the raylet's log reader parses
// markers, strips them, and attributes the lines after them.
//
// A marker is one line: a fixed prefix and fields separated by 0x1f. A worker's stdout
// and stderr share one pipe, so a marker written to either orders with
// lines written to both.
package workerlog

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
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
	b := make([]byte, 0, len(TaskPrefix)+len(taskID)+len(name)+len(actorID)+16)
	b = append(b, TaskPrefix...)
	b = append(b, taskID...)
	b = append(b, sep)
	b = strconv.AppendInt(b, int64(attempt), 10)
	b = append(b, sep)
	b = appendClean(b, actorID)
	b = append(b, sep)
	b = appendClean(b, name)
	_, err := w.Write(append(b, '\n'))
	return err
}

// WriteActorMarker writes the line that announces the worker is now the
// actor actorID of class class.
func WriteActorMarker(w io.Writer, actorID, class string) error {
	b := make([]byte, 0, len(ActorPrefix)+len(actorID)+len(class)+4)
	b = append(b, ActorPrefix...)
	b = appendClean(b, actorID)
	b = append(b, sep)
	b = appendClean(b, class)
	_, err := w.Write(append(b, '\n'))
	return err
}

// A marker's fields are separated by the ASCII unit separator, which no
// name needs: markers are written before every task, and their parsing is
// on the raylet's path of every line, so they are cheaper than JSON. One
// Write call, so that on a pipe (atomic up to PIPE_BUF) a marker cannot
// interleave with another goroutine's line.
const sep = 0x1f

// appendClean appends s with the bytes that would break a marker's line or
// fields replaced.
func appendClean(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || c == '\r' || c == sep {
			c = '?'
		}
		b = append(b, c)
	}
	return b
}

// Parse reports whether line (without or with its newline) is a marker,
// and which.
func Parse(line []byte) (Marker, bool) {
	line = bytes.TrimRight(line, "\r\n")
	switch {
	case bytes.HasPrefix(line, []byte(TaskPrefix)):
		f := bytes.SplitN(line[len(TaskPrefix):], []byte{sep}, 4)
		if len(f) != 4 {
			return Marker{}, false
		}
		attempt, err := strconv.Atoi(string(f[1]))
		if err != nil {
			return Marker{}, false
		}
		return Marker{Kind: KindTask, TaskID: string(f[0]), Attempt: attempt, ActorID: string(f[2]), Name: string(f[3])}, true
	case bytes.HasPrefix(line, []byte(ActorPrefix)):
		f := bytes.SplitN(line[len(ActorPrefix):], []byte{sep}, 2)
		if len(f) != 2 {
			return Marker{}, false
		}
		return Marker{Kind: KindActor, ActorID: string(f[0]), Class: string(f[1])}, true
	}
	return Marker{}, false
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
