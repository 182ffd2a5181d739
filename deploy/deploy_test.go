//go:build linux

// Package deploy holds no code: its tests check the deployment files beside them (Prometheus
// configuration and alerting rules, the Grafana dashboard, the Kubernetes manifests) with the
// real tools, and against a real Prometheus scraping the real agent.
package deploy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/hotplug-agent/hotplug-agent/config"
	"github.com/hotplug-agent/hotplug-agent/control"
	"github.com/hotplug-agent/hotplug-agent/internal/testenv"
)

const (
	promDir     = "prometheus"
	alertsFile  = "prometheus/alerts.yml"
	dashboard   = "grafana/hotplug-agent.json"
	k8sDir      = "kubernetes"
	agentPkg    = "github.com/hotplug-agent/hotplug-agent/cmd/hotplug-agent"
	installHint = "run scripts/prometheus-deps.sh"
)

// lookTool returns the path of a command; a missing one ends the test through testenv.Unavailable.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	testenv.Unavailable(t, "%s not found: %s", name, installHint)
	return ""
}

// promtool runs promtool with args in dir and fails t unless it exits 0.
func promtool(t *testing.T, dir string, stdin io.Reader, args ...string) string {
	t.Helper()
	cmd := exec.Command(lookTool(t, "promtool"), args...)
	cmd.Dir, cmd.Stdin = dir, stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestPromtool(t *testing.T) {
	t.Run("check config", func(t *testing.T) {
		out := promtool(t, promDir, nil, "check", "config", "prometheus.yml")
		if !strings.Contains(out, "1 rule files found") {
			t.Errorf("prometheus.yml does not load alerts.yml:\n%s", out)
		}
	})
	t.Run("check rules", func(t *testing.T) {
		promtool(t, promDir, nil, "check", "rules", "alerts.yml")
	})
	t.Run("test rules", func(t *testing.T) {
		promtool(t, promDir, nil, "test", "rules", "alerts_test.yml")
	})
}

// alertNames returns the alerts of alerts.yml, in order.
func alertNames(t *testing.T) []string {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, alertsFile, &f)
	var names []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				names = append(names, r.Alert)
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s: no alerts", alertsFile)
	}
	return names
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAlertsAllTested checks that alerts_test.yml has, for every alert, a case where it fires and
// one where it must not.
func TestAlertsAllTested(t *testing.T) {
	var f struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, "prometheus/alerts_test.yml", &f)
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range f.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, name := range alertNames(t) {
		if !firing[name] {
			t.Errorf("alerts_test.yml: no case where %s fires", name)
		}
		if !quiet[name] {
			t.Errorf("alerts_test.yml: no case where %s stays quiet", name)
		}
	}
}

// dashboardDoc is the part of a Grafana dashboard that holds queries.
type dashboardDoc struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Datasource struct {
			Type string `json:"type"`
			UID  string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// dashboardQuery is one panel query with Grafana's variables replaced as Grafana would with
// "All" instances selected.
type dashboardQuery struct {
	name string // panel title and refId
	expr string
}

var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "${instance}", ".*", "$instance", ".*")

// labelValuesRE is Grafana's label_values(selector, label) variable query.
var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)

// loadDashboard reads the dashboard, checks what Grafana needs of it, and returns its queries
// and its instance variable's label_values query (selector, label).
func loadDashboard(t *testing.T) (queries []dashboardQuery, varSelector, varLabel string) {
	t.Helper()
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: title %q, uid %q: both are needed", dashboard, d.Title, d.UID)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Name != "instance" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("%s: variable instance: query: %v", dashboard, err)
		}
		m := labelValuesRE.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("%s: variable instance: query %q is not label_values(selector, label)", dashboard, q.Query)
		}
		varSelector, varLabel = m[1], m[2]
	}
	if !vars["datasource"] || varLabel == "" {
		t.Fatalf("%s: want the variables datasource and instance, have %v", dashboard, vars)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("%s: panel id %d used twice", dashboard, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the prometheus ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			name := fmt.Sprintf("%s/%s", p.Title, q.RefID)
			if q.RefID == "" || refs[q.RefID] {
				t.Errorf("panel %q: refId %q empty or used twice", p.Title, q.RefID)
			}
			refs[q.RefID] = true
			expr := grafanaVars.Replace(q.Expr)
			if strings.TrimSpace(expr) == "" || strings.Contains(expr, "$") {
				t.Errorf("%s: %q: empty, or a variable the dashboard does not define", name, q.Expr)
			}
			queries = append(queries, dashboardQuery{name, expr})
		}
	}
	if len(queries) == 0 {
		t.Fatalf("%s: no queries", dashboard)
	}
	return queries, varSelector, varLabel
}

