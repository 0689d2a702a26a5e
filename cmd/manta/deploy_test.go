package main

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/manta-ray/manta/controlplane/autoscaler"
)

// deployDir is the repository's deploy/ folder.
const deployDir = "../../deploy"

// manifests decodes every object of deploy/kubernetes strictly (an unknown
// field is an error) with client-go's scheme, keyed "Kind/name".
func manifests(t *testing.T) map[string]runtime.Object {
	t.Helper()
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	files, err := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string]runtime.Object{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj, gvk, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			meta, ok := obj.(metav1.Object)
			if !ok {
				t.Fatalf("%s document %d: %s has no metadata", f, i, gvk.Kind)
			}
			if gvk.Kind != "Namespace" && meta.GetNamespace() != "manta" {
				t.Errorf("%s %s: namespace %q, want manta", gvk.Kind, meta.GetName(), meta.GetNamespace())
			}
			out[gvk.Kind+"/"+meta.GetName()] = obj
		}
	}
	return out
}

func get[T runtime.Object](t *testing.T, objs map[string]runtime.Object, key string) T {
	t.Helper()
	o, ok := objs[key].(T)
	if !ok {
		t.Fatalf("no %s in deploy/kubernetes", key)
	}
	return o
}

// startArgs parses a container's or unit's `manta start` arguments with the
// binary's own flags, $(VAR) and ${VAR} expanded from vars.
func startArgs(t *testing.T, args []string, vars map[string]string) *startFlags {
	t.Helper()
	if len(args) == 0 || args[0] != "start" {
		t.Fatalf("args %q: want `start ...`", args)
	}
	var expanded []string
	for _, a := range args[1:] {
		for k, v := range vars {
			a = strings.ReplaceAll(strings.ReplaceAll(a, "$("+k+")", v), "${"+k+"}", v)
		}
		expanded = append(expanded, a)
	}
	cmd := newStartCommand()
	if err := cmd.ParseFlags(expanded); err != nil {
		t.Fatalf("manta start %q: %v", expanded, err)
	}
	// The flag struct is reachable through the RunE closure only; read it back by name.
	f := &startFlags{}
	fs := cmd.Flags()
	f.head, _ = fs.GetBool("head")
	f.nodeID, _ = fs.GetString("node-id")
	f.dataDir, _ = fs.GetString("data-dir")
	f.host, _ = fs.GetString("host")
	f.port, _ = fs.GetInt("port")
	f.raftPort, _ = fs.GetInt("raft-port")
	f.peers, _ = fs.GetStringSlice("peers")
	f.tokenFile, _ = fs.GetString("token-file")
	f.address, _ = fs.GetString("address")
	f.noRaylet, _ = fs.GetBool("no-raylet")
	f.dashboardPort, _ = fs.GetInt("dashboard-port")
	f.metricsPort, _ = fs.GetInt("metrics-port")
	f.autoscale, _ = fs.GetString("autoscale")
	return f
}

func containerPort(t *testing.T, c corev1.Container, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	t.Fatalf("container %s has no port named %s", c.Name, name)
	return 0
}

// mountOf returns the volume mounted at the directory holding file.
func mountOf(t *testing.T, spec corev1.PodSpec, c corev1.Container, file string) (corev1.VolumeMount, *corev1.Volume) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if file == m.MountPath || strings.HasPrefix(file, m.MountPath+"/") {
			for i := range spec.Volumes {
				if spec.Volumes[i].Name == m.Name {
					return m, &spec.Volumes[i]
				}
			}
			return m, nil // a volume claim template
		}
	}
	t.Fatalf("container %s: nothing is mounted where %s is", c.Name, file)
	return corev1.VolumeMount{}, nil
}

