package serve

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.yaml.in/yaml/v3"

	"github.com/manta-ray/manta/controlplane/cpclient"
	"github.com/manta-ray/manta/internal/artifact"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

// Config is a declarative Serve config (manta serve deploy), after Ray's:
// the applications of one job binary, each naming the deployments the
// binary registers.
//
//	binary: ./bin/calc          # relative to the config file
//	http_options: {port: 8000, request_timeout_s: 30, max_request_bytes: 10485760}
//	applications:
//	  - name: calc
//	    route_prefix: /calc
//	    deployments:
//	      - name: test.pre       # as registered with serve.HTTP / serve.Typed
//	        ingress: true
//	        num_replicas: 2
//	        args: {Model: {deployment: test.model}}
//	      - name: test.model
//	        args: 3
//	        autoscaling: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 2}
type Config struct {
	Binary       string      `yaml:"binary"`
	HTTPOptions  HTTPOptions `yaml:"http_options"`
	Applications []ConfigApp `yaml:"applications"`
	dir          string      // the config file's directory
}

// HTTPOptions are the proxies' options.
type HTTPOptions struct {
	Port            *int    `yaml:"port"`
	RequestTimeoutS float64 `yaml:"request_timeout_s"`
	MaxRequestBytes int64   `yaml:"max_request_bytes"`
}

// ConfigApp is one application.
type ConfigApp struct {
	Name        string             `yaml:"name"`
	RoutePrefix string             `yaml:"route_prefix"`
	Deployments []ConfigDeployment `yaml:"deployments"`
}

// ConfigDeployment is one deployment of an application.
type ConfigDeployment struct {
	Name               string             `yaml:"name"`
	Ingress            bool               `yaml:"ingress"`
	NumReplicas        *int               `yaml:"num_replicas"`
	MaxOngoingRequests int                `yaml:"max_ongoing_requests"`
	MaxQueuedRequests  *int               `yaml:"max_queued_requests"`
	Version            string             `yaml:"version"`
	Args               any                `yaml:"args"`
	Autoscaling        *ConfigAutoscaling `yaml:"autoscaling"`
	ActorOptions       ConfigActorOptions `yaml:"ray_actor_options"`
}

// ConfigAutoscaling is a deployment's autoscaling.
type ConfigAutoscaling struct {
	MinReplicas           int     `yaml:"min_replicas"`
	MaxReplicas           int     `yaml:"max_replicas"`
	TargetOngoingRequests float64 `yaml:"target_ongoing_requests"`
	UpscaleDelayS         float64 `yaml:"upscale_delay_s"`
	DownscaleDelayS       float64 `yaml:"downscale_delay_s"`
}

// ConfigActorOptions are a replica's resources.
type ConfigActorOptions struct {
	NumCPUs    float64            `yaml:"num_cpus"`
	NumGPUs    float64            `yaml:"num_gpus"`
	Resources  map[string]float64 `yaml:"resources"`
	RuntimeEnv struct {
		EnvVars map[string]string `yaml:"env_vars"`
	} `yaml:"runtime_env"`
}

// LoadConfig reads and validates a config file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	return c, nil
}

// ParseConfig decodes YAML strictly (an unknown field is an error naming
// it) and validates it.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks the config, naming the field at fault.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, a...)...)
	}
	if c.Binary == "" {
		return bad("binary: required (the job binary that registers the deployments)")
	}
	if p := c.HTTPOptions.Port; p != nil && (*p < 0 || *p > 65535) {
		return bad("http_options.port %d out of range", *p)
	}
	if c.HTTPOptions.RequestTimeoutS < 0 || c.HTTPOptions.MaxRequestBytes < 0 {
		return bad("http_options: request_timeout_s and max_request_bytes must be >= 0")
	}
	if len(c.Applications) == 0 {
		return bad("applications: at least one is required")
	}
	names, routes := map[string]int{}, map[string]int{}
	for i, a := range c.Applications {
		f := fmt.Sprintf("applications[%d]", i)
		if a.Name == "" {
			return bad("%s.name: required", f)
		}
		if j, dup := names[a.Name]; dup {
			return bad("%s.name %q: duplicates applications[%d]", f, a.Name, j)
		}
		names[a.Name] = i
		if a.RoutePrefix == "" {
			return bad("%s.route_prefix: required", f)
		}
		if !strings.HasPrefix(a.RoutePrefix, "/") {
			return bad("%s.route_prefix %q: must start with '/'", f, a.RoutePrefix)
		}
		if j, dup := routes[a.RoutePrefix]; dup {
			return bad("%s.route_prefix %q: duplicates applications[%d].route_prefix", f, a.RoutePrefix, j)
		}
		routes[a.RoutePrefix] = i
		if len(a.Deployments) == 0 {
			return bad("%s.deployments: at least one is required", f)
		}
		ingress := 0
		deps := map[string]bool{}
		for k, d := range a.Deployments {
			df := fmt.Sprintf("%s.deployments[%d]", f, k)
			if d.Name == "" {
				return bad("%s.name: required", df)
			}
			if deps[d.Name] {
				return bad("%s.name %q: used twice", df, d.Name)
			}
			deps[d.Name] = true
			if d.Ingress {
				ingress++
			}
			if d.NumReplicas != nil && *d.NumReplicas < 0 {
				return bad("%s.num_replicas %d: must be >= 0", df, *d.NumReplicas)
			}
			if d.MaxOngoingRequests < 0 {
				return bad("%s.max_ongoing_requests %d: must be >= 1", df, d.MaxOngoingRequests)
			}
			if d.MaxQueuedRequests != nil && *d.MaxQueuedRequests < 0 {
				return bad("%s.max_queued_requests: must be >= 0", df)
			}
			if as := d.Autoscaling; as != nil && (as.MinReplicas < 0 || as.MaxReplicas < as.MinReplicas || as.MaxReplicas < 1 ||
				!(as.TargetOngoingRequests > 0) || as.UpscaleDelayS < 0 || as.DownscaleDelayS < 0) {
				return bad("%s.autoscaling: want 0 <= min_replicas <= max_replicas, max_replicas >= 1, target_ongoing_requests > 0", df)
			}
			o := d.ActorOptions
			if o.NumCPUs < 0 || o.NumGPUs < 0 {
				return bad("%s.ray_actor_options: num_cpus and num_gpus must be >= 0", df)
			}
			for r, v := range o.Resources {
				if v < 0 {
					return bad("%s.ray_actor_options.resources.%s: must be >= 0", df, r)
				}
			}
		}
		if len(a.Deployments) == 1 && ingress == 0 {
			a.Deployments[0].Ingress = true
			c.Applications[i] = a
			ingress = 1
		}
		if ingress != 1 {
			return bad("%s.deployments: exactly one must be ingress: true (found %d)", f, ingress)
		}
	}
	return nil
}