// TestDashboardQueriesParse has promtool parse every dashboard query, as a recording rule: the
// integration test runs them against a real server, this catches a PromQL error without root.
func TestDashboardQueriesParse(t *testing.T) {
	queries, _, _ := loadDashboard(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range queries {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: q.expr})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := promtool(t, "", nil, "check", "rules", path)
	if want := fmt.Sprintf("%d rules found", len(queries)); !strings.Contains(out, want) {
		t.Errorf("promtool check rules: want %q:\n%s", want, out)
	}
}

// decodeStrict decodes the Kubernetes manifest at path into v, an API type, rejecting unknown
// and duplicate fields, and checks its apiVersion and kind.
func decodeStrict(t *testing.T, path string, v any, apiVersion, kind string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeManifest(b, v, apiVersion, kind); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func decodeManifest(b []byte, v any, apiVersion, kind string) error {
	if err := sigsyaml.UnmarshalStrict(b, v); err != nil {
		return err
	}
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(b, &tm); err != nil {
		return err
	}
	if tm.APIVersion != apiVersion || tm.Kind != kind {
		return fmt.Errorf("apiVersion %q kind %q, want %q %q", tm.APIVersion, tm.Kind, apiVersion, kind)
	}
	return nil
}

// TestKubernetesManifestsStrict checks that the strict decoding the manifest test relies on
// rejects what a schema validator would: a misspelt field, a value of the wrong type, the wrong
// kind.
func TestKubernetesManifestsStrict(t *testing.T) {
	const spec = "apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", spec + "      hostNetwrok: true\n", `unknown field "hostNetwrok"`},
		{"duplicate field", spec + "      hostNetwork: true\n      hostNetwork: false\n", `"hostNetwork" already set`},
		{"wrong type", spec + "      hostNetwork: \"yes\"\n", "cannot unmarshal string"},
		{"bad quantity", spec + "      containers: [{name: a, resources: {limits: {memory: 256MB-ish}}}]\n", "quantities must match"},
		{"wrong kind", "apiVersion: v1\nkind: Service\n", `kind "Service"`},
	} {
		err := decodeManifest([]byte(tc.doc), &appsv1.DaemonSet{}, "apps/v1", "DaemonSet")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q; document:\n%s", tc.name, err, tc.want, tc.doc)
		}
	}
}

