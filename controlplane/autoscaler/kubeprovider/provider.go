// Package kubeprovider is the autoscaler's Kubernetes provider: a node is
// a raylet pod, made from a pod template per node type, through client-go.
// It is apart from package autoscaler so that only what needs client-go
// links it.
package kubeprovider

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/manta-ray/manta/controlplane/autoscaler"
)

// Labels on every raylet pod the provider makes.
const (
	LabelComponent = "app.kubernetes.io/component"
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelCluster   = "manta.io/cluster"
	componentValue = "raylet"
	partOfValue    = "manta"
	// ContainerName is the container of a pod template that runs the raylet.
	ContainerName = "raylet"
	// TokenPath is where a raylet pod finds the cluster token (the Secret
	// mounted by the default template).
	TokenPath = "/etc/manta/token/token"
)

// Options configure the provider.
type Options struct {
	Client    kubernetes.Interface
	Namespace string
	// Cluster names the cluster; pods carry it as LabelCluster so two
	// clusters in one namespace keep apart.
	Cluster string
	// Heads are the heads' gRPC addresses the raylets join (e.g. the
	// StatefulSet's pods behind the headless service).
	Heads []string
	// Image is the raylet image of node types without a pod template.
	Image string
	// TokenSecret is the Secret (key "token") the default template mounts.
	TokenSecret string
	// Templates are pod templates by node type name; others get the default.
	Templates map[string]*corev1.PodTemplateSpec
}

// Provider launches raylets as pods.
type Provider struct{ o Options }

// New returns a provider.
func New(o Options) (*Provider, error) {
	if o.Client == nil {
		return nil, fmt.Errorf("kubernetes provider: a client is required")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Cluster == "" {
		o.Cluster = "manta"
	}
	if len(o.Heads) == 0 {
		return nil, fmt.Errorf("kubernetes provider: the heads' addresses are required")
	}
	return &Provider{o: o}, nil
}

// InCluster returns a clientset from the pod's service account.
func InCluster() (kubernetes.Interface, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes provider: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}

// LoadTemplates reads each node type's pod_template file (relative to
// dir): a PodTemplateSpec in YAML, with a container named "raylet".
func LoadTemplates(cfg *autoscaler.Config, dir string) (map[string]*corev1.PodTemplateSpec, error) {
	out := map[string]*corev1.PodTemplateSpec{}
	for _, t := range cfg.NodeTypes {
		if t.PodTemplate == "" {
			continue
		}
		path := t.PodTemplate
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("node type %q: %w", t.Name, err)
		}
		var tpl corev1.PodTemplateSpec
		if err := yaml.UnmarshalStrict(b, &tpl); err != nil {
			return nil, fmt.Errorf("node type %q: pod template %s: %w", t.Name, path, err)
		}
		if raylet(&tpl.Spec) == nil {
			return nil, fmt.Errorf("node type %q: pod template %s has no container named %q", t.Name, path, ContainerName)
		}
		out[t.Name] = &tpl
	}
	return out, nil
}

func raylet(spec *corev1.PodSpec) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == ContainerName {
			return &spec.Containers[i]
		}
	}
	return nil
}

func (p *Provider) selector() string {
	return fmt.Sprintf("%s=%s,%s=%s", LabelComponent, componentValue, LabelCluster, p.o.Cluster)
}

// Pod is the pod an instance runs in (exported for tests and tools).
func (p *Provider) Pod(inst autoscaler.Instance) *corev1.Pod {
	var tpl corev1.PodTemplateSpec
	if t := p.o.Templates[inst.Type.Name]; t != nil {
		tpl = *t.DeepCopy()
	} else {
		tpl = p.defaultTemplate()
	}
	pod := &corev1.Pod{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec}
	pod.Name, pod.Namespace, pod.GenerateName = inst.ID, p.o.Namespace, ""
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[LabelComponent] = componentValue
	pod.Labels[LabelPartOf] = partOfValue
	pod.Labels[LabelCluster] = p.o.Cluster
	pod.Labels[autoscaler.LabelNodeType] = labelValue(inst.Type.Name)
	pod.Labels[autoscaler.LabelInstance] = inst.ID
	// A failed raylet pod is replaced by the autoscaler, not restarted in
	// place: a restarted raylet is a new node anyway.
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	c := raylet(&pod.Spec)
	c.Env = append(c.Env, corev1.EnvVar{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}})
	args := []string{"start", "--address", strings.Join(p.o.Heads, ","), "--host", "$(POD_IP)",
		"--data-dir", "/var/lib/manta"}
	c.Args = append(append(args, autoscaler.RayletArgs(inst)...), c.Args...)
	return pod
}

// labelValue makes a node type name a valid label value.
func labelValue(s string) string {
	var sb strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
	}
	v := sb.String()
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Trim(v, "-_.")
}

func (p *Provider) defaultTemplate() corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{
			Name: ContainerName, Image: p.o.Image, Command: []string{"/manta"},
			Args: []string{"--token-file", TokenPath},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "token", MountPath: filepath.Dir(TokenPath), ReadOnly: true},
				{Name: "data", MountPath: "/var/lib/manta"},
				{Name: "shm", MountPath: "/dev/shm"},
			},
		}},
		Volumes: []corev1.Volume{
			{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: p.o.TokenSecret}}},
			{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "shm", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}},
		},
	}}
}

// Launch creates the instance's pod; one that exists already is fine.
func (p *Provider) Launch(ctx context.Context, inst autoscaler.Instance) error {
	_, err := p.o.Client.CoreV1().Pods(p.o.Namespace).Create(ctx, p.Pod(inst), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create pod %s: %w", inst.ID, err)
	}
	return nil
}

// Terminate deletes the instance's pod; a missing one is fine.
func (p *Provider) Terminate(ctx context.Context, id string) error {
	err := p.o.Client.CoreV1().Pods(p.o.Namespace).Delete(ctx, id, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s: %w", id, err)
	}
	return nil
}

// Instances lists the cluster's raylet pods: failed once the pod failed
// or ended (a raylet does not end on its own).
func (p *Provider) Instances(ctx context.Context) (map[string]autoscaler.InstanceStatus, error) {
	pods, err := p.o.Client.CoreV1().Pods(p.o.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.selector()})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := map[string]autoscaler.InstanceStatus{}
	for _, pod := range pods.Items {
		id := pod.Labels[autoscaler.LabelInstance]
		if id == "" || pod.DeletionTimestamp != nil {
			continue
		}
		switch pod.Status.Phase {
		case corev1.PodFailed, corev1.PodSucceeded:
			out[id] = autoscaler.StatusFailed
		default:
			out[id] = autoscaler.StatusRunning
		}
	}
	return out, nil
}
