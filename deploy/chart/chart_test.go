package chart_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sse-service/sse-service/deploy/internal/toolbin"
	"github.com/sse-service/sse-service/internal/config"
)

const chartDir = "../../helm/sse-service"

// helmBin finds helm: $HELM, else helm on PATH. Without it the test skips,
// saying how to enable it, except under CI (CI=true), where it fails.
func helmBin(t *testing.T) string {
	t.Helper()
	return toolbin.Find(t, "HELM", "helm",
		"e.g. GOBIN=/tmp/helmbin go install helm.sh/helm/v3/cmd/helm@v3.22.0; HELM=/tmp/helmbin/helm go test ./deploy/chart/")
}

// obj is one rendered Kubernetes object.
type obj map[string]any

func (o obj) kind() string { s, _ := o["kind"].(string); return s }
func (o obj) name() string { return str(get(o, "metadata", "name")) }

// get walks maps (string keys) and lists (integer keys).
func get(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				if o, ok2 := v.(obj); ok2 {
					m = o
				} else {
					return nil
				}
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

func list(v any) []any { l, _ := v.([]any); return l }

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

// render runs helm template and decodes every document.
func render(t *testing.T, helm string, args ...string) []obj {
	t.Helper()
	out, err := helmTemplate(helm, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var objs []obj
	for {
		var o map[string]any
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding helm template output: %v", err)
		}
		if o != nil {
			objs = append(objs, obj(o))
		}
	}
	if len(objs) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return objs
}

func helmTemplate(helm string, args ...string) ([]byte, error) {
	full := append([]string{"template", "rel", chartDir, "--namespace", "sse",
		"--kube-version", "1.34.0",
		"-a", "monitoring.coreos.com/v1", "-a", "gateway.networking.k8s.io/v1"}, args...)
	cmd := exec.Command(helm, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, stderr.String())
	}
	return out, nil
}

