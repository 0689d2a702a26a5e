package localaddr

import "testing"

func TestFor(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"127.0.0.1:7379", "127.0.0.1"},
		{":7379", "127.0.0.1"},
		{"0.0.0.0:7379", "127.0.0.1"},
		{"", "127.0.0.1"},
	} {
		if got := For(tc.remote); got != tc.want {
			t.Errorf("For(%q) = %q, want %q", tc.remote, got, tc.want)
		}
	}
}
