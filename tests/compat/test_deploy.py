"""The deployment files under deploy/ (issue 7) are complete and consistent, and they work.

- deploy/kubernetes: every object has the apiVersion its kind needs, every reference
  (service account, ConfigMap, headless Service, volumes, ports) resolves, and the probes hit
  sys/health so that liveness tolerates a sealed or uninitialised server and readiness does not.
- The ConfigMap's arcanum.hcl starts the real server (ARCANUM_BIN) unchanged but for the
  storage path and the listener address, and the probe URLs answer as the StatefulSet expects
  when uninitialised, sealed and unsealed; the server exports the metric names listed here.
- deploy/kubernetes-ha, the three-node variant on etcd: the same checks where they apply, and
  that readiness lets standbys in, the arcanum-active Service selects the pod labelled
  vault-active=true, the Role lets every pod get and patch its own pod, each pod's api_addr,
  pod name and namespace come from the downward API, and the real server accepts the
  ConfigMap's HA config with the pod's environment (up to opening etcd, which is not run here).
- deploy/monitoring: promtool accepts the rules and their unit tests pass, the scrape configs
  ask for format=prometheus (for the pods of either variant), and the rules and the Grafana
  dashboard use only the metric names the server exports.

promtool comes from env PROMTOOL or PATH; without it these tests fail (never skip).
"""

import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest
import requests
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KUBERNETES = os.path.join(ROOT, "deploy", "kubernetes")
KUBERNETES_HA = os.path.join(ROOT, "deploy", "kubernetes-ha")
KUBERNETES_HA_AUTOUNSEAL = os.path.join(ROOT, "deploy", "kubernetes-ha-autounseal")
# Tests that hold for both variants run once per directory.
VARIANTS = pytest.mark.parametrize("directory", [KUBERNETES, KUBERNETES_HA], ids=["single", "ha"])
MONITORING = os.path.join(ROOT, "deploy", "monitoring")
RULES = os.path.join(MONITORING, "arcanum-rules.yml")
RULES_TEST = os.path.join(MONITORING, "arcanum-rules.test.yml")
SCRAPE_CONFIG = os.path.join(MONITORING, "prometheus-scrape.yml")
SERVICE_MONITOR = os.path.join(MONITORING, "servicemonitor.yaml")
DASHBOARD = os.path.join(MONITORING, "grafana-dashboard.json")

NAMESPACE = "arcanum"
HEALTH = "/v1/sys/health"
# The query parameters sys/health understands (server/arcanum/src/sys/seal.rs, fn health).
HEALTH_PARAMS = {
    "standbyok",
    "perfstandbyok",
    "activecode",
    "standbycode",
    "sealedcode",
    "uninitcode",
    "drsecondarycode",
    "performancestandbycode",
    "haunhealthycode",
    "removedcode",
}

# The series the server exports at /v1/sys/metrics?format=prometheus.
METRICS = {
    "arcanum_http_requests_total",
    "arcanum_core_initialized",
    "arcanum_core_unsealed",
    "arcanum_core_unseal_progress",
    "arcanum_core_unseal_threshold",
    "arcanum_token_count",
    "arcanum_expire_leases",
    "arcanum_expire_revocations_pending",
    "arcanum_expire_revocations_irrevocable",
    "arcanum_expire_revocation_failures_total",
    "arcanum_expire_revocations_total",
    "arcanum_auth_logins_total",
    "arcanum_auth_login_failures_total",
    "arcanum_audit_writes_total",
    "arcanum_audit_failures_total",
    "arcanum_barrier_encryptions_total",
    "arcanum_quota_rejections_total",
    "arcanum_ha_active",
    "arcanum_ha_leadership_changes_total",
    "arcanum_ha_forwarded_requests_total",
    "arcanum_ha_standby_reads_total",
    "arcanum_connections_refused_total",
}
# Histograms exist only as their _bucket, _sum and _count series.
HISTOGRAMS = {
    "arcanum_http_request_duration_seconds",
    "arcanum_storage_operation_duration_seconds",
    "arcanum_ha_takeover_duration_seconds",
}
# The HA instruments without labels, which every server exports from the start (0 when not HA),
# so that rules and dashboards see the same series on every node.
HA_UNLABELLED = {"arcanum_ha_active", "arcanum_ha_leadership_changes_total", "arcanum_ha_takeover_duration_seconds"}
# The labels service_registration "kubernetes" keeps on each node's pod
# (server/arcanum/src/service_registration.rs, fn labels).
POD_LABELS = {"vault-active", "vault-initialized", "vault-perf-standby", "vault-sealed", "vault-version"}
HISTOGRAM_SERIES = {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}