func find(objs []obj, kind string) []obj {
	var out []obj
	for _, o := range objs {
		if o.kind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func one(t *testing.T, objs []obj, kind string) obj {
	t.Helper()
	l := find(objs, kind)
	if len(l) != 1 {
		t.Fatalf("want one %s, rendered %d", kind, len(l))
	}
	return l[0]
}

// rendering is a values set and what the checks expect of it.
type rendering struct {
	name           string
	args           []string
	existingSecret string // "" when the chart creates the Secret
	monitoring     bool   // ServiceMonitor and PrometheusRule expected
	ingress        bool
	httpRoute      bool
	hpa            bool
	// nats: config.BROKER=nats expected, with these Secrets (name/key)
	// mounted for SSE_NATS_CREDS_FILE and SSE_NATS_CA_FILE ("" when none).
	nats               bool
	natsCreds, natsCA  [2]string
	natsStreamReplicas string
	// private: the SSE_PRIVATE_TOPICS expected ("" when unset), with the
	// Secrets (name/key) mounted for SSE_JWT_SECRET_FILE and
	// SSE_JWT_PUBLIC_KEY_FILE ("" when none) and the SSE_JWT_JWKS_URL.
	private                 string
	jwtSecret, jwtPublicKey [2]string
	jwksURL                 string
	clockPrivate            bool // the helm test pod expects 401 from clock
	// trusted is the SSE_TRUSTED_PROXIES expected, as a list; nil: the
	// chart's default (the private ranges), empty: none.
	trusted []string
	perIP   string // SSE_MAX_CONNECTIONS_PER_IP expected; "": the chart's 100
}

// defaultTrusted are the proxy ranges the chart trusts by default: the
// private ranges that hold the pod network of most clusters.
var defaultTrusted = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}

var renderings = []rendering{
	{name: "default"},
	{
		name: "default with ingress and httpRoute",
		args: []string{"--set", "ingress.enabled=true", "--set", "httpRoute.enabled=true",
			"--set", "httpRoute.parentRefs[0].name=gw", "--set", "metrics.serviceMonitor.enabled=true",
			"--set", "metrics.prometheusRule.enabled=true"},
		monitoring: true, ingress: true, httpRoute: true,
	},
	{
		name:           "production",
		args:           []string{"-f", chartDir + "/ci/production-values.yaml"},
		existingSecret: "sse-publish-tokens",
		trusted:        []string{"10.0.0.0/8"}, perIP: "200",
		monitoring: true, ingress: true, httpRoute: true, hpa: true,
		nats: true, natsCreds: [2]string{"sse-nats-creds", "nats.creds"}, natsStreamReplicas: "3",
		private: "user:*,orders/*", jwksURL: "https://idp.example.com/realms/app/protocol/openid-connect/certs",
	},
	{
		name: "nats with creds and CA secrets",
		args: []string{"--set", "config.BROKER=nats", "--set", "config.NATS_URL=nats://a:4222\\,nats://b:4222",
			"--set", "nats.credsSecret.name=creds", "--set", "nats.credsSecret.key=user.creds",
			"--set", "nats.caSecret.name=nats-ca"},
		nats: true, natsCreds: [2]string{"creds", "user.creds"}, natsCA: [2]string{"nats-ca", "ca.crt"},
	},
	{
		name: "private topics with HS256 secret and public key secrets",
		args: []string{"--set", "config.PRIVATE_TOPICS=user:*\\,clock",
			"--set", "jwt.hmacSecret.name=sse-jwt",
			"--set", "jwt.publicKeySecret.name=idp-cert", "--set", "jwt.publicKeySecret.key=tls.crt",
			"--set", "config.CORS_ORIGINS=https://app.example.com"},
		private: "user:*,clock", jwtSecret: [2]string{"sse-jwt", "jwt-secret"}, jwtPublicKey: [2]string{"idp-cert", "tls.crt"},
		clockPrivate: true,
	},
	{
		name: "no proxy in front: nobody's X-Forwarded-For believed",
		args: []string{"--set", "config.TRUSTED_PROXIES=", "--set", "config.MAX_CONNECTIONS_PER_IP=20",
			"--set", "config.MAX_NON_STREAM_CONNECTIONS=4096", "--set", "config.IDLE_TIMEOUT=2m"},
		trusted: []string{}, perIP: "20",
	},
}

func TestChart(t *testing.T) {
	helm := helmBin(t)
	for _, r := range renderings {
		t.Run(r.name, func(t *testing.T) {
			objs := render(t, helm, r.args...)
			dep := one(t, objs, "Deployment")
			pod := asMap(get(dep, "spec", "template", "spec"))
			c := asMap(get(pod, "containers", 0))
			if c == nil {
				t.Fatal("Deployment has no container")
			}
			ports := containerPorts(c)
			env := envOf(t, c)
			svc := one(t, objs, "Service")
			svcHTTP, svcAdmin := servicePorts(t, svc)

			t.Run("grace period covers preStop and drain", func(t *testing.T) {
				grace := toInt(t, pod["terminationGracePeriodSeconds"])
				preStop := toInt(t, get(c, "lifecycle", "preStop", "sleep", "seconds"))
				if preStop <= 0 {
					t.Errorf("no lifecycle.preStop.sleep.seconds")
				}
				d, err := time.ParseDuration(env["SSE_SHUTDOWN_TIMEOUT"])
				if err != nil {
					t.Fatalf("SSE_SHUTDOWN_TIMEOUT=%q: %v", env["SSE_SHUTDOWN_TIMEOUT"], err)
				}
				if float64(grace) <= float64(preStop)+d.Seconds() {
					t.Errorf("terminationGracePeriodSeconds %d <= preStop %ds + SSE_SHUTDOWN_TIMEOUT %s", grace, preStop, d)
				}
			})

			t.Run("probes on the admin port", func(t *testing.T) {
				for probe, p := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
					if got := str(get(c, probe, "httpGet", "path")); got != p {
						t.Errorf("%s path %q, want %q", probe, got, p)
					}
					if got := portName(get(c, probe, "httpGet", "port"), ports); got != "admin" {
						t.Errorf("%s port %v is not the admin port", probe, get(c, probe, "httpGet", "port"))
					}
				}
				if ports["http"] == 0 || ports["admin"] == 0 {
					t.Errorf("container ports %v: want http and admin", ports)
				}
				addr := fmt.Sprintf(":%d", ports["admin"])
				if env["SSE_ADMIN_ADDR"] != addr || env["SSE_ADDR"] != fmt.Sprintf(":%d", ports["http"]) {
					t.Errorf("SSE_ADDR=%q SSE_ADMIN_ADDR=%q do not match container ports %v", env["SSE_ADDR"], env["SSE_ADMIN_ADDR"], ports)
				}
			})

			t.Run("image pinned", func(t *testing.T) {
				image := str(c["image"])
				ref, _, _ := strings.Cut(image, "@")
				_, last := path.Split(ref)
				_, tag, ok := strings.Cut(last, ":")
				if !ok || tag == "" || tag == "latest" {
					t.Errorf("image %q: want a pinned tag, not none or latest", image)
				}
			})

			t.Run("environment", func(t *testing.T) {
				if env["SSE_LOG_FORMAT"] != "json" {
					t.Errorf("SSE_LOG_FORMAT=%q, want json", env["SSE_LOG_FORMAT"])
				}
				var environ []string
				for k, v := range env {
					environ = append(environ, k+"="+v)
				}
				if unknown := config.Unknown(environ); len(unknown) > 0 {
					t.Errorf("the chart sets variables the service does not know: %v", unknown)
				}
				if _, ok := env["SSE_PUBLISH_TOKENS"]; ok {
					t.Error("SSE_PUBLISH_TOKENS in plain env: tokens belong in the Secret")
				}
				for k, v := range env {
					if strings.Contains(v, "e+") {
						t.Errorf("%s=%q: a number printed in exponent form", k, v)
					}
				}
			})

			t.Run("per-address limit with the proxies trusted", func(t *testing.T) {
				want := r.trusted
				if want == nil {
					want = defaultTrusted
				}
				v, ok := env["SSE_TRUSTED_PROXIES"]
				if !ok {
					t.Fatal("SSE_TRUSTED_PROXIES not set: behind an ingress every client would count as the ingress's address")
				}
				var got []string
				for p := range strings.SplitSeq(v, ",") {
					if p = strings.TrimSpace(p); p != "" {
						got = append(got, p)
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("SSE_TRUSTED_PROXIES=%q, want %q", v, strings.Join(want, ","))
				}
				c := config.Defaults()
				c.TrustedProxies = got
				if err := c.Validate(); err != nil {
					t.Errorf("SSE_TRUSTED_PROXIES=%q: %v", v, err)
				}
				perIP := r.perIP
				if perIP == "" {
					perIP = "100"
				}
				if got := env["SSE_MAX_CONNECTIONS_PER_IP"]; got != perIP {
					t.Errorf("SSE_MAX_CONNECTIONS_PER_IP=%q, want %s: one address must never take every slot", got, perIP)
				}
			})

			t.Run("publish tokens from a Secret volume", func(t *testing.T) {
				file := env["SSE_PUBLISH_TOKENS_FILE"]
				if file == "" {
					t.Fatal("SSE_PUBLISH_TOKENS_FILE not set")
				}
				var mount map[string]any
				for _, m := range list(c["volumeMounts"]) {
					mp := str(get(m, "mountPath"))
					if strings.HasPrefix(file, strings.TrimSuffix(mp, "/")+"/") {
						mount = asMap(m)
					}
				}
				if mount == nil {
					t.Fatalf("no volumeMount holds %s", file)
				}
				if mount["readOnly"] != true {
					t.Errorf("token mount %v is not readOnly", mount["mountPath"])
				}
				rel := strings.TrimPrefix(file, strings.TrimSuffix(str(mount["mountPath"]), "/")+"/")
				var vol map[string]any
				for _, v := range list(pod["volumes"]) {
					if str(get(v, "name")) == str(mount["name"]) {
						vol = asMap(v)
					}
				}
				secretName := str(get(vol, "secret", "secretName"))
				if secretName == "" {
					t.Fatalf("volume %v is not a Secret volume", mount["name"])
				}
				key := rel
				for _, it := range list(get(vol, "secret", "items")) {
					if str(get(it, "path")) == rel {
						key = str(get(it, "key"))
					}
				}
				secrets := find(objs, "Secret")
				if r.existingSecret != "" {
					if secretName != r.existingSecret {
						t.Errorf("volume uses Secret %q, want existingSecret %q", secretName, r.existingSecret)
					}
					if len(secrets) != 0 {
						t.Errorf("existingSecret set, but the chart renders %d Secret(s)", len(secrets))
					}
					return
				}
				if len(secrets) != 1 || secrets[0].name() != secretName {
					t.Fatalf("volume uses Secret %q, rendered Secrets: %d", secretName, len(secrets))
				}
				enc := str(get(secrets[0], "data", key))
				tok, err := base64.StdEncoding.DecodeString(enc)
				if err != nil || len(strings.TrimSpace(string(tok))) < 16 {
					t.Fatalf("Secret key %q: want a token of 16+ characters (err %v)", key, err)
				}
				sum := sha256.Sum256(tok)
				if got := str(get(dep, "spec", "template", "metadata", "annotations", "checksum/secret")); got != hex.EncodeToString(sum[:]) {
					t.Errorf("checksum/secret annotation %q does not match the rendered Secret", got)
				}
			})

			t.Run("broker", func(t *testing.T) {
				if !r.nats {
					if b, ok := env["SSE_BROKER"]; ok && b != "memory" {
						t.Errorf("SSE_BROKER=%q, want memory (or unset)", b)
					}
					for _, k := range []string{"SSE_NATS_CREDS_FILE", "SSE_NATS_CA_FILE"} {
						if _, ok := env[k]; ok {
							t.Errorf("%s set without nats secrets", k)
						}
					}
					return
				}
				if env["SSE_BROKER"] != "nats" {
					t.Errorf("SSE_BROKER=%q, want nats", env["SSE_BROKER"])
				}
				if !strings.Contains(env["SSE_NATS_URL"], "://") {
					t.Errorf("SSE_NATS_URL=%q, want nats URLs", env["SSE_NATS_URL"])
				}
				if r.natsStreamReplicas != "" && env["SSE_NATS_REPLICAS"] != r.natsStreamReplicas {
					t.Errorf("SSE_NATS_REPLICAS=%q, want %s", env["SSE_NATS_REPLICAS"], r.natsStreamReplicas)
				}
				checkSecretFile(t, c, pod, env, "SSE_NATS_CREDS_FILE", r.natsCreds)
				checkSecretFile(t, c, pod, env, "SSE_NATS_CA_FILE", r.natsCA)
			})

			t.Run("jwt keys from Secret volumes", func(t *testing.T) {
				if _, ok := env["SSE_JWT_SECRET"]; ok {
					t.Error("SSE_JWT_SECRET in plain env: the secret belongs in a Secret")
				}
				if got := env["SSE_PRIVATE_TOPICS"]; got != r.private {
					t.Errorf("SSE_PRIVATE_TOPICS=%q, want %q", got, r.private)
				}
				if got := env["SSE_JWT_JWKS_URL"]; got != r.jwksURL {
					t.Errorf("SSE_JWT_JWKS_URL=%q, want %q", got, r.jwksURL)
				}
				if r.private != "" && env["SSE_JWT_SECRET_FILE"] == "" && env["SSE_JWT_PUBLIC_KEY_FILE"] == "" && env["SSE_JWT_JWKS_URL"] == "" {
					t.Error("SSE_PRIVATE_TOPICS without a JWT key source: the service would refuse to start")
				}
				checkSecretFile(t, c, pod, env, "SSE_JWT_SECRET_FILE", r.jwtSecret)
				checkSecretFile(t, c, pod, env, "SSE_JWT_PUBLIC_KEY_FILE", r.jwtPublicKey)
			})

			t.Run("security context", func(t *testing.T) {
				psc := asMap(pod["securityContext"])
				csc := asMap(c["securityContext"])
				eff := func(k string) any {
					if v, ok := csc[k]; ok {
						return v
					}
					return psc[k]
				}
				if eff("runAsNonRoot") != true {
					t.Error("runAsNonRoot is not true")
				}
				if toInt(t, eff("runAsUser")) != 65532 {
					t.Errorf("runAsUser %v, want 65532", eff("runAsUser"))
				}
				if csc["readOnlyRootFilesystem"] != true {
					t.Error("readOnlyRootFilesystem is not true")
				}
				if csc["allowPrivilegeEscalation"] != false {
					t.Error("allowPrivilegeEscalation is not false")
				}
				if !slices.ContainsFunc(list(get(csc, "capabilities", "drop")), func(v any) bool { return v == "ALL" }) {
					t.Error("capabilities.drop has no ALL")
				}
				if str(get(eff("seccompProfile"), "type")) != "RuntimeDefault" {
					t.Error("seccompProfile is not RuntimeDefault")
				}
			})

			t.Run("resources and spread", func(t *testing.T) {
				res := asMap(c["resources"])
				if get(res, "requests", "cpu") == nil || get(res, "requests", "memory") == nil || get(res, "limits", "memory") == nil {
					t.Errorf("resources %v: want cpu and memory requests and a memory limit", res)
				}
				if r.name == "default" && get(res, "limits", "cpu") != nil {
					t.Error("default values set a CPU limit (throttling stalls every stream)")
				}
				var keys []string
				for _, tsc := range list(pod["topologySpreadConstraints"]) {
					keys = append(keys, str(get(tsc, "topologyKey")))
					if w := str(get(tsc, "whenUnsatisfiable")); w != "ScheduleAnyway" {
						t.Errorf("topology spread %q: %s", get(tsc, "topologyKey"), w)
					}
				}
				for _, k := range []string{"topology.kubernetes.io/zone", "kubernetes.io/hostname"} {
					if !slices.Contains(keys, k) {
						t.Errorf("no topology spread over %s (have %v)", k, keys)
					}
				}
			})

			t.Run("service ports", func(t *testing.T) {
				if svcHTTP == 0 || svcAdmin == 0 {
					t.Errorf("Service ports http=%d admin=%d: want both", svcHTTP, svcAdmin)
				}
			})

			t.Run("routes use only the public port", func(t *testing.T) {
				ings := find(objs, "Ingress")
				if (len(ings) == 1) != r.ingress {
					t.Errorf("rendered %d Ingress, want ingress=%v", len(ings), r.ingress)
				}
				for _, ing := range ings {
					for _, rule := range list(get(ing, "spec", "rules")) {
						for _, p := range list(get(rule, "http", "paths")) {
							port := asMap(get(p, "backend", "service", "port"))
							if !(str(port["name"]) == "http" || (port["number"] != nil && toInt(t, port["number"]) == svcHTTP)) {
								t.Errorf("Ingress backend port %v is not the public port", port)
							}
							if n := str(get(p, "backend", "service", "name")); n != svc.name() {
								t.Errorf("Ingress backend service %q, want %q", n, svc.name())
							}
						}
					}
				}
				if ing := find(objs, "Ingress"); r.name == "production" && len(ing) == 1 {
					if v := str(get(ing[0], "metadata", "annotations", "nginx.ingress.kubernetes.io/proxy-buffering")); v != "off" {
						t.Errorf("production Ingress proxy-buffering %q, want off", v)
					}
				}
				routes := find(objs, "HTTPRoute")
				if (len(routes) == 1) != r.httpRoute {
					t.Errorf("rendered %d HTTPRoute, want httpRoute=%v", len(routes), r.httpRoute)
				}
				for _, hr := range routes {
					if len(list(get(hr, "spec", "parentRefs"))) == 0 {
						t.Error("HTTPRoute without parentRefs")
					}
					for _, rule := range list(get(hr, "spec", "rules")) {
						for _, b := range list(get(rule, "backendRefs")) {
							if p := toInt(t, get(b, "port")); p != svcHTTP || p == svcAdmin {
								t.Errorf("HTTPRoute backend port %d, want the public %d", p, svcHTTP)
							}
						}
						if str(get(rule, "timeouts", "request")) != "0s" {
							t.Errorf("HTTPRoute request timeout %v: streams need 0s (none)", get(rule, "timeouts", "request"))
						}
					}
				}
			})

			t.Run("network policy keeps admin private", func(t *testing.T) {
				np := one(t, objs, "NetworkPolicy")
				adminCovered := false
				for _, rule := range list(get(np, "spec", "ingress")) {
					rp := list(get(rule, "ports"))
					covers := len(rp) == 0
					for _, p := range rp {
						if portName(get(p, "port"), ports) == "admin" {
							covers = true
						}
					}
					if !covers {
						continue
					}
					adminCovered = true
					from := list(get(rule, "from"))
					if len(from) == 0 {
						t.Fatalf("a NetworkPolicy rule opens the admin port to everyone: %v", rule)
					}
					for _, peer := range from {
						if everyone(peer) {
							t.Errorf("NetworkPolicy peer %v opens the admin port to everyone", peer)
						}
					}
				}
				if !adminCovered {
					t.Error("no NetworkPolicy rule lets Prometheus reach the admin port")
				}
			})

			t.Run("monitoring", func(t *testing.T) {
				sms := find(objs, "ServiceMonitor")
				rules := find(objs, "PrometheusRule")
				if !r.monitoring {
					if len(sms)+len(rules) != 0 {
						t.Errorf("ServiceMonitor/PrometheusRule rendered while disabled")
					}
				} else {
					sm := one(t, objs, "ServiceMonitor")
					for _, ep := range list(get(sm, "spec", "endpoints")) {
						if str(get(ep, "port")) != "admin" || str(get(ep, "path")) != "/metrics" {
							t.Errorf("ServiceMonitor endpoint %v: want port admin, path /metrics", ep)
						}
					}
					if len(list(get(sm, "spec", "endpoints"))) == 0 {
						t.Error("ServiceMonitor has no endpoints")
					}
					checkRules(t, one(t, objs, "PrometheusRule"))
					if r.name == "production" {
						for _, o := range []obj{sm, one(t, objs, "PrometheusRule")} {
							if str(get(o, "metadata", "labels", "release")) != "kube-prometheus-stack" {
								t.Errorf("%s has no release: kube-prometheus-stack label", o.kind())
							}
						}
					}
				}
				checkDashboard(t, objs)
			})

			t.Run("autoscaling and disruption budget", func(t *testing.T) {
				hpas := find(objs, "HorizontalPodAutoscaler")
				if (len(hpas) == 1) != r.hpa {
					t.Fatalf("rendered %d HPA, want hpa=%v", len(hpas), r.hpa)
				}
				if r.hpa {
					if _, ok := asMap(get(dep, "spec"))["replicas"]; ok {
						t.Error("Deployment sets replicas while the HPA owns them")
					}
					hasConns := false
					for _, m := range list(get(hpas[0], "spec", "metrics")) {
						if str(get(m, "pods", "metric", "name")) == "sse_connected_clients" {
							hasConns = true
						}
					}
					if !hasConns {
						t.Error("production HPA does not scale on sse_connected_clients")
					}
				}
				if pdbs := find(objs, "PodDisruptionBudget"); len(pdbs) != 1 || toInt(t, get(pdbs[0], "spec", "maxUnavailable")) != 1 {
					t.Errorf("want one PodDisruptionBudget with maxUnavailable 1, rendered %d", len(pdbs))
				}
			})

			t.Run("helm test pod", func(t *testing.T) {
				var tp obj
				for _, p := range find(objs, "Pod") {
					if str(get(p, "metadata", "annotations", "helm.sh/hook")) == "test" {
						tp = p
					}
				}
				if tp == nil {
					t.Fatal("no helm test pod")
				}
				tc := asMap(get(tp, "spec", "containers", 0))
				script := strings.Join(strings.Fields(fmt.Sprint(tc["command"], tc["args"])), " ")
				if !strings.Contains(script, "/readyz") || !strings.Contains(script, "/v1/events?topic=clock") {
					t.Errorf("test pod does not GET /readyz and the clock stream: %s", script)
				}
				// clock listed in PRIVATE_TOPICS: without a token it is 401,
				// and the test must expect that rather than the stream.
				if expects401 := strings.Contains(script, `= 401`); expects401 != r.clockPrivate {
					t.Errorf("test pod expects 401 from clock: %v, want %v (PRIVATE_TOPICS %q): %s", expects401, r.clockPrivate, r.private, script)
				}
				tenv := envOf(t, tc)
				if tenv["ADMIN_PORT"] != strconv.Itoa(svcAdmin) || tenv["HTTP_PORT"] != strconv.Itoa(svcHTTP) {
					t.Errorf("test pod ports %v, want admin %d, http %d", tenv, svcAdmin, svcHTTP)
				}
				if img := str(tc["image"]); strings.HasSuffix(img, ":latest") || !strings.Contains(img, ":") {
					t.Errorf("test image %q is not pinned", img)
				}
				sel := asMap(get(svc, "spec", "selector"))
				labels := asMap(get(tp, "metadata", "labels"))
				matches := true
				for k, v := range sel {
					if labels[k] != v {
						matches = false
					}
				}
				if matches {
					t.Error("the Service selector matches the test pod")
				}
			})
		})
	}
}

// checkSecretFile checks that the variable name points at the mounted key
// of the Secret secret ({name, key}), or is unset when secret's name is empty.
func checkSecretFile(t *testing.T, c, pod map[string]any, env map[string]string, name string, secret [2]string) {
	t.Helper()
	file, ok := env[name]
	if secret[0] == "" {
		if ok {
			t.Errorf("%s=%q without its Secret", name, file)
		}
		return
	}
	if file == "" {
		t.Errorf("%s not set, want the file of Secret %s", name, secret[0])
		return
	}
	if gotName, gotKey := secretFile(t, c, pod, file); gotName != secret[0] || gotKey != secret[1] {
		t.Errorf("%s=%s comes from Secret %q key %q, want %q key %q", name, file, gotName, gotKey, secret[0], secret[1])
	}
}

// secretFile finds the read-only Secret volume mount holding file and
// returns the Secret's name and the key the file comes from.
func secretFile(t *testing.T, c, pod map[string]any, file string) (name, key string) {
	t.Helper()
	var mount map[string]any
	for _, m := range list(c["volumeMounts"]) {
		if strings.HasPrefix(file, strings.TrimSuffix(str(get(m, "mountPath")), "/")+"/") {
			mount = asMap(m)
		}
	}
	if mount == nil {
		t.Errorf("no volumeMount holds %s", file)
		return "", ""
	}
	if mount["readOnly"] != true {
		t.Errorf("mount %v of %s is not readOnly", mount["mountPath"], file)
	}
	rel := strings.TrimPrefix(file, strings.TrimSuffix(str(mount["mountPath"]), "/")+"/")
	var vol map[string]any
	for _, v := range list(pod["volumes"]) {
		if str(get(v, "name")) == str(mount["name"]) {
			vol = asMap(v)
		}
	}
	name = str(get(vol, "secret", "secretName"))
	if name == "" {
		t.Errorf("volume %v of %s is not a Secret volume", mount["name"], file)
		return "", ""
	}
	key = rel
	for _, it := range list(get(vol, "secret", "items")) {
		if str(get(it, "path")) == rel {
			key = str(get(it, "key"))
		}
	}
	return name, key
}

// TestChartRefuses checks values the chart must reject.
func TestChartRefuses(t *testing.T) {
	helm := helmBin(t)
	for _, args := range [][]string{
		{"--set", "image.tag=latest"},
		{"--set", "config.SHUTDOWN_TIMEOUT=10s"},
		{"--set", "config.PUBLISH_TOKENS=abcdefghijklmnopq"},
		{"--set", "config.HEARTBEAT_INTERVALL=15s"},
		{"--set", "config.LOG_FORMAT=xml"},
		{"--set", "httpRoute.enabled=true"}, // no parentRefs
		{"--set", "config.BROKER=redis"},
		{"--set", "config.BROKER=nats"}, // no NATS_URL
		{"--set", "config.BROKER=nats", "--set", "config.NATS_URL="},
		{"--set", "config.BROKER=nats", "--set", "config.NATS_URL=nats.nats:4222"}, // not a URL
		{"--set", "config.NATS_REPLICAS=7"},
		{"--set", "config.NATS_CREDS_FILE=/etc/nats.creds"}, // set from nats.credsSecret
		{"--set", "config.NATS_CA_FILE=/etc/ca.crt"},        // set from nats.caSecret
		{"--set", "nats.credsSecret.key=../x"},
		{"--set", "config.PRIVATE_TOPICS=user:*"}, // no JWT key source
		{"--set", "config.PRIVATE_TOPICS=a b", "--set", "jwt.hmacSecret.name=s"},
		{"--set", "config.JWT_SECRET=0123456789abcdef0123456789abcdef"}, // belongs in a Secret
		{"--set", "config.JWT_SECRET_FILE=/etc/jwt"},                    // set from jwt.hmacSecret
		{"--set", "config.JWT_PUBLIC_KEY_FILE=/etc/key.pem"},            // set from jwt.publicKeySecret
		{"--set", "config.JWT_JWKS_URL=idp.example.com/certs"},          // not an http(s) URL
		{"--set", "config.CORS_ORIGINS=app.example.com"},                // not an origin
		{"--set", "config.AUTH_COOKIE=a b"},
		{"--set", "jwt.publicKeySecret.key=../x"},
		{"--set", "config.TRUSTED_PROXIES=ingress.local"}, // not a CIDR
		{"--set", "config.MAX_CONNECTIONS_PER_IP=-1"},
		{"--set", "config.MAX_NON_STREAM_CONNECTIONS=-1"},
		{"--set", "config.MAX_NON_STREAM_CONNECTIONS_PER_IP=-1"},
		{"--set", "config.IDLE_TIMEOUT=soon"},
	} {
		if _, err := helmTemplate(helm, args...); err == nil {
			t.Errorf("helm template %v succeeded, want an error", args)
		}
	}
}

func checkRules(t *testing.T, pr obj) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	want, got := groupSummary(get(file, "groups")), groupSummary(get(pr, "spec", "groups"))
	if len(want) == 0 || !slices.Equal(want, got) {
		t.Errorf("PrometheusRule groups/rules %v, want those of alerts.yaml %v", got, want)
	}
	// The rules must arrive byte-for-byte (Helm must not have touched
	// {{ $labels }} or the expressions).
	wj, _ := json.Marshal(get(file, "groups"))
	gj, _ := json.Marshal(get(pr, "spec", "groups"))
	if !bytes.Equal(wj, gj) {
		t.Error("PrometheusRule groups differ from alerts.yaml")
	}
}