// BinaryPath is the binary's path (relative to the config file's
// directory when the config was loaded from a file).
func (c *Config) BinaryPath() string {
	if filepath.IsAbs(c.Binary) || c.dir == "" {
		return c.Binary
	}
	return filepath.Join(c.dir, c.Binary)
}

// Apps builds the applications of the config for job jobID whose binary
// has digest sha.
func (c *Config) Apps(jobID, sha string) ([]*pb.ServeApp, error) {
	port := DefaultHTTPPort
	if c.HTTPOptions.Port != nil {
		port = *c.HTTPOptions.Port
	}
	var out []*pb.ServeApp
	for _, a := range c.Applications {
		app := &pb.ServeApp{Name: a.Name, RoutePrefix: a.RoutePrefix, JobId: jobID, BinarySha256: sha, HttpPort: int32(port),
			MaxRequestBytes: c.HTTPOptions.MaxRequestBytes, RequestTimeoutMs: int64(c.HTTPOptions.RequestTimeoutS * 1000)}
		for k, d := range a.Deployments {
			arg, err := msgpack.Marshal(d.Args)
			if err != nil {
				return nil, fmt.Errorf("%w: applications[%s].deployments[%d].args: %v", ErrBadConfig, a.Name, k, err)
			}
			o := defaultOptions()
			b := &Bound{def: &deploymentDef{name: d.Name, class: "serve:" + d.Name}, arg: arg, opts: o}
			if d.NumReplicas != nil {
				b.opts.numReplicas = *d.NumReplicas
			}
			if d.MaxOngoingRequests > 0 {
				b.opts.maxOngoing = d.MaxOngoingRequests
			}
			if d.MaxQueuedRequests != nil {
				b.opts.maxQueued = *d.MaxQueuedRequests
			}
			b.opts.version = d.Version
			ao := d.ActorOptions
			var opts []Option
			if ao.NumCPUs > 0 {
				opts = append(opts, NumCPUs(ao.NumCPUs))
			}
			if ao.NumGPUs > 0 {
				opts = append(opts, NumGPUs(ao.NumGPUs))
			}
			if len(ao.Resources) > 0 {
				opts = append(opts, Resources(ao.Resources))
			}
			if len(ao.RuntimeEnv.EnvVars) > 0 {
				opts = append(opts, EnvVars(ao.RuntimeEnv.EnvVars))
			}
			if as := d.Autoscaling; as != nil {
				opts = append(opts, Autoscaling{Min: as.MinReplicas, Max: as.MaxReplicas, TargetOngoingRequests: as.TargetOngoingRequests,
					UpscaleDelay: secs(as.UpscaleDelayS), DownscaleDelay: secs(as.DownscaleDelayS)})
			}
			b.opts = b.opts.with(opts)
			spec := b.spec(d.Ingress)
			// The config cannot know whether the class streams; the
			// binary's proxy reads it from its own registry.
			app.Deployments = append(app.Deployments, spec)
		}
		out = append(out, app)
	}
	return out, nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Deploy uploads the config's binary, registers a job for it (its
// replicas' and proxies' workers run it) and deploys every application.
func (c *Config) Deploy(ctx context.Context, cp *cpclient.Client) ([]*pb.ServeApp, error) {
	sha, err := artifact.Upload(ctx, cp, c.BinaryPath())
	if err != nil {
		return nil, err
	}
	jobID, err := cp.AddJob(ctx, &pb.JobInfo{Entrypoint: "manta serve deploy " + c.BinaryPath(),
		Metadata: map[string]string{"binary_sha256": sha, "serve": "true"}})
	if err != nil {
		return nil, fmt.Errorf("serve: register the job: %w", err)
	}
	apps, err := c.Apps(jobID, sha)
	if err != nil {
		return nil, err
	}
	for _, a := range apps {
		if err := cp.ServeDeploy(ctx, a); err != nil {
			return nil, fmt.Errorf("serve: deploy %s: %w", a.Name, err)
		}
	}
	return apps, nil
}