# --- Kubernetes manifests ------------------------------------------------------------------


def _manifests(directory=KUBERNETES):
    paths = sorted(glob.glob(os.path.join(directory, "**", "*.y*ml"), recursive=True))
    assert paths, f"no manifests in {os.path.relpath(directory, ROOT)}"
    docs = []
    for path in paths:
        with open(path) as f:
            docs.extend(doc for doc in yaml.safe_load_all(f) if doc is not None)
    return docs


def _one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _statefulset(docs):
    return _one(docs, "StatefulSet")


def _container(statefulset):
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, containers
    return containers[0]


def _config_hcl(docs, statefulset):
    """The arcanum.hcl text that the StatefulSet's -config flag points at, found through the
    container's volume mounts and the pod's ConfigMap volume."""
    container = _container(statefulset)
    flags = [arg for arg in container["command"] + container.get("args", []) if arg.startswith("-config=")]
    assert len(flags) == 1, container["command"]
    config_path = flags[0].split("=", 1)[1]
    mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in statefulset["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = _one(docs, "ConfigMap", volume["configMap"]["name"])
    key = config_path[len(mount["mountPath"].rstrip("/")) + 1 :]
    assert key in config_map["data"], f"ConfigMap {config_map['metadata']['name']} has no key {key}"
    return config_map["data"][key]


def test_manifests_have_the_right_kinds_and_api_versions():
    docs = _manifests()
    expected_api = {
        "Namespace": "v1",
        "ServiceAccount": "v1",
        "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
        "ConfigMap": "v1",
        "StatefulSet": "apps/v1",
        "Service": "v1",
    }
    for doc in docs:
        assert doc.get("kind") in expected_api, f"unexpected object {doc.get('kind')}"
        assert doc["apiVersion"] == expected_api[doc["kind"]], doc["metadata"]
        assert doc["metadata"]["name"]
        if doc["kind"] in ("Namespace", "ClusterRoleBinding"):
            assert "namespace" not in doc["metadata"], f"{doc['kind']} is cluster-scoped"
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    assert {d["kind"] for d in docs} == set(expected_api)
    assert _one(docs, "Namespace")["metadata"]["name"] == NAMESPACE
    assert len([d for d in docs if d["kind"] == "Service"]) == 2

    binding = _one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:auth-delegator",
    }
    for subject in binding["subjects"]:
        assert subject["kind"] == "ServiceAccount"
        _one(docs, "ServiceAccount", subject["name"])
        assert subject["namespace"] == NAMESPACE

    statefulset = _statefulset(docs)
    assert statefulset["spec"]["replicas"] == 1, "sled is one server's store: exactly one replica"
    claims = statefulset["spec"]["volumeClaimTemplates"]
    assert claims and all(c["spec"]["resources"]["requests"]["storage"] for c in claims)


