package workerlog

import (
	"bytes"
	"testing"
)

func TestMarkersRoundTripAndAttribute(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTaskMarker(&buf, "t1", 2, "square", ""); err != nil {
		t.Fatal(err)
	}
	if err := WriteActorMarker(&buf, "a1", "Counter"); err != nil {
		t.Fatal(err)
	}
	if err := WriteTaskMarker(&buf, "t2", 0, "Counter.incr", "a1"); err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(buf.Bytes(), []byte("\n"))
	var a Attribution
	want := []Attribution{
		{TaskID: "t1", Attempt: 2, Name: "square"},
		{ActorID: "a1", Class: "Counter"},
		{TaskID: "t2", Name: "Counter.incr", ActorID: "a1", Class: "Counter"},
	}
	for i, w := range want {
		m, ok := Parse(lines[i])
		if !ok {
			t.Fatalf("line %q is not a marker", lines[i])
		}
		a.Apply(m)
		if a != w {
			t.Fatalf("after marker %d: %+v, want %+v", i, a, w)
		}
	}
	if a.Label() != "Counter" {
		t.Fatalf("an actor's line is labelled %q", a.Label())
	}
	for _, s := range []string{"hello", ":manta_task:{}", TaskPrefix + "{not json", TaskPrefix + "a\x1fnot-a-number\x1f\x1fname", ActorPrefix + "no-class", ""} {
		if _, ok := Parse([]byte(s)); ok {
			t.Fatalf("%q parsed as a marker", s)
		}
	}
	if got := Prefix("square", 12, "n2"); got != "(square pid=12, node=n2) " {
		t.Fatalf("prefix %q", got)
	}
	if got := Prefix("", 12, "n2"); got != "(pid=12, node=n2) " {
		t.Fatalf("prefix without a task %q", got)
	}
}