func groupSummary(groups any) []string {
	var out []string
	for _, g := range list(groups) {
		for _, r := range list(get(g, "rules")) {
			out = append(out, str(get(g, "name"))+"/"+str(get(r, "alert"))+str(get(r, "record")))
		}
	}
	return out
}

func checkDashboard(t *testing.T, objs []obj) {
	t.Helper()
	var cm obj
	for _, o := range find(objs, "ConfigMap") {
		if str(get(o, "metadata", "labels", "grafana_dashboard")) != "" {
			cm = o
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap labelled grafana_dashboard")
	}
	if v := str(get(cm, "metadata", "labels", "grafana_dashboard")); v != "1" {
		t.Errorf("grafana_dashboard label %q, want \"1\"", v)
	}
	var n int
	for k, v := range asMap(get(cm, "data")) {
		n++
		var d map[string]any
		if err := json.Unmarshal([]byte(str(v)), &d); err != nil {
			t.Errorf("dashboard %s is not valid JSON: %v", k, err)
			continue
		}
		if d["uid"] != "sse-service" {
			t.Errorf("dashboard %s uid %v, want sse-service", k, d["uid"])
		}
		want, _ := os.ReadFile(filepath.Join(chartDir, "dashboards", "sse-service.json"))
		if strings.TrimSpace(str(v)) != strings.TrimSpace(string(want)) {
			t.Errorf("dashboard %s differs from dashboards/sse-service.json", k)
		}
	}
	if n == 0 {
		t.Error("dashboard ConfigMap has no data")
	}
}

// everyone reports whether a NetworkPolicy peer admits any source.
func everyone(peer any) bool {
	m := asMap(peer)
	if len(m) == 0 {
		return true
	}
	if ip := asMap(m["ipBlock"]); ip != nil {
		c := str(ip["cidr"])
		return strings.HasSuffix(c, "/0")
	}
	ns, hasNS := m["namespaceSelector"]
	pod, hasPod := m["podSelector"]
	emptySel := func(s any) bool {
		sm := asMap(s)
		return len(asMap(sm["matchLabels"])) == 0 && len(list(sm["matchExpressions"])) == 0
	}
	// namespaceSelector {} alone (or with podSelector {}): every pod of
	// every namespace.
	return hasNS && emptySel(ns) && (!hasPod || emptySel(pod))
}

func containerPorts(c map[string]any) map[string]int {
	out := map[string]int{}
	for _, p := range list(c["ports"]) {
		n, _ := strconv.Atoi(str(get(p, "containerPort")))
		out[str(get(p, "name"))] = n
	}
	return out
}

// portName resolves a port (name or number) to its container port name.
func portName(v any, ports map[string]int) string {
	s := str(v)
	if _, ok := ports[s]; ok {
		return s
	}
	if n, err := strconv.Atoi(s); err == nil {
		for name, p := range ports {
			if p == n {
				return name
			}
		}
	}
	return ""
}

func servicePorts(t *testing.T, svc obj) (http, admin int) {
	t.Helper()
	for _, p := range list(get(svc, "spec", "ports")) {
		switch str(get(p, "name")) {
		case "http":
			http = toInt(t, get(p, "port"))
			if str(get(p, "targetPort")) != "http" && str(get(p, "targetPort")) != "8080" {
				t.Errorf("Service port http targets %v", get(p, "targetPort"))
			}
		case "admin":
			admin = toInt(t, get(p, "port"))
			if str(get(p, "targetPort")) != "admin" && str(get(p, "targetPort")) != "9090" {
				t.Errorf("Service port admin targets %v", get(p, "targetPort"))
			}
		}
	}
	return http, admin
}

func envOf(t *testing.T, c map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range list(c["env"]) {
		name := str(get(e, "name"))
		if _, dup := out[name]; dup {
			t.Errorf("env %s set twice", name)
		}
		out[name] = str(get(e, "value"))
	}
	return out
}

func toInt(t *testing.T, v any) int {
	t.Helper()
	n, err := strconv.Atoi(str(v))
	if err != nil {
		t.Errorf("%v (%T) is not an integer", v, v)
	}
	return n
}
