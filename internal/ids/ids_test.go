package ids

import "testing"

func TestIDsAreDeterministic(t *testing.T) {
	root := DriverTaskID("job-1")
	a, b := NewTaskID("job-1", root, 1), NewTaskID("job-1", root, 1)
	if a != b {
		t.Fatal("same inputs gave different task IDs")
	}
	if a == NewTaskID("job-1", root, 2) || a == NewTaskID("job-2", DriverTaskID("job-2"), 1) {
		t.Fatal("different inputs gave the same task ID")
	}
	r, p := ReturnID(a, 1), PutID(a, 1)
	if r == p || r.Task() != a || p.Task() != a || r.Index() != 1 || p.Index() != 1 || r.IsPut() || !p.IsPut() {
		t.Fatalf("return %s and put %s IDs are wrong", r, p)
	}
	back, err := ObjectFromBytes(r[:])
	if err != nil || back != r {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if _, err := ObjectFromBytes([]byte{1, 2}); err == nil {
		t.Fatal("short object ID accepted")
	}
	if len(r.String()) != 2*ObjectIDSize {
		t.Fatalf("hex form %q", r.String())
	}
}