def test_statefulset_references_resolve():
    docs = _manifests()
    statefulset = _statefulset(docs)
    pod = statefulset["spec"]["template"]
    container = _container(statefulset)

    _one(docs, "ServiceAccount", pod["spec"]["serviceAccountName"])
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    headless = _one(docs, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"

    assert container["command"][:2] == ["arcanum", "server"]
    hcl = _config_hcl(docs, statefulset)

    # Every mount has a volume or a claim template, and the data volume is where the
    # config's sled store lives.
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path, name in mounts.items():
        assert name in volumes | claims, f"volume {name} (mounted at {path}) is not defined"
    for volume in pod["spec"]["volumes"]:
        if "configMap" in volume:
            _one(docs, "ConfigMap", volume["configMap"]["name"])
    storage_path = re.search(r'storage\s+"sled"\s*\{[^}]*path\s*=\s*"([^"]+)"', hcl).group(1)
    assert mounts.get(storage_path) in claims, f"the sled path {storage_path} is not on a persistent volume"

    # Both Services select the pod and reach a named container port.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8200}
    for service in (d for d in docs if d["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), service["metadata"]
        for port in service["spec"]["ports"]:
            assert port["port"] == 8200 and port["targetPort"] in ports
    client_service = next(d for d in docs if d["kind"] == "Service" and d is not headless)
    assert client_service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert f"://{client_service['metadata']['name']}.{NAMESPACE}.svc:8200" in hcl, "api_addr names the Service"


def _probe_query(probe, ports):
    get = probe["httpGet"]
    assert get["port"] in ports or get["port"] in ports.values()
    assert get.get("scheme", "HTTP") == "HTTP", "the ConfigMap's listener is plain HTTP"
    url = urllib.parse.urlsplit(get["path"])
    assert url.path == HEALTH, get["path"]
    query = urllib.parse.parse_qs(url.query, strict_parsing=True)
    assert all(len(v) == 1 for v in query.values()), query
    unknown = set(query) - HEALTH_PARAMS
    assert not unknown, f"sys/health does not understand {unknown}"
    return get["path"], {k: v[0] for k, v in query.items()}


def _probes(docs):
    container = _container(_statefulset(docs))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return _probe_query(container["livenessProbe"], ports), _probe_query(container["readinessProbe"], ports)


@VARIANTS
def test_liveness_tolerates_sealed_and_uninitialised_but_readiness_does_not(directory):
    (_, liveness), (_, readiness) = _probes(_manifests(directory))
    # Kubernetes counts 200-399 as success.
    assert 200 <= int(liveness["sealedcode"]) < 400
    assert 200 <= int(liveness["uninitcode"]) < 400
    assert liveness.get("standbyok") == "true"
    assert readiness.get("standbyok") == "true"
    assert int(readiness.get("sealedcode", 503)) >= 400
    assert int(readiness.get("uninitcode", 501)) >= 400


@VARIANTS
def test_pod_is_locked_down_and_annotated_for_prometheus(directory):
    statefulset = _statefulset(_manifests(directory))
    pod = statefulset["spec"]["template"]
    container = _container(statefulset)
    pod_security = pod["spec"].get("securityContext", {})
    security = container["securityContext"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/v1/sys/metrics"
    assert annotations["prometheus.io/param_format"] == "prometheus"
    assert int(annotations["prometheus.io/port"]) == 8200


@VARIANTS
def test_config_lets_prometheus_scrape_without_a_token(directory):
    docs = _manifests(directory)
    hcl = _config_hcl(docs, _statefulset(docs))
    listener = re.search(r'listener\s+"tcp"\s*\{(.*?)\n\}', hcl, flags=re.S)
    assert listener, hcl
    body = listener.group(1)
    assert re.search(r'^\s*address\s*=\s*"0\.0\.0\.0:8200"', body, flags=re.M)
    telemetry = re.search(r"telemetry\s*\{([^}]*)\}", body)
    assert telemetry and re.search(r"^\s*unauthenticated_metrics_access\s*=\s*true\s*$", telemetry.group(1), flags=re.M)
    # TLS is shown, commented out, for production.
    assert re.search(r"^\s*#\s*tls_cert_file\s*=", body, flags=re.M)
    assert re.search(r"^\s*#\s*tls_key_file\s*=", body, flags=re.M)


# --- The real server with the ConfigMap's config ---------------------------------------------


def _start_server(config_path, stderr_file):
    binary = os.environ.get("ARCANUM_BIN")
    assert binary and os.path.exists(binary), "ARCANUM_BIN must point at the arcanum binary"
    proc = subprocess.Popen(
        [binary, "server", f"-config={config_path}"],
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
    )
    found = []

    def read():
        for line in proc.stdout:
            if not found and line.startswith("arcanum: listening on "):
                found.append(line.split("arcanum: listening on ", 1)[1].strip())

    # Keeps draining stdout so that the server never blocks on a full pipe.
    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not found and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, (found[0] if found else None)


def test_server_runs_with_the_config_map_and_answers_the_probes():
    docs = _manifests()
    hcl = _config_hcl(docs, _statefulset(docs))
    (liveness, _), (readiness, _) = _probes(docs)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        hcl, n_paths = re.subn(r'(path\s*=\s*)"/var/lib/arcanum"', rf'\1"{data}"', hcl)
        hcl, n_addresses = re.subn(r'(address\s*=\s*)"0\.0\.0\.0:8200"', r'\1"127.0.0.1:0"', hcl)
        assert (n_paths, n_addresses) == (1, 1), "storage path or listener address not found in arcanum.hcl"
        config_path = os.path.join(tmp, "arcanum.hcl")
        with open(config_path, "w") as f:
            f.write(hcl)

        stderr_path = os.path.join(tmp, "stderr.log")
        with open(stderr_path, "w") as stderr_file:
            proc, url = _start_server(config_path, stderr_file)
        try:
            with open(stderr_path) as f:
                assert url, f"the server did not start with the ConfigMap's config:\n{f.read()}"
            health = requests.get(url + HEALTH, timeout=10)
            assert health.status_code == 501, health.text
            assert health.json()["initialized"] is False
            assert requests.get(url + liveness, timeout=10).status_code == 200
            assert requests.get(url + readiness, timeout=10).status_code == 501
            assert os.listdir(data), "nothing was written to the rewritten storage path"

            init = requests.put(url + "/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=30)
            assert init.status_code == 200, init.text
            assert requests.get(url + HEALTH, timeout=10).status_code == 503
            assert requests.get(url + liveness, timeout=10).status_code == 200
            assert requests.get(url + readiness, timeout=10).status_code == 503

            unseal = requests.put(url + "/v1/sys/unseal", json={"key": init.json()["keys"][0]}, timeout=30)
            assert unseal.status_code == 200 and unseal.json()["sealed"] is False, unseal.text
            assert requests.get(url + liveness, timeout=10).status_code == 200
            assert requests.get(url + readiness, timeout=10).status_code == 200

            # The names the rules and the dashboard are checked against are the server's own.
            # Families with labels appear once used, so only the listed names are compared.
            families, text = _scrape(url)
            unlisted = {n for n in families if n.startswith("arcanum_")} - METRICS - HISTOGRAMS
            assert not unlisted, f"exported but missing from METRICS/HISTOGRAMS here: {unlisted}"
            for name, kind in families.items():
                if name in METRICS | HISTOGRAMS:
                    assert (kind == "histogram") == (name in HISTOGRAMS), (name, kind)
            assert HA_UNLABELLED <= set(families), f"a server without HA does not export {HA_UNLABELLED - set(families)}"
            assert re.search(r"^arcanum_ha_active 0$", text, flags=re.M), "a server without HA is never active"
        finally:
            # What the kubelet sends on pod shutdown; the StatefulSet allows 30 s.
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("the server did not stop within 20 s of SIGTERM")
        with open(stderr_path) as f:
            log = re.sub(r"\x1b\[[0-9;]*m", "", f.read())  # colours, if any
        # Arcanum warns about Vault settings it accepts but ignores: the ConfigMap has none.
        assert not re.search(r"\bWARN\b", log), log


def _scrape(url):
    """The metric families (name: type) and the text of the server's Prometheus exposition."""
    answer = requests.get(url + "/v1/sys/metrics", params={"format": "prometheus"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", answer.text, flags=re.M)), answer.text


# --- The HA variant --------------------------------------------------------------------------

# What the downward API gives a pod, for the fieldRefs the StatefulSet uses.
POD_FIELDS = {"status.podIP": "192.0.2.10", "metadata.name": "arcanum-1", "metadata.namespace": NAMESPACE}


def _pod_env(container):
    """The container's environment as Kubernetes sets it in the pod with POD_FIELDS: fieldRefs
    resolved, and $(NAME) expanded only for variables defined earlier in the list."""
    env = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            source = var["valueFrom"]
            if "fieldRef" not in source:
                continue  # Secrets, commented out or the operator's own
            env[var["name"]] = POD_FIELDS[source["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"]
            )
    return env


def _labels_beyond_template(selector, pod):
    """The part of a Service selector that the pod template does not set: labels the server keeps."""
    return {k: v for k, v in selector.items() if pod["metadata"]["labels"].get(k) != v}


def test_ha_manifests_have_the_right_kinds_and_api_versions():
    docs = _manifests(KUBERNETES_HA)
    expected_api = {
        "Namespace": "v1",
        "ServiceAccount": "v1",
        "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
        "Role": "rbac.authorization.k8s.io/v1",
        "RoleBinding": "rbac.authorization.k8s.io/v1",
        "ConfigMap": "v1",
        "StatefulSet": "apps/v1",
        "Service": "v1",
        "PodDisruptionBudget": "policy/v1",
    }
    for doc in docs:
        assert doc.get("kind") in expected_api, f"unexpected object {doc.get('kind')}"
        assert doc["apiVersion"] == expected_api[doc["kind"]], doc["metadata"]
        assert doc["metadata"]["name"]
        if doc["kind"] in ("Namespace", "ClusterRoleBinding"):
            assert "namespace" not in doc["metadata"], f"{doc['kind']} is cluster-scoped"
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]
    assert {d["kind"] for d in docs} == set(expected_api)
    assert _one(docs, "Namespace")["metadata"]["name"] == NAMESPACE
    assert len([d for d in docs if d["kind"] == "Service"]) == 3

    # The same objects as the single-node variant keep their names, so that the monitoring
    # files and the README's commands serve both.
    single = {(d["kind"], d["metadata"]["name"]) for d in _manifests(KUBERNETES)}
    assert single <= {(d["kind"], d["metadata"]["name"]) for d in docs}, single - {
        (d["kind"], d["metadata"]["name"]) for d in docs
    }

    statefulset = _statefulset(docs)
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"].get("podManagementPolicy") == "Parallel", "a sealed pod would hold back the next"
    assert "volumeClaimTemplates" not in statefulset["spec"], "etcd holds the data: no per-pod volume"

    # Evictions take one pod at a time: each comes back sealed.
    pod = statefulset["spec"]["template"]
    budget = _one(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    spread = pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname" for t in spread)


def test_ha_statefulset_references_resolve():
    docs = _manifests(KUBERNETES_HA)
    statefulset = _statefulset(docs)
    pod = statefulset["spec"]["template"]
    container = _container(statefulset)

    _one(docs, "ServiceAccount", pod["spec"]["serviceAccountName"])
    assert pod["spec"].get("automountServiceAccountToken", True) is True, "labelling needs the pod's token"
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    headless = _one(docs, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"].get("publishNotReadyAddresses") is True, "operators reach sealed pods by name"

    assert container["command"][:2] == ["arcanum", "server"]
    _config_hcl(docs, statefulset)
    volumes = {v["name"] for v in pod["spec"]["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, f"volume {mount['name']} (mounted at {mount['mountPath']}) is not defined"
    for volume in pod["spec"]["volumes"]:
        if "configMap" in volume:
            _one(docs, "ConfigMap", volume["configMap"]["name"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8200}
    for service in (d for d in docs if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["port"] == 8200 and port["targetPort"] in ports

    # Each node advertises its own pod IP (standbys forward to it, so it must be reachable
    # from the other pods) and labels its own pod.
    env = _pod_env(container)
    assert env["VAULT_API_ADDR"] == f"http://{POD_FIELDS['status.podIP']}:{ports['http']}", env
    assert env["VAULT_K8S_POD_NAME"] == POD_FIELDS["metadata.name"]
    assert env["VAULT_K8S_NAMESPACE"] == NAMESPACE
    assert env["ARCANUM_ADDR"] == "http://127.0.0.1:8200"


def test_ha_readiness_lets_standbys_in():
    (_, liveness), (path, readiness) = _probes(_manifests(KUBERNETES_HA))
    # A standby answers 429 without standbyok; it forwards to the active node, so it is ready.
    assert readiness == {"standbyok": "true"}, path
    assert liveness.get("standbyok") == "true"


def test_ha_services_reach_ready_pods_and_the_active_one():
    docs = _manifests(KUBERNETES_HA)
    statefulset = _statefulset(docs)
    pod = statefulset["spec"]["template"]
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    headless = services.pop(statefulset["spec"]["serviceName"])
    active = services.pop("arcanum-active")
    (client,) = services.values()

    for service in (client, headless):
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items(), service["metadata"]
    assert client["metadata"]["name"] == "arcanum"
    assert client["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not client["spec"].get("publishNotReadyAddresses"), "clients must not reach sealed pods"

    selector = active["spec"]["selector"]
    assert active["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not active["spec"].get("publishNotReadyAddresses")
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= selector.items(), "selects other pods too"
    # A bare true in YAML is a boolean, which Kubernetes refuses as a label value.
    assert _labels_beyond_template(selector, pod) == {"vault-active": "true"}, selector
    assert set(_labels_beyond_template(selector, pod)) <= POD_LABELS
    for key in POD_LABELS:
        assert key not in pod["metadata"]["labels"], f"{key} is the server's to set"


def test_ha_rbac_lets_each_pod_label_itself():
    docs = _manifests(KUBERNETES_HA)
    statefulset = _statefulset(docs)
    account = statefulset["spec"]["template"]["spec"]["serviceAccountName"]

    binding = _one(docs, "RoleBinding")
    assert binding["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io" and binding["roleRef"]["kind"] == "Role"
    role = _one(docs, "Role", binding["roleRef"]["name"])
    assert {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in binding["subjects"]

    pods = {f"{statefulset['metadata']['name']}-{i}" for i in range(statefulset["spec"]["replicas"])}
    allowed = set()
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""] and rule["resources"] == ["pods"], f"more than pods: {rule}"
        assert set(rule["verbs"]) <= {"get", "patch"}, f"more than get and patch: {rule}"
        names = set(rule.get("resourceNames", pods))
        assert pods <= names, f"pods {pods - names} cannot label themselves"
        allowed |= set(rule["verbs"])
    assert allowed == {"get", "patch"}

    # TokenReview for the Kubernetes auth method, as in the single-node variant.
    tokenreview = _one(docs, "ClusterRoleBinding")
    assert tokenreview["roleRef"]["name"] == "system:auth-delegator"
    assert {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in tokenreview["subjects"]


def _ha_hcl():
    docs = _manifests(KUBERNETES_HA)
    return _config_hcl(docs, _statefulset(docs))


def test_ha_config_enables_ha_and_service_registration():
    hcl = _ha_hcl()
    code = "\n".join(line.split("#", 1)[0] for line in hcl.splitlines())
    assert not re.search(r'storage\s+"(?!etcd")', code), "the nodes share etcd; no other storage"
    etcd = re.search(r'storage\s+"etcd"\s*\{([^}]*)\}', code)
    assert etcd, hcl
    assert re.search(r'^\s*ha_enabled\s*=\s*"?true"?\s*$', etcd.group(1), flags=re.M)
    addresses = re.search(r'^\s*address\s*=\s*"([^"]+)"', etcd.group(1), flags=re.M).group(1).split(",")
    assert addresses and all(re.fullmatch(r"https?://[^/,]+:\d+", a.strip()) for a in addresses), addresses
    assert re.search(r'^\s*lock_timeout\s*=\s*"\d+s"', etcd.group(1), flags=re.M)
    # The pod's name and namespace come from the environment (VAULT_K8S_*), so the block is empty.
    assert re.search(r'service_registration\s+"kubernetes"\s*\{\s*\}', code), hcl
    # A file-wide api_addr would send every standby's forwards to one address; it is per pod.
    assert not re.search(r"^\s*api_addr\s*=", code, flags=re.M)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ha_config_map_is_accepted_by_the_server():
    """Starts the real server with the ConfigMap's HA config and the environment the pod gets.
    No etcd runs here, so it must get as far as opening etcd and stop there; the same run
    without the pod name fails on the config, which shows that this test can tell the two."""
    docs = _manifests(KUBERNETES_HA)
    statefulset = _statefulset(docs)
    binary = os.environ.get("ARCANUM_BIN")
    assert binary and os.path.exists(binary), "ARCANUM_BIN must point at the arcanum binary"
    etcd_url = f"http://127.0.0.1:{_closed_port()}"
    hcl, n_etcd = re.subn(r'(storage\s+"etcd"\s*\{[^}]*?address\s*=\s*)"[^"]*"', rf'\1"{etcd_url}"', _ha_hcl())
    hcl, n_listener = re.subn(r'(address\s*=\s*)"0\.0\.0\.0:8200"', r'\1"127.0.0.1:0"', hcl)
    assert (n_etcd, n_listener) == (1, 1), "etcd address or listener address not found in arcanum.hcl"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ETCD_", "KUBERNETES_"))}
    pod_env = _pod_env(_container(statefulset))

    def run(env):
        result = subprocess.run(
            [binary, "server", f"-config={config_path}"], env=env, capture_output=True, text=True, timeout=60
        )
        return result.returncode, re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "arcanum.hcl")
        with open(config_path, "w") as f:
            f.write(hcl)
        code, out = run({**base_env, **pod_env})
        assert code != 0, out
        assert f"opening etcd storage at {etcd_url}" in out, f"the server refused the config:\n{out}"
        # Arcanum warns about Vault settings it accepts but ignores: the ConfigMap has none.
        assert not re.search(r"\bWARN\b", out), out

        without_pod_name = {k: v for k, v in pod_env.items() if k != "VAULT_K8S_POD_NAME"}
        code, out = run({**base_env, **without_pod_name})
        assert code != 0 and "service_registration.kubernetes.pod_name" in out, out
        assert "opening etcd storage" not in out, out


def _autounseal_hcl():
    """The auto-unseal variant: the HA manifests with this folder's files applied over them."""
    overrides = _manifests(KUBERNETES_HA_AUTOUNSEAL)
    assert [(d["kind"], d["metadata"]["name"]) for d in overrides] == [("ConfigMap", "arcanum-config")]
    assert overrides[0]["metadata"]["namespace"] == NAMESPACE
    base = _manifests(KUBERNETES_HA)
    docs = [d for d in base if d["kind"] != "ConfigMap"] + overrides
    return _config_hcl(docs, _statefulset(docs))


def test_autounseal_variant_adds_a_transit_seal_and_keeps_the_token_in_a_secret():
    hcl = _autounseal_hcl()
    code = "\n".join(line.split("#", 1)[0] for line in hcl.splitlines())
    seal = re.search(r'seal\s+"transit"\s*\{([^}]*)\}', code)
    assert seal, hcl
    for key in ("address", "key_name", "mount_path"):
        assert re.search(rf'^\s*{key}\s*=\s*"[^"]+"', seal.group(1), flags=re.M), f"seal has no {key}"
    assert not re.search(r"^\s*token\s*=", seal.group(1), flags=re.M), "the token belongs in a Secret"
    # Otherwise the same configuration as the Shamir HA variant.
    strip = lambda text: re.sub(r'seal\s+"transit"\s*\{[^}]*\}', "", text)
    lines = lambda text: [l for l in (x.split("#", 1)[0].strip() for x in strip(text).splitlines()) if l]
    assert lines(code) == lines("\n".join(l.split("#", 1)[0] for l in _ha_hcl().splitlines()))

    container = _container(_statefulset(_manifests(KUBERNETES_HA)))
    token = next(var for var in container["env"] if var["name"] == "VAULT_TOKEN")
    ref = token["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"], ref.get("optional")) == ("arcanum-transit-seal", "token", True)


def test_autounseal_config_map_is_accepted_by_the_server():
    """The auto-unseal config with the pod's environment gets as far as opening etcd (none
    runs here); without the Secret's VAULT_TOKEN it stops on the seal, naming the token."""
    statefulset = _statefulset(_manifests(KUBERNETES_HA))
    binary = os.environ.get("ARCANUM_BIN")
    assert binary and os.path.exists(binary), "ARCANUM_BIN must point at the arcanum binary"
    etcd_url = f"http://127.0.0.1:{_closed_port()}"
    hcl, n_etcd = re.subn(r'(storage\s+"etcd"\s*\{[^}]*?address\s*=\s*)"[^"]*"', rf'\1"{etcd_url}"', _autounseal_hcl())
    hcl, n_listener = re.subn(r'(address\s*=\s*)"0\.0\.0\.0:8200"', r'\1"127.0.0.1:0"', hcl)
    assert (n_etcd, n_listener) == (1, 1)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "ETCD_", "KUBERNETES_"))}
    pod_env = {k: v for k, v in _pod_env(_container(statefulset)).items() if k != "VAULT_TOKEN"}
    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "arcanum.hcl")
        with open(config_path, "w") as f:
            f.write(hcl)

        def run(env):
            result = subprocess.run(
                [binary, "server", f"-config={config_path}"], env=env, capture_output=True, text=True, timeout=60
            )
            return result.returncode, re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)

        code, out = run({**base_env, **pod_env, "VAULT_TOKEN": "unsealer-token"})
        assert code != 0 and f"opening etcd storage at {etcd_url}" in out, f"the server refused the config:\n{out}"
        assert "unsealer-token" not in out, "the seal token reached the output"
        code, out = run({**base_env, **pod_env})
        assert code != 0 and "token (or VAULT_TOKEN) is required" in out, out
        assert "opening etcd storage" not in out, out


# --- Prometheus ------------------------------------------------------------------------------


def _promtool():
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path or not os.path.exists(path):
        pytest.fail(
            "promtool not found (set PROMTOOL or put it on PATH): install Debian's prometheus "
            "package, e.g. apt-get install -y --no-install-recommends prometheus",
            pytrace=False,
        )
    return path


def _run_promtool(*args):
    result = subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _rules():
    with open(RULES) as f:
        return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]


def test_rules_pass_promtool_check():
    _run_promtool("check", "rules", RULES)


def test_rules_unit_tests_pass():
    out = _run_promtool("test", "rules", RULES_TEST)
    assert "SUCCESS" in out, out


def test_rules_cover_the_required_alerts():
    rules = _rules()
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    required = {
        "ArcanumSealed",
        "ArcanumAuditDeviceFailing",
        "ArcanumRevocationsPending",
        "ArcanumLeasesIrrevocable",
        "ArcanumLoginFailureSpike",
        "ArcanumUnusualReadRate",
        "ArcanumNoActiveNode",
        "ArcanumLeadershipFlapping",
    }
    assert required <= set(alerts), required - set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    # Every required alert is exercised by the unit tests.
    with open(RULES_TEST) as f:
        tested = {t["alertname"] for test in yaml.safe_load(f)["tests"] for t in test.get("alert_rule_test", [])}
    assert required <= tested, required - tested


def _unknown_metric_names(expr, recorded):
    """Names in a PromQL expression that are neither exported metrics nor recorded series."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are not names
    unknown = set()
    for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if "arcanum" not in name.lower():
            continue
        if ":" in name:
            if name not in recorded:
                unknown.add(name)
        elif name not in METRICS and name not in HISTOGRAM_SERIES:
            unknown.add(name)
    return unknown


def test_rules_use_only_known_metric_names():
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        assert not _unknown_metric_names(rule["expr"], recorded), (rule, _unknown_metric_names(rule["expr"], recorded))


def _relabel(labels, configs):
    """Prometheus' relabelling, for the actions the scrape config uses; None when dropped."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        regex = re.compile(config.get("regex", "(.*)"))
        replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", config.get("replacement", "$1"))
        value = config.get("separator", ";").join(labels.get(s, "") for s in config.get("source_labels", []))
        if action == "keep":
            if not regex.fullmatch(value):
                return None
        elif action == "replace":
            match = regex.fullmatch(value)
            if match:
                labels[config["target_label"]] = match.expand(replacement)
        elif action == "labelmap":
            for name in list(labels):
                match = regex.fullmatch(name)
                if match:
                    labels[match.expand(replacement)] = labels[name]
        else:
            raise AssertionError(f"relabel action {action} not simulated")
    return labels


def _meta_name(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


@VARIANTS
def test_scrape_config_asks_for_the_prometheus_format(directory):
    with open(SCRAPE_CONFIG) as f:
        config = yaml.safe_load(f)
    assert config["rule_files"] == [os.path.basename(RULES)]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "arcanum")
    assert job["metrics_path"] == "/v1/sys/metrics"
    assert job["params"] == {"format": ["prometheus"]}

    # Discover the StatefulSet's pod as Kubernetes pod discovery would, and relabel it.
    statefulset = _statefulset(_manifests(directory))
    pod = statefulset["spec"]["template"]
    meta = {
        "__address__": "192.0.2.15:8200",
        "__metrics_path__": job["metrics_path"],
        "__scheme__": job["scheme"],
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": f"{statefulset['metadata']['name']}-0",
    }
    for key, value in pod["metadata"]["annotations"].items():
        meta[f"__meta_kubernetes_pod_annotation_{_meta_name(key)}"] = value
    for key, value in pod["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_pod_label_{_meta_name(key)}"] = value
    target = _relabel(meta, job["relabel_configs"])
    assert target is not None, "the scrape job drops the Arcanum pod"
    assert target["__address__"] == "192.0.2.15:8200"
    assert target["__metrics_path__"] == "/v1/sys/metrics"
    assert target["__param_format"] == "prometheus", "the annotation does not become format=prometheus"
    assert target["instance"] == "arcanum-0"

    # promtool checks the rest. Debian's promtool is built without Kubernetes discovery, so
    # the check runs on a copy with a static target in its place.
    with tempfile.TemporaryDirectory() as tmp:
        for job in config["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["arcanum-0.arcanum-internal.arcanum.svc:8200"]}]
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            yaml.safe_dump(config, f)
        shutil.copy(RULES, tmp)
        _run_promtool("check", "config", os.path.join(tmp, "prometheus.yml"))


@VARIANTS
def test_service_monitor_scrapes_the_client_service_with_the_prometheus_format(directory):
    with open(SERVICE_MONITOR) as f:
        monitor = yaml.safe_load(f)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        d
        for d in _manifests(directory)
        if d["kind"] == "Service" and selector.items() <= d["metadata"].get("labels", {}).items()
    ]
    assert len(services) == 1, "the ServiceMonitor must select exactly one Service, or pods are scraped twice"
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/v1/sys/metrics"
        assert endpoint["params"] == {"format": ["prometheus"]}


# --- Grafana -------------------------------------------------------------------------------


def _dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def _panels(panels):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard_exprs(dashboard):
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def test_dashboard_uses_only_known_metric_names():
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"

    exprs = _dashboard_exprs(dashboard)
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']} has no query"
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for title, expr in exprs:
        # The dashboard works without the recording rules, so it uses no recorded series.
        assert not _unknown_metric_names(expr, recorded=set()), (title, expr)

    # Every exported metric has a panel.
    used = " ".join(expr for _, expr in exprs)
    missing = {m for m in METRICS if not re.search(rf"\b{m}\b", used)}
    missing |= {h for h in HISTOGRAMS if f"{h}_bucket" not in used}
    assert not missing, f"no panel shows {missing}"
    titles = " | ".join(title.lower() for title, _ in exprs)
    for word in (
        "seal",
        "unseal progress",
        "latency",
        "quota",
        "audit",
        "login",
        "lease",
        "token",
        "active node",
        "leadership",
        "takeover",
        "forwarded",
    ):
        assert word in titles, f"no panel about {word}"


def test_dashboard_queries_are_valid_promql():
    # promtool has no expression checker, so each query becomes a recording rule.
    exprs = _dashboard_exprs(_dashboard())
    substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".+", "$instance": ".+"}
    rules = []
    for i, (_, expr) in enumerate(exprs):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown dashboard variable in {expr}"
        rules.append({"record": f"dashboard_query_{i}", "expr": expr})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard-queries.yml")
        with open(path, "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        _run_promtool("check", "rules", path)
