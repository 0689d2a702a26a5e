package autoscaler

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaultsAndErrors(t *testing.T) {
	c, err := ParseConfig([]byte(`
node_types:
  - name: big
    resources: {CPU: 1, big: 1}
    max_count: 2
idle_timeout: 5s
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Provider.Type != "local" || c.MaxNodes != 2 || c.IdleTimeout != 5*time.Second || c.LaunchTimeout != time.Minute || c.UpscalingSpeed != 1 {
		t.Fatalf("defaults: %+v", c)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", "node_types: [{name: a, resources: {CPU: 1}, max_count: 1, colour: red}]", "colour"},
		{"min over max", "node_types: [{name: a, resources: {CPU: 1}, min_count: 3, max_count: 1}]", "min_count 3 > max_count 1"},
		{"no resources", "node_types: [{name: a, max_count: 1}]", "resources are required"},
		{"negative resource", "node_types: [{name: a, resources: {CPU: -1}, max_count: 1}]", "positive amount"},
		{"duplicate", "node_types: [{name: a, resources: {CPU: 1}, max_count: 1}, {name: a, resources: {CPU: 1}, max_count: 1}]", "defined twice"},
		{"no types", "max_nodes: 3", "at least one node type"},
		{"mins over max_nodes", "max_nodes: 1\nnode_types: [{name: a, resources: {CPU: 1}, min_count: 2, max_count: 2}]", "max_nodes 1"},
		{"bad provider", "provider: {type: aws}\nnode_types: [{name: a, resources: {CPU: 1}, max_count: 1}]", "local or kubernetes"},
		{"reserved label", "node_types: [{name: a, resources: {CPU: 1}, max_count: 1, labels: {manta.io/node-type: x}}]", "set by the autoscaler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadConfig mentioning %q", err, tc.want)
			}
		})
	}
}