func TestDeployManifestsMatchTheBinary(t *testing.T) {
	objs := manifests(t)
	get[*corev1.Namespace](t, objs, "Namespace/manta")
	secret := get[*corev1.Secret](t, objs, "Secret/manta-token")
	sts := get[*appsv1.StatefulSet](t, objs, "StatefulSet/manta-head")
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("heads: replicas %v, want 3", sts.Spec.Replicas)
	}
	headless := get[*corev1.Service](t, objs, "Service/"+sts.Spec.ServiceName)
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Fatal("the heads' service must be headless and publish unready pods (heads find each other to bootstrap)")
	}
	podLabels := sts.Spec.Template.Labels
	for k, v := range sts.Spec.Selector.MatchLabels {
		if podLabels[k] != v {
			t.Fatalf("statefulset selector %s=%s does not match its pods", k, v)
		}
	}
	for k, v := range headless.Spec.Selector {
		if podLabels[k] != v {
			t.Fatalf("headless service selector %s=%s does not match the heads", k, v)
		}
	}
	spec := sts.Spec.Template.Spec
	c := spec.Containers[0]
	pod0 := sts.Name + "-0"
	f := startArgs(t, c.Args, map[string]string{"POD_NAME": pod0})
	if !f.head || !f.noRaylet {
		t.Fatal("heads run `start --head --no-raylet`")
	}
	if f.nodeID != pod0 {
		t.Fatalf("--node-id %q, want the pod's name", f.nodeID)
	}
	if f.port != containerPort(t, c, "grpc") || f.raftPort != containerPort(t, c, "raft") ||
		f.dashboardPort != containerPort(t, c, "dashboard") || f.metricsPort != containerPort(t, c, "metrics") {
		t.Fatalf("head ports: flags %d/%d/%d/%d do not match the container's", f.port, f.raftPort, f.dashboardPort, f.metricsPort)
	}
	for _, sp := range headless.Spec.Ports {
		if want := map[string]int{"grpc": f.port, "raft": f.raftPort}[sp.Name]; int(sp.Port) != want || sp.TargetPort.StrVal != sp.Name {
			t.Fatalf("headless service port %s: %d -> %s, want %d -> %s", sp.Name, sp.Port, sp.TargetPort.String(), want, sp.Name)
		}
	}
	var wantPeers []string
	for i := range int(*sts.Spec.Replicas) {
		wantPeers = append(wantPeers, sts.Name+"-"+strconv.Itoa(i)+"."+headless.Name+":"+strconv.Itoa(f.port))
	}
	if !slices.Equal(f.peers, wantPeers) {
		t.Fatalf("--peers %v, want %v (the statefulset's pods behind its headless service)", f.peers, wantPeers)
	}
	if self := f.host + ":" + strconv.Itoa(f.port); !slices.Contains(f.peers, self) {
		t.Fatalf("--host %s: the head's own address %s is not among --peers", f.host, self)
	}
	// The data dir is on the persistent volume.
	m, vol := mountOf(t, spec, c, f.dataDir)
	if vol != nil || len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != m.Name {
		t.Fatalf("--data-dir %s is not on the volume claim template", f.dataDir)
	}
	// The token file is the Secret's key.
	checkTokenFile(t, spec, c, f.tokenFile, secret)
	// The autoscaler config is the ConfigMap's key, valid, and agrees with the heads.
	m, vol = mountOf(t, spec, c, f.autoscale)
	if vol == nil || vol.ConfigMap == nil {
		t.Fatalf("--autoscale %s is not in a ConfigMap volume", f.autoscale)
	}
	cm := get[*corev1.ConfigMap](t, objs, "ConfigMap/"+vol.ConfigMap.Name)
	cfgText, ok := cm.Data[path.Base(f.autoscale)]
	if !ok || path.Dir(f.autoscale) != m.MountPath {
		t.Fatalf("ConfigMap %s has no key %s", cm.Name, path.Base(f.autoscale))
	}
	cfg, err := autoscaler.ParseConfig([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Provider.Type != "kubernetes" || cfg.Provider.Namespace != "manta" || cfg.Provider.TokenSecret != secret.Name ||
		!slices.Equal(cfg.Provider.Heads, f.peers) {
		t.Fatalf("autoscaler provider %+v does not match the heads", cfg.Provider)
	}
	// The autoscaler's service account may manage pods.
	checkRBAC(t, objs, spec.ServiceAccountName)
	// The dashboard service reaches the heads' dashboard port.
	dash := get[*corev1.Service](t, objs, "Service/manta-dashboard")
	for k, v := range dash.Spec.Selector {
		if podLabels[k] != v {
			t.Fatalf("dashboard service selector %s=%s does not match the heads", k, v)
		}
	}
	if len(dash.Spec.Ports) != 1 || dash.Spec.Ports[0].TargetPort.StrVal != "dashboard" {
		t.Fatalf("dashboard service ports %v", dash.Spec.Ports)
	}

	// Raylets join the heads with the token.
	dep := get[*appsv1.Deployment](t, objs, "Deployment/manta-raylet")
	rspec := dep.Spec.Template.Spec
	rc := rspec.Containers[0]
	rf := startArgs(t, rc.Args, map[string]string{"POD_IP": "10.0.0.9"})
	if rf.head || !slices.Equal(strings.Split(rf.address, ","), f.peers) {
		t.Fatalf("raylet --address %q, want the heads %v", rf.address, f.peers)
	}
	if rf.port != containerPort(t, rc, "grpc") || rf.metricsPort != containerPort(t, rc, "metrics") {
		t.Fatal("raylet ports do not match its container's")
	}
	checkTokenFile(t, rspec, rc, rf.tokenFile, secret)
	for k, v := range dep.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Labels[k] != v {
			t.Fatalf("raylet deployment selector %s=%s does not match its pods", k, v)
		}
	}
}

