package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// The packaging (the root Dockerfile, scripts/deploy/systemd,
// scripts/deploy/kubernetes) runs fanout with settings written by hand.
// These tests parse those settings with the command's own parseFlags,
// so a misspelt or out-of-range flag or FANOUT_ variable fails here, and
// check the numbers the files must agree on: listen ports against the
// exposed and probed ones, stop timeouts against the drain. Docker and a
// cluster are not needed: .ci/run builds the binary with the Dockerfile's
// own command and runs systemd-analyze verify on the unit.

// dockerfile is what the tests read of the root Dockerfile's final stage.
type dockerfile struct {
	env        []string // ENV, as NAME=value
	expose     []int
	user       string
	entrypoint []string
	build      string // the RUN line that runs go build
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	for n, line := range strings.Split(string(b), "\n") {
		inst, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(inst) {
		case "FROM": // each stage starts over; the last one is the image
			d.env, d.expose, d.user, d.entrypoint = nil, nil, "", nil
		case "ENV":
			if strings.Count(rest, "=") != 1 || strings.ContainsAny(rest, " \"'\\") {
				t.Fatalf("Dockerfile:%d: want ENV NAME=value, one a line, unquoted (what this test reads): %q", n+1, line)
			}
			d.env = append(d.env, rest)
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				port, err := strconv.Atoi(p)
				if err != nil {
					t.Fatalf("Dockerfile:%d: EXPOSE %q", n+1, p)
				}
				d.expose = append(d.expose, port)
			}
		case "USER":
			d.user = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Fatalf("Dockerfile:%d: ENTRYPOINT in exec form (JSON) so that SIGTERM reaches fanout, not a shell: %v", n+1, err)
			}
		case "RUN":
			if strings.Contains(rest, "go build") {
				d.build = rest
			}
		}
	}
	return d
}

// listenPort is the port of a host:port flag value.
func listenPort(t *testing.T, what, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s: %q: port not a number", what, addr)
	}
	return port
}

// parseClean is parseFlags that also fails on its warnings (an unknown
// FANOUT_ variable is one): the packaging's settings must be exact.
func parseClean(t *testing.T, what string, args, environ []string) *options {
	t.Helper()
	o, err := parseFlags(args, environ, io.Discard)
	if err != nil {
		t.Fatalf("%s: fanout would exit 2: %v", what, err)
	}
	if len(o.warnings) > 0 {
		t.Fatalf("%s: fanout would start with warnings: %q", what, o.warnings)
	}
	return o
}

func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	if len(d.entrypoint) != 1 || d.entrypoint[0] != "/fanout" {
		t.Errorf("ENTRYPOINT %q, want [\"/fanout\"] (settings come from ENV and the arguments after the image)", d.entrypoint)
	}
	o := parseClean(t, "the image's ENV", nil, d.env)
	ws, admin := listenPort(t, "FANOUT_ADDR", o.addr), listenPort(t, "FANOUT_ADMIN_ADDR", o.adminAddr)
	if host, _, _ := net.SplitHostPort(o.addr); host != "" {
		t.Errorf("FANOUT_ADDR %q: in a container listen on every interface (:PORT)", o.addr)
	}
	if !slices.Equal(d.expose, []int{ws, admin}) {
		t.Errorf("EXPOSE %v, want the listeners' ports [%d %d]", d.expose, ws, admin)
	}
	uid, _, _ := strings.Cut(d.user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root uid (Kubernetes' runAsNonRoot checks it)", d.user)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-o /out/fanout", "./cmd/fanout"} {
		if !strings.Contains(d.build, want) {
			t.Errorf("the go build line %q lacks %s", d.build, want)
		}
	}
}

