"""Every Kubernetes manifest in docs/kubernetes.md is valid YAML with the apiVersion and kind
that object needs, and the documented setup is complete (issue 6)."""

import os
import re

import yaml

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "kubernetes.md")


def _documents():
    with open(DOC) as f:
        text = f.read()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert blocks, "no yaml blocks in docs/kubernetes.md"
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc is not None]


def test_manifests_parse_with_the_right_kinds():
    docs = _documents()
    expected_api = {
        "ServiceAccount": "v1",
        "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
        "Deployment": "apps/v1",
        "SecretStore": "external-secrets.io/v1",
        "ExternalSecret": "external-secrets.io/v1",
    }
    kinds = [doc["kind"] for doc in docs]
    for doc in docs:
        assert doc["apiVersion"] == expected_api[doc["kind"]], doc
        assert doc["metadata"]["name"]
    assert set(kinds) == set(expected_api)

    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "system:auth-delegator"

    deployment = next(d for d in docs if d["kind"] == "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "app"
    assert any(k.startswith("vault.hashicorp.com/agent-inject-secret-") for k in annotations)
    assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]

    store = next(d for d in docs if d["kind"] == "SecretStore")
    vault = store["spec"]["provider"]["vault"]
    assert vault["version"] == "v2" and vault["auth"]["kubernetes"]["role"] == "app"
    external = next(d for d in docs if d["kind"] == "ExternalSecret")
    assert external["spec"]["secretStoreRef"]["name"] == store["metadata"]["name"]
