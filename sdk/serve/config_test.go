package serve_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/manta-ray/manta/sdk/internal/core"
	"github.com/manta-ray/manta/sdk/serve"
)

// TestConfigValidation: malformed configs are refused naming the field.
func TestConfigValidation(t *testing.T) {
	const good = `
binary: ./calc
http_options: {port: 0}
applications:
  - name: calc
    route_prefix: /calc
    deployments:
      - name: test.pre
        ingress: true
        args: {Model: {deployment: test.model}}
      - name: test.model
        args: 3
`
	if _, err := serve.ParseConfig([]byte(good)); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown field", strings.Replace(good, "route_prefix: /calc", "route_prefix: /calc\n    routes: /x", 1), "routes"},
		{"unknown nested field", strings.Replace(good, "args: 3", "args: 3\n        replicas: 2", 1), "replicas"},
		{"missing route", strings.Replace(good, "    route_prefix: /calc\n", "", 1), "applications[0].route_prefix: required"},
		{"duplicate route", good + `  - name: other
    route_prefix: /calc
    deployments: [{name: test.echo}]
`, `applications[1].route_prefix "/calc": duplicates applications[0].route_prefix`},
		{"bad route", strings.Replace(good, "route_prefix: /calc", "route_prefix: calc", 1), "applications[0].route_prefix"},
		{"two ingress", strings.Replace(good, "args: 3", "args: 3\n        ingress: true", 1), "exactly one must be ingress"},
		{"negative replicas", strings.Replace(good, "args: 3", "args: 3\n        num_replicas: -1", 1), "deployments[1].num_replicas"},
		{"bad autoscaling", strings.Replace(good, "args: 3", "args: 3\n        autoscaling: {min_replicas: 3, max_replicas: 1, target_ongoing_requests: 1}", 1), "deployments[1].autoscaling"},
		{"no binary", strings.Replace(good, "binary: ./calc", "", 1), "binary: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := serve.ParseConfig([]byte(tc.yaml))
			if err == nil || !errors.Is(err, serve.ErrBadConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrBadConfig naming %q", err, tc.want)
			}
		})
	}
}

// TestConfigDeploy: a config naming this test binary's deployments is
// deployed as manta serve deploy does it (binary uploaded, a job of its
// own), and serves.
func TestConfigDeploy(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	cfg, err := serve.ParseConfig([]byte(fmt.Sprintf(`
binary: %s
http_options: {port: 0}
applications:
  - name: fromconfig
    route_prefix: /cfg
    deployments:
      - name: test.pre
        ingress: true
        args: {Model: {deployment: test.model}}
      - name: test.model
        num_replicas: 2
        args: 5
`, os.Args[0])))
	if err != nil {
		t.Fatal(err)
	}
	c, err := core.Current()
	if err != nil {
		t.Fatal(err)
	}
	cp, err := c.ControlPlane()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Deploy(ctx, cp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serve.Delete(ctx, "fromconfig") })
	if err := serve.WaitHealthy(ctx, "fromconfig"); err != nil {
		t.Fatal(err)
	}
	base := proxyURL(t, ctx)
	eventually(t, 30*time.Second, func() error {
		if code, body, _ := get(t, base+"/cfg?x=4"); code != 200 || body != "20" {
			return fmt.Errorf("GET /cfg?x=4: %d %q", code, body)
		}
		return nil
	})
}