func checkTokenFile(t *testing.T, spec corev1.PodSpec, c corev1.Container, file string, secret *corev1.Secret) {
	t.Helper()
	m, vol := mountOf(t, spec, c, file)
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret.Name {
		t.Fatalf("container %s: --token-file %s is not in the Secret %s", c.Name, file, secret.Name)
	}
	if _, ok := secret.StringData[strings.TrimPrefix(file, m.MountPath+"/")]; !ok {
		t.Fatalf("Secret %s has no key for --token-file %s", secret.Name, file)
	}
}

func checkRBAC(t *testing.T, objs map[string]runtime.Object, account string) {
	t.Helper()
	get[*corev1.ServiceAccount](t, objs, "ServiceAccount/"+account)
	for _, o := range objs {
		rb, ok := o.(*rbacv1.RoleBinding)
		if !ok || !slices.ContainsFunc(rb.Subjects, func(s rbacv1.Subject) bool { return s.Kind == "ServiceAccount" && s.Name == account }) {
			continue
		}
		role := get[*rbacv1.Role](t, objs, "Role/"+rb.RoleRef.Name)
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "pods") && slices.Contains(r.APIGroups, "") {
				for _, v := range []string{"create", "delete", "list"} {
					if !slices.Contains(r.Verbs, v) {
						t.Fatalf("role %s lacks %s on pods", role.Name, v)
					}
				}
				return
			}
		}
	}
	t.Fatalf("service account %s may not manage pods", account)
}

// The systemd units' command lines parse with the binary's flags.
func TestDeploySystemdUnitsMatchTheBinary(t *testing.T) {
	for _, tc := range []struct {
		file string
		head bool
	}{{"manta-head.service", true}, {"manta-raylet.service", false}} {
		b, err := os.ReadFile(filepath.Join(deployDir, "systemd", tc.file))
		if err != nil {
			t.Fatal(err)
		}
		var exec string
		for _, line := range bytes.Split(b, []byte("\n")) {
			if s, ok := strings.CutPrefix(string(line), "ExecStart="); ok {
				exec = s
			}
		}
		fields := strings.Fields(exec)
		if len(fields) < 2 || path.Base(fields[0]) != "manta" {
			t.Fatalf("%s: ExecStart %q", tc.file, exec)
		}
		f := startArgs(t, fields[1:], map[string]string{"HOST": "10.0.0.1", "PEERS": "10.0.0.1:7379,10.0.0.2:7379,10.0.0.3:7379",
			"HEADS": "10.0.0.1:7379"})
		if f.head != tc.head || f.tokenFile == "" || f.dataDir == "" || (tc.head && (f.nodeID == "" || len(f.peers) != 3)) || (!tc.head && f.address == "") {
			t.Fatalf("%s: flags %+v", tc.file, f)
		}
	}
}