// TestKubernetesManifests decodes each manifest strictly into the real API types (k8s.io/api,
// and the Prometheus Operator's for the ServiceMonitor) and checks that they fit together: the
// DaemonSet's pods run in the host's network namespace without privileges, see the host's sysfs
// where --path.sysfs says, and get a configuration the agent accepts; the Service selects those
// pods; the ServiceMonitor selects the Service and names its port.
func TestKubernetesManifests(t *testing.T) {
	var (
		ds  appsv1.DaemonSet
		svc corev1.Service
		cm  corev1.ConfigMap
		sm  monitoringv1.ServiceMonitor
	)
	decodeStrict(t, filepath.Join(k8sDir, "daemonset.yaml"), &ds, "apps/v1", "DaemonSet")
	decodeStrict(t, filepath.Join(k8sDir, "service.yaml"), &svc, "v1", "Service")
	decodeStrict(t, filepath.Join(k8sDir, "configmap.yaml"), &cm, "v1", "ConfigMap")
	decodeStrict(t, filepath.Join(k8sDir, "servicemonitor.yaml"), &sm, "monitoring.coreos.com/v1", "ServiceMonitor")

	pod := ds.Spec.Template
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
		t.Errorf("DaemonSet: selector %v (%v) does not select its pod template's labels %v", ds.Spec.Selector, err, pod.Labels)
	}
	if !pod.Spec.HostNetwork || pod.Spec.HostPID {
		t.Errorf("DaemonSet: hostNetwork %v, hostPID %v; want the host's network namespace (uevents) and not its PIDs",
			pod.Spec.HostNetwork, pod.Spec.HostPID)
	}
	if pod.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("DaemonSet: dnsPolicy %q, want %q with hostNetwork", pod.Spec.DNSPolicy, corev1.DNSClusterFirstWithHostNet)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("DaemonSet: %d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("DaemonSet: no securityContext")
	case sc.Privileged != nil && *sc.Privileged:
		t.Error("DaemonSet: privileged container")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("DaemonSet: allowPrivilegeEscalation is not false")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("DaemonSet: root file system is not read-only")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("DaemonSet: capabilities %+v, want all dropped and none added", sc.Capabilities)
	}

	flags := map[string]string{}
	for _, a := range c.Args {
		if k, v, ok := strings.Cut(a, "="); ok {
			flags[k] = v
		}
	}
	hostPaths := map[string]string{} // volume name -> host path
	configMaps := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
		if v.ConfigMap != nil {
			configMaps[v.Name] = v.ConfigMap.Name
		}
	}
	mounts := map[string]corev1.VolumeMount{} // mount path -> mount
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	sysfs := flags["--path.sysfs"]
	if m, ok := mounts[sysfs]; !ok || hostPaths[m.Name] != "/sys" || !m.ReadOnly {
		t.Errorf("DaemonSet: --path.sysfs=%s is not the host's /sys mounted read-only", sysfs)
	} else if m.RecursiveReadOnly == nil || *m.RecursiveReadOnly == corev1.RecursiveReadOnlyDisabled {
		t.Errorf("DaemonSet: the host's /sys at %s is not recursiveReadOnly: the cgroup file systems under it would be writable", sysfs)
	}
	for _, dir := range []string{"/devices/system/cpu", "/devices/system/memory"} {
		if m, ok := mounts[sysfs+dir]; !ok || hostPaths[m.Name] != "/sys"+dir || m.ReadOnly {
			t.Errorf("DaemonSet: %s%s is not the host's /sys%s mounted writable (the online policy writes there)", sysfs, dir, dir)
		}
	}
	stateDir := filepath.Dir(flags["--path.state"])
	controlDir := filepath.Dir(cmp.Or(flags["--control.socket"], control.DefaultSocket))
	for path, m := range mounts {
		if !m.ReadOnly && !strings.HasPrefix(path, sysfs+"/devices/system/") && path != stateDir && path != controlDir {
			t.Errorf("DaemonSet: %s is mounted writable", path)
		}
	}

	cfgPath := flags["--config.file"]
	m, ok := mounts[filepath.Dir(cfgPath)]
	switch {
	case !ok || configMaps[m.Name] != cm.Name:
		t.Errorf("DaemonSet: --config.file=%s is not in a mount of ConfigMap %s", cfgPath, cm.Name)
	case cm.Data[filepath.Base(cfgPath)] == "":
		t.Errorf("ConfigMap %s: no key %s for --config.file=%s", cm.Name, filepath.Base(cfgPath), cfgPath)
	default:
		if _, err := config.Parse([]byte(cm.Data[filepath.Base(cfgPath)])); err != nil {
			t.Errorf("ConfigMap %s: the agent rejects %s: %v", cm.Name, filepath.Base(cfgPath), err)
		}
	}

	_, port, err := net.SplitHostPort(flags["--web.listen-address"])
	if err != nil {
		t.Fatalf("DaemonSet: --web.listen-address: %v", err)
	}
	var containerPort *corev1.ContainerPort
	for i, p := range c.Ports {
		if fmt.Sprint(p.ContainerPort) == port {
			containerPort = &c.Ports[i]
		}
	}
	if containerPort == nil || containerPort.Name == "" {
		t.Fatalf("DaemonSet: no named container port for --web.listen-address port %s", port)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("DaemonSet: no liveness probe on /healthz")
	}

	if s := labels.SelectorFromSet(svc.Spec.Selector); len(svc.Spec.Selector) == 0 || !s.Matches(labels.Set(pod.Labels)) {
		t.Errorf("Service: selector %v does not select the agent's pods %v", svc.Spec.Selector, pod.Labels)
	}
	var svcPorts []string
	for _, p := range svc.Spec.Ports {
		svcPorts = append(svcPorts, p.Name)
		if p.TargetPort.String() != containerPort.Name && p.TargetPort.IntValue() != int(containerPort.ContainerPort) {
			t.Errorf("Service: port %s targets %s, not the agent's port %s", p.Name, p.TargetPort.String(), containerPort.Name)
		}
	}

	smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || smSel.Empty() || !smSel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor: selector %v (%v) does not select the Service's labels %v", sm.Spec.Selector, err, svc.Labels)
	}
	if len(sm.Spec.Endpoints) == 0 {
		t.Fatal("ServiceMonitor: no endpoints")
	}
	for _, e := range sm.Spec.Endpoints {
		if !slices.Contains(svcPorts, e.Port) {
			t.Errorf("ServiceMonitor: endpoint port %q is not a port of the Service %v", e.Port, svcPorts)
		}
	}
	// The job label of the scraped series is the Service's name; the alerts select that job.
	if svc.Name != "hotplug-agent" || sm.Spec.JobLabel != "" {
		t.Errorf("Service %q, ServiceMonitor jobLabel %q: the alerts expect job=\"hotplug-agent\"", svc.Name, sm.Spec.JobLabel)
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a command the test started; it is killed when the test ends, and its output is
// logged if the test failed.
type process struct {
	name   string
	pid    int
	out    *testenv.Buffer
	exited chan struct{}
	err    error // valid once exited is closed
}

func startProcess(t *testing.T, name string, args ...string) *process {
	t.Helper()
	return startCmd(t, filepath.Base(name), exec.Command(name, args...))
}

// startCmd starts cmd, with its output going to the process's buffer.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, out: &testenv.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM, as Kubernetes and systemd stop a service, and fails t unless the process
// exits 0 within 30 s.
func (p *process) stop(t *testing.T) {
	t.Helper()
	syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("%s: exit after SIGTERM: %v", p.name, p.err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit within 30 s of SIGTERM", p.name)
	}
}

// waitFor calls check until it reports done, failing t after timeout (a bound for a stuck run,
// not a measured time) or when one of procs exits. check returns what it is waiting for.
func waitFor(t *testing.T, timeout time.Duration, check func() (done bool, status string), procs ...*process) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, status := check()
		if done {
			return
		}
		for _, p := range procs {
			select {
			case <-p.exited:
				t.Fatalf("%s exited (%v) while waiting: %s", p.name, p.err, status)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v: %s", timeout, status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// scalar runs an instant query that must return one sample and returns its value.
func scalar(ctx context.Context, api promv1.API, q string) (float64, error) {
	v, _, _, err := api.Query(ctx, q, time.Now())
	if err != nil {
		return 0, err
	}
	vec, ok := v.(model.Vector)
	if !ok || len(vec) != 1 {
		return 0, fmt.Errorf("%s: want one sample, got %v", q, v)
	}
	return float64(vec[0].Value), nil
}

// TestIntegrationPrometheus runs the real agent and a real Prometheus that scrapes it every second
// and loads alerts.yml, takes a CPU of this machine offline and online, and checks through
// Prometheus's HTTP API what an operator would: the notification counters rose, every dashboard
// query works, every alert is loaded and evaluates. It also lints a real scrape with promtool.
func TestIntegrationPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent and Prometheus and cycles a CPU: an integration test, left out with -short")
	}
	testenv.RequireRoot(t)
	prometheus := lookTool(t, "prometheus")
	lookTool(t, "promtool")
	// Held throughout, so that no other test changes a CPU between the baseline and the cycle.
	testenv.LockCPUs(t)
	cpu := testenv.HotpluggableCPU(t)
	if b, err := os.ReadFile(fmt.Sprintf("/sys/devices/system/cpu/cpu%d/online", cpu)); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("cpu%d must be online before the test: online=%q (%v)", cpu, b, err)
	}

	dir := t.TempDir()
	agentBin := filepath.Join(dir, "hotplug-agent")
	if out, err := exec.Command("go", "build", "-o", agentBin, agentPkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", agentPkg, err, out)
	}
	agentAddr := freeAddr(t)
	agent := startProcess(t, agentBin, "run", "--web.listen-address="+agentAddr, "--path.state="+filepath.Join(t.TempDir(), "state.json"))
	waitFor(t, time.Minute, func() (bool, string) {
		code, _, err := httpGet("http://" + agentAddr + "/healthz")
		return code == http.StatusOK, fmt.Sprintf("agent /healthz: %d %v", code, err)
	}, agent)

	alerts, err := filepath.Abs(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	promConfig := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: hotplug-agent
    static_configs:
      - targets: [%q]
`, alerts, agentAddr)
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(promConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	prom := startProcess(t, prometheus,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
	)
	client, err := promapi.NewClient(promapi.Config{Address: "http://" + promAddr})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(client)
	ctx := t.Context()

	up := `up{job="hotplug-agent"}`
	waitFor(t, time.Minute, func() (bool, string) {
		v, err := scalar(ctx, api, up)
		return err == nil && v == 1, fmt.Sprintf("%s = %v (%v)", up, v, err)
	}, agent, prom)

	counter := func(event string) string {
		return fmt.Sprintf(`hotplug_agent_notifications_total{job="hotplug-agent",interface_class="processor",event=%q}`, event)
	}
	before := map[string]float64{}
	for _, event := range []string{"removal", "arrival"} {
		if before[event], err = scalar(ctx, api, counter(event)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.SetCPUOnline(t, cpu, false)
	testenv.SetCPUOnline(t, cpu, true)
	for _, event := range []string{"removal", "arrival"} {
		waitFor(t, time.Minute, func() (bool, string) {
			v, err := scalar(ctx, api, counter(event))
			return err == nil && v > before[event], fmt.Sprintf("%s = %v, was %v (%v)", counter(event), v, before[event], err)
		}, agent, prom)
	}

	t.Run("promtool check metrics", func(t *testing.T) {
		code, body, err := httpGet("http://" + agentAddr + "/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /metrics: %d %v", code, err)
		}
		if out := promtool(t, "", strings.NewReader(body), "check", "metrics"); strings.TrimSpace(out) != "" {
			t.Errorf("promtool check metrics:\n%s", out)
		}
	})

	t.Run("dashboard queries", func(t *testing.T) {
		queries, selector, label := loadDashboard(t)
		values, _, _, err := api.LabelValues(ctx, label, []string{selector}, time.Now().Add(-time.Hour), time.Now())
		if err != nil || !slices.Contains(values, model.LabelValue(agentAddr)) {
			t.Errorf("variable instance: label_values(%s, %s) = %v (%v), want %s among them", selector, label, values, err, agentAddr)
		}
		for _, q := range queries {
			// A panel with no data is broken too; data may need one more scrape for rate().
			waitFor(t, 30*time.Second, func() (bool, string) {
				v, _, _, err := api.Query(ctx, q.expr, time.Now())
				if err != nil {
					t.Fatalf("%s: %s: %v", q.name, q.expr, err)
				}
				vec, _ := v.(model.Vector)
				return len(vec) > 0, fmt.Sprintf("%s: %s: no data", q.name, q.expr)
			}, agent, prom)
		}
	})

	t.Run("alert rules loaded", func(t *testing.T) {
		want := alertNames(t)
		waitFor(t, 30*time.Second, func() (bool, string) {
			rules, err := api.Rules(ctx, nil)
			if err != nil {
				return false, err.Error()
			}
			health := map[string]string{}
			for _, g := range rules.Groups {
				for _, r := range g.Rules {
					if a, ok := r.(promv1.AlertingRule); ok {
						health[a.Name] = string(a.Health) + " " + a.LastError
					}
				}
			}
			for _, name := range want {
				if strings.TrimSpace(health[name]) != string(promv1.RuleHealthGood) {
					return false, fmt.Sprintf("alert %s: health %q; loaded: %v", name, health[name], health)
				}
			}
			return true, ""
		}, agent, prom)
	})
}
