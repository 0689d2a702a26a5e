package resources

import (
	"errors"
	"math"
	"testing"
)

func TestParseAndValidate(t *testing.T) {
	s, err := Parse("CPU=2, special=1")
	if err != nil || s["CPU"] != 2 || s["special"] != 1 {
		t.Fatalf("parse: %v %v", s, err)
	}
	for _, bad := range []string{"CPU", "CPU=x", "CPU=-1", "=3"} {
		if _, err := Parse(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v; want ErrInvalid", bad, err)
		}
	}
	if err := Validate(map[string]float64{"CPU": math.NaN()}); !errors.Is(err, ErrInvalid) {
		t.Errorf("NaN accepted: %v", err)
	}
}

func TestFitsSubAddUtilization(t *testing.T) {
	total := Set{"CPU": 4, "GPU": 1}
	avail := total.Clone()
	req := Set{"CPU": 3}
	if !avail.Fits(req) {
		t.Fatal("3 CPUs should fit in 4")
	}
	avail.Sub(req)
	if avail.Fits(req) || !avail.Fits(Set{"CPU": 1, "GPU": 1}) {
		t.Fatalf("fits after sub wrong: %v", avail)
	}
	if u := Utilization(total, avail, Set{"CPU": 1}); u != 0.75 {
		t.Fatalf("utilization %v", u)
	}
	avail.Add(req)
	if avail["CPU"] != 4 {
		t.Fatalf("add: %v", avail)
	}
	if k := (Set{"GPU": 1, "CPU": 2, "x": 0}).Key(); k != "CPU=2,GPU=1" {
		t.Fatalf("key %q", k)
	}
}

// TestAddSubLeaveNoDrift: an amount taken and given back in tenths many
// times comes back whole.
func TestAddSubLeaveNoDrift(t *testing.T) {
	s := Set{CPU: 2}
	tenth := Set{CPU: 0.1}
	for range 1000 {
		for range 7 {
			s.Sub(tenth)
		}
		for range 7 {
			s.Add(tenth)
		}
	}
	if s[CPU] != 2 {
		t.Fatalf("%v CPUs after balanced takes and returns; want 2", s[CPU])
	}
}
