"""deploy/kubernetes/ validated offline against the API schemas of a pinned Kubernetes version
(kubernetes-validate, strict: an unknown field fails), and checked against the code: the
probes, the port, the user and the settings that the server really has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config.settings import Settings
from tests.conftest import REPO_ROOT

# The oldest minor still in upstream support when this was written; the manifests use only
# GA APIs (apps/v1, autoscaling/v2, policy/v1), so later versions accept them too.
KUBERNETES_VERSION = "1.34.0"
K8S = REPO_ROOT / "deploy" / "kubernetes"
VARIANTS = ("cpu", "gpu")
SECRET_NAMES = {"API_KEYS", "WEBHOOK_SECRET", "ALLOWED_ORIGINS"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k folder` applies (resources only: no patches are used here)."""
    kustomization = _docs(folder / "kustomization.yaml")[0]
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, "a feature this test skips"
    out: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        out += _kustomize(path) if path.is_dir() else _docs(path)
    return out


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_is_valid_for_the_pinned_kubernetes(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_an_invalid_manifest_is_caught() -> None:
    """The validator really checks: a misspelt field and a wrong type both fail."""
    (service,) = _docs(K8S / "common" / "service.yaml")
    typo = {**service, "spec": {**service["spec"], "sessionAfinity": "ClientIP"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    bad_port = {**service, "spec": {**service["spec"], "ports": [{"port": "eighty"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_port, KUBERNETES_VERSION, strict=True)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _server(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (server,) = [
        d
        for d in _by_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    return server


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_server_deployment_probes_ready_and_health_as_non_root(variant: str) -> None:
    docs = _kustomize(K8S / variant)
    server = _server(docs)
    pod = server["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/v1/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/v1/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/api/v1/health"
    # The Dockerfile's user and port.
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert "USER 1000:1000" in dockerfile and "EXPOSE 8000" in dockerfile
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    resources = container["resources"]
    assert resources["requests"]["memory"] and resources["limits"]["memory"]
    gpus = resources["limits"].get("nvidia.com/gpu")
    assert (gpus == "1") == (variant == "gpu")
    # Every pod of the selector is this template's.
    assert _matches(
        server["spec"]["selector"]["matchLabels"], server["spec"]["template"]["metadata"]["labels"]
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_hpa_and_pdb_reach_the_server(variant: str) -> None:
    docs = _kustomize(K8S / variant)
    server = _server(docs)
    labels = server["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _by_kind(docs, "Service")}
    assert _matches(services["inpaint-anything"]["spec"]["selector"], labels)
    assert services["inpaint-anything"]["spec"]["ports"][0]["targetPort"] == "http"
    (hpa,) = _by_kind(docs, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", server["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (pdb,) = _by_kind(docs, "PodDisruptionBudget")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], labels)


@pytest.mark.parametrize("variant", VARIANTS)
def test_settings_are_real_and_secrets_come_from_the_secret(variant: str) -> None:
    docs = _kustomize(K8S / variant)
    (container,) = _server(docs)["spec"]["template"]["spec"]["containers"]
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
    (config,) = _by_kind(docs, "ConfigMap")
    assert sources == {"configMapRef": config["metadata"]["name"], "secretRef": "inpaint-secrets"}
    fields = {name.upper() for name in Settings.model_fields}
    names = set(config["data"]) | {e["name"] for e in container.get("env", [])}
    assert names <= fields, f"not settings: {sorted(names - fields)}"
    assert config["data"]["ENVIRONMENT"] == "production"
    assert not SECRET_NAMES & names, "secrets belong in the Secret"
    # The Secret is an example only, not applied by the kustomization.
    assert not _by_kind(docs, "Secret")
    (secret,) = _docs(K8S / "secret.example.yaml")
    assert secret["metadata"]["name"] == "inpaint-secrets"
    assert set(secret["stringData"]) == SECRET_NAMES
    # The settings the Secret carries exist (WEBHOOK_SECRET comes with the webhook work).
    assert {"API_KEYS", "ALLOWED_ORIGINS"} <= fields


def test_redis_keeps_nothing_on_disk_and_the_server_uses_it() -> None:
    docs = _kustomize(K8S / "cpu")
    (redis,) = [d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"] == "inpaint-redis"]
    pod = redis["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [v for v in pod["volumes"] if "emptyDir" in v] == pod["volumes"]
    (config,) = _by_kind(docs, "ConfigMap")
    host = config["data"]["REDIS_URL"].split("//")[1].split(":")[0]
    assert host in {s["metadata"]["name"] for s in _by_kind(docs, "Service")}