// unit is a systemd unit file: each key's values in order, per section.
type unit map[string][]string // "Section.Key" -> values

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, "\\") {
				t.Fatalf("%s:%d: not KEY=value in a section, on one line: %q", path, n, line)
			}
			u[section+"."+k] = append(u[section+"."+k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) last(key string) string {
	if vs := u[key]; len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return ""
}

// envFileLines reads the example environment file: every FANOUT_ line,
// commented out or not, as NAME=value.
func envFileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if kv := strings.TrimPrefix(strings.TrimSpace(line), "#"); strings.HasPrefix(kv, envPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

// systemdSeconds parses a systemd time span as this unit writes them
// (30s, 2min, 90).
func systemdSeconds(t *testing.T, key, v string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(strings.ReplaceAll(v, "min", "m"))
	if err != nil {
		t.Fatalf("%s=%s: not a time span this test reads", key, v)
	}
	return d
}

func TestSystemdUnit(t *testing.T) {
	dir := filepath.Join(deployDir, "systemd")
	u := readUnit(t, filepath.Join(dir, "fanout.service"))

	cmdline := strings.Fields(u.last("Service.ExecStart"))
	if len(cmdline) == 0 || !filepath.IsAbs(cmdline[0]) || filepath.Base(cmdline[0]) != "fanout" {
		t.Fatalf("ExecStart=%q: want the absolute path of fanout", u.last("Service.ExecStart"))
	}
	var env []string
	for _, v := range u["Service.Environment"] {
		env = append(env, strings.Fields(v)...)
	}
	o := parseClean(t, "the unit's ExecStart and Environment", cmdline[1:], env)

	// The example environment file, every line set at once (its empty
	// secrets filled in with a stand-in), over the unit's, as systemd
	// applies them.
	files := u["Service.EnvironmentFile"]
	if len(files) != 1 || strings.HasPrefix(files[0], "-") {
		t.Errorf("EnvironmentFile=%q: want one, required (no '-': a missing secrets file must fail the start)", files)
	}
	withFile := slices.Clone(env)
	for _, kv := range envFileLines(t, filepath.Join(dir, "fanout.env")) {
		name, v, _ := strings.Cut(kv, "=")
		if !slices.Contains(flagNames(defineFlags(defaults()), envPrefix), name) {
			t.Errorf("fanout.env names %s, which is no setting", name)
		}
		if v == "" {
			v = strings.Repeat("s", minSecretBytes)
		}
		withFile = append(withFile, name+"="+v)
	}
	parseClean(t, "the unit with every line of fanout.env", cmdline[1:], withFile)

	if got := u.last("Service.KillSignal"); got != "SIGTERM" {
		t.Errorf("KillSignal=%s, want SIGTERM (the signal that drains; SIGINT skips -drain-delay)", got)
	}
	stop := systemdSeconds(t, "TimeoutStopSec", u.last("Service.TimeoutStopSec"))
	if need := o.drainDelay + o.shutdownTimeout; stop <= need {
		t.Errorf("TimeoutStopSec=%s is not above -drain-delay + -shutdown-timeout (%s): systemd would SIGKILL a drain", stop, need)
	}
	if n, err := strconv.Atoi(u.last("Service.LimitNOFILE")); err != nil || n < 65536 {
		t.Errorf("LimitNOFILE=%s: want a number of files well above the default", u.last("Service.LimitNOFILE"))
	}
	if u.last("Service.Restart") != "on-failure" || u.last("Service.RestartPreventExitStatus") != "2" {
		t.Errorf("Restart=%s RestartPreventExitStatus=%s: want on-failure, and no restart after exit 2 (a bad setting)",
			u.last("Service.Restart"), u.last("Service.RestartPreventExitStatus"))
	}
	for key, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"DynamicUser": "yes", "CapabilityBoundingSet": "", "SystemCallFilter": "@system-service",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
	} {
		if vs := u["Service."+key]; len(vs) == 0 || vs[0] != want {
			t.Errorf("%s=%q, want %q", key, vs, want)
		}
	}
}

// k8sObjects decodes scripts/deploy/kubernetes/fanout.yaml strictly into
// the Kubernetes API's types: a field the API does not have, or one of
// the wrong type, is an error.
func k8sObjects(t *testing.T) (deploy *appsv1.Deployment, services []*corev1.Service, pdb *policyv1.PodDisruptionBudget) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "fanout.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var obj any
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			deploy = &appsv1.Deployment{}
			obj = deploy
		case "v1 Service":
			services = append(services, &corev1.Service{})
			obj = services[len(services)-1]
		case "policy/v1 PodDisruptionBudget":
			pdb = &policyv1.PodDisruptionBudget{}
			obj = pdb
		case " ":
			continue // comments only
		default:
			t.Fatalf("document %d: %s %s: not one this test knows", i, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s): %v", i, head.Kind, err)
		}
	}
	if deploy == nil || len(services) == 0 || pdb == nil {
		t.Fatalf("want a Deployment, Services and a PodDisruptionBudget; got %v, %d, %v", deploy != nil, len(services), pdb != nil)
	}
	return deploy, services, pdb
}

