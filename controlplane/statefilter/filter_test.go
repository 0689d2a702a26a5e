package statefilter

import (
	"errors"
	"strings"
	"testing"

	"github.com/manta-ray/manta/internal/rpcerr"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func TestParseAndMatch(t *testing.T) {
	s := Schema{"state": String, "attempt_number": Int, "is_alive": Bool}
	row := map[string]any{"state": "FAILED", "attempt_number": int32(2), "is_alive": true}
	get := func(k string) any { return row[k] }
	cases := []struct {
		filters []string
		want    bool
	}{
		{[]string{"state=FAILED"}, true},
		{[]string{"state=failed"}, true},
		{[]string{"state!=FAILED"}, false},
		{[]string{"state!=RUNNING", "attempt_number=2"}, true},
		{[]string{"attempt_number=3"}, false},
		{[]string{"is_alive=True"}, true},
		{[]string{"is_alive!=true"}, false},
		{nil, true},
	}
	for _, c := range cases {
		fs, err := ParseAll(c.filters)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Check(fs); err != nil {
			t.Fatalf("%v: %v", c.filters, err)
		}
		if got := s.Match(fs, get); got != c.want {
			t.Errorf("%v: match %v, want %v", c.filters, got, c.want)
		}
	}
}

func TestBadFiltersNameTheField(t *testing.T) {
	s := Schema{"state": String, "attempt_number": Int}
	for _, c := range []struct{ filter, field string }{
		{"colour=red", "colour"},
		{"attempt_number=two", "attempt_number"},
	} {
		f, err := Parse(c.filter)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Check([]*pb.StateFilter{f})
		if !errors.Is(err, ErrBadFilter) || !errors.Is(err, rpcerr.ErrInvalidArgument) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v", c.filter, err)
		}
	}
	if _, err := Parse("novalue"); !errors.Is(err, ErrBadFilter) {
		t.Errorf("no predicate: %v", err)
	}
	if err := s.Check([]*pb.StateFilter{{Key: "state", Predicate: "~", Value: "x"}}); !errors.Is(err, ErrBadFilter) {
		t.Errorf("bad predicate: %v", err)
	}
}
