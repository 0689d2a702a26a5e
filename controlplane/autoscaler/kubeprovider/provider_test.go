package kubeprovider

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/manta-ray/manta/controlplane/autoscaler"
	"github.com/manta-ray/manta/controlplane/fsm"
	pb "github.com/manta-ray/manta/proto/controlpb"
)

func newProvider(t *testing.T, client *fake.Clientset, templates map[string]*corev1.PodTemplateSpec) *Provider {
	t.Helper()
	p, err := New(Options{Client: client, Namespace: "ns", Cluster: "c1", Heads: []string{"manta-head-0.manta-head:7379"},
		Image: "manta:test", TokenSecret: "manta-token", Templates: templates})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var bigType = autoscaler.NodeType{Name: "big", Resources: map[string]float64{"CPU": 2, "big": 1}, MaxCount: 3, Labels: map[string]string{"zone": "a"}}

func TestPodsAreCreatedLabelledAndDeleted(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	p := newProvider(t, client, nil)
	inst := autoscaler.Instance{ID: "manta-big-1234", Type: bigType}
	for range 2 { // a second launch (a new leader repeating it) makes no second pod
		if err := p.Launch(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %v, %v; want one", pods, err)
	}
	pod := pods.Items[0]
	for k, v := range map[string]string{LabelComponent: "raylet", LabelCluster: "c1", autoscaler.LabelNodeType: "big", autoscaler.LabelInstance: inst.ID} {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--node-id manta-big-1234", "--num-cpus 2", "--resources big=1", "zone=a", "--token-file " + TokenPath, "--host $(POD_IP)"} {
		if !strings.Contains(args, want) {
			t.Errorf("raylet args %q lack %q", args, want)
		}
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restart policy %q", pod.Spec.RestartPolicy)
	}
	st, err := p.Instances(ctx)
	if err != nil || st[inst.ID] != autoscaler.StatusRunning {
		t.Fatalf("instances %v, %v", st, err)
	}
	if err := p.Terminate(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(ctx, inst.ID); err != nil {
		t.Fatalf("terminating a deleted pod: %v", err)
	}
	if pods, _ := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Fatalf("pods left: %v", pods.Items)
	}
}

func TestPodTemplateIsUsed(t *testing.T) {
	dir := t.TempDir()
	tpl := `
metadata:
  labels: {team: ml}
spec:
  nodeSelector: {accelerator: big}
  containers:
    - name: raylet
      image: manta-gpu:1
      args: [--object-store-memory, 1GiB]
`
	if err := os.WriteFile(filepath.Join(dir, "big.yaml"), []byte(tpl), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &autoscaler.Config{Provider: autoscaler.ProviderConfig{Type: "kubernetes"},
		NodeTypes: []autoscaler.NodeType{{Name: "big", Resources: map[string]float64{"big": 1}, MaxCount: 1, PodTemplate: "big.yaml"}}}
	templates, err := LoadTemplates(cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	pod := newProvider(t, fake.NewClientset(), templates).Pod(autoscaler.Instance{ID: "manta-big-1", Type: cfg.NodeTypes[0]})
	c := pod.Spec.Containers[0]
	if c.Image != "manta-gpu:1" || pod.Labels["team"] != "ml" || pod.Spec.NodeSelector["accelerator"] != "big" ||
		!strings.HasSuffix(strings.Join(c.Args, " "), "--object-store-memory 1GiB") {
		t.Fatalf("pod %+v", pod)
	}
	// A template with an unknown field or no raylet container is refused.
	_ = os.WriteFile(filepath.Join(dir, "big.yaml"), []byte("spec: {containerz: []}"), 0o600)
	if _, err := LoadTemplates(cfg, dir); err == nil {
		t.Fatal("a bad template was accepted")
	}
}

// A pod that fails is replaced: the autoscaler sees it failed, deletes it
// and launches another for the demand that is still there.
func TestFailedPodIsReplaced(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	p := newProvider(t, client, nil)
	cl := &cluster{f: fsm.New(nil)}
	cfg := &autoscaler.Config{NodeTypes: []autoscaler.NodeType{bigType}, Interval: time.Nanosecond}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := autoscaler.New(autoscaler.Options{Config: cfg, Provider: p, Cluster: cl})
	cl.demand = []*pb.ResourceDemand{{Shape: map[string]float64{"big": 1}, Count: 1, Infeasible: true}}
	if err := a.Round(ctx); err != nil {
		t.Fatal(err)
	}
	pods, _ := client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	if len(pods.Items) != 1 {
		t.Fatalf("pods %d, want 1", len(pods.Items))
	}
	first := pods.Items[0]
	first.Status.Phase = corev1.PodFailed
	if _, err := client.CoreV1().Pods("ns").UpdateStatus(ctx, &first, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := a.Round(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pods, _ = client.CoreV1().Pods("ns").List(ctx, metav1.ListOptions{})
	if len(pods.Items) != 1 || pods.Items[0].Name == first.Name || pods.Items[0].Status.Phase == corev1.PodFailed {
		t.Fatalf("pods %v; want the failed one replaced by a new one", pods.Items)
	}
}

// cluster is a real FSM applied to directly, for the autoscaler.
type cluster struct {
	f      *fsm.FSM
	index  uint64
	demand []*pb.ResourceDemand
}

func (c *cluster) Nodes() []*pb.NodeInfo { return c.f.Nodes() }
func (c *cluster) Load() ([]*pb.ResourceDemand, map[string]int64) {
	return c.demand, nil
}
func (c *cluster) PlacementGroups() []*pb.PlacementGroupInfo { return nil }
func (c *cluster) Instances() []*pb.AutoscalerInstance       { return c.f.AutoscalerInstances() }
func (c *cluster) RequestedResources() []*pb.Bundle          { return nil }
func (c *cluster) Apply(_ context.Context, t fsm.CommandType, body proto.Message) error {
	cmd, err := fsm.NewCommand(t, "", body)
	if err != nil {
		return err
	}
	cmd.TimeUnixNano = time.Now().UnixNano()
	data, err := fsm.EncodeBatch([]*pb.Command{cmd})
	if err != nil {
		return err
	}
	c.index++
	res := c.f.Apply(&raft.Log{Index: c.index, Data: data})
	if err, ok := res.(error); ok {
		return err
	}
	return fsm.ResultError(res.([]*pb.CommandResult)[0])
}