func TestKubernetesManifests(t *testing.T) {
	deploy, services, pdb := k8sObjects(t)
	pod := deploy.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The settings fanout gets: the image's ENV, then the container's
	// (secrets stand in with values that pass), then its args.
	env := readDockerfile(t).env
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.SecretKeyRef == nil {
				t.Fatalf("env %s: only secretKeyRef is expected", e.Name)
			}
			v = strings.Repeat("s", minSecretBytes)
		}
		env = append(env, e.Name+"="+v)
	}
	if len(c.Command) > 0 {
		t.Errorf("command %q replaces the image's ENTRYPOINT; set args only", c.Command)
	}
	o := parseClean(t, "the container's env and args", c.Args, env)

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if want := listenPort(t, "-addr", o.addr); int(ports["ws"]) != want {
		t.Errorf("containerPort ws %d, want -addr's %d", ports["ws"], want)
	}
	adminPort := listenPort(t, "-admin-addr", o.adminAddr)
	if int(ports["admin"]) != adminPort {
		t.Errorf("containerPort admin %d, want -admin-addr's %d", ports["admin"], adminPort)
	}
	if got := deploy.Spec.Template.Annotations["prometheus.io/port"]; got != strconv.Itoa(adminPort) {
		t.Errorf("prometheus.io/port %q, want the admin port %d", got, adminPort)
	}
	for _, p := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe", p.what)
			continue
		}
		if g := p.probe.HTTPGet; g.Path != p.path || g.Port.String() != "admin" {
			t.Errorf("%s: GET %s on port %s, want %s on admin", p.what, g.Path, g.Port.String(), p.path)
		}
	}

	// The stop: SIGTERM after any preStop hook, then -drain-delay and
	// -shutdown-timeout; SIGKILL at the grace period.
	var preStop time.Duration
	if l := c.Lifecycle; l != nil && l.PreStop != nil {
		switch h := l.PreStop; {
		case h.Exec != nil:
			t.Errorf("preStop exec %q: the image has no shell nor sleep", h.Exec.Command)
		case h.Sleep != nil:
			preStop = time.Duration(h.Sleep.Seconds) * time.Second
		}
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + o.drainDelay + o.shutdownTimeout; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %s is not above preStop %s + -drain-delay %s + -shutdown-timeout %s",
			grace, preStop, o.drainDelay, o.shutdownTimeout)
	}
	if o.drainDelay == 0 && preStop == 0 {
		t.Error("neither -drain-delay nor a preStop sleep: the pod stops accepting before kube-proxy and ingresses stop sending to it")
	}

	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || sc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("securityContext: want runAsNonRoot and runAsUser (pod), readOnlyRootFilesystem, no privilege escalation, drop ALL (container)")
	} else if uid, _, _ := strings.Cut(readDockerfile(t).user, ":"); strconv.FormatInt(*psc.RunAsUser, 10) != uid {
		t.Errorf("runAsUser %d, the image's USER is %s", *psc.RunAsUser, uid)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}

	// Selectors: the Services and the budget pick the Deployment's pods,
	// through ports the container names.
	labels := deploy.Spec.Template.Labels
	matches := func(sel map[string]string) bool {
		for k, v := range sel {
			if labels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if deploy.Spec.Selector == nil || !matches(deploy.Spec.Selector.MatchLabels) {
		t.Errorf("the Deployment's selector does not match its pods' labels %v", labels)
	}
	for _, s := range services {
		if !matches(s.Spec.Selector) {
			t.Errorf("Service %s: selector %v does not match the pods' labels %v", s.Name, s.Spec.Selector, labels)
		}
		for _, p := range s.Spec.Ports {
			if _, ok := ports[p.TargetPort.String()]; !ok {
				t.Errorf("Service %s: targetPort %s is no port of the container (%v)", s.Name, p.TargetPort.String(), ports)
			}
		}
	}
	if pdb.Spec.Selector == nil || !matches(pdb.Spec.Selector.MatchLabels) {
		t.Errorf("the PodDisruptionBudget's selector does not match the pods' labels %v", labels)
	}
	if *deploy.Spec.Replicas < 2 || !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "FANOUT_NATS=nats") }) {
		t.Errorf("%d replicas with FANOUT_NATS in %q: replicas need the tier, or each delivers only what was published to itself", *deploy.Spec.Replicas, env)
	}
}

// TestKubernetesDecodeIsStrict: the decoding above fails on a field the
// API does not have (here misspelt), which is what makes it a check.
func TestKubernetesDecodeIsStrict(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "kubernetes", "fanout.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := bytes.Cut(b, []byte("\n---"))
	bad := bytes.Replace(doc, []byte("terminationGracePeriodSeconds:"), []byte("terminationGracePeriodSecond:"), 1)
	if bytes.Equal(bad, doc) {
		t.Fatal("the manifest has no terminationGracePeriodSeconds to misspell")
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(bad, &d); err == nil || !strings.Contains(err.Error(), "terminationGracePeriodSecond") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
}
